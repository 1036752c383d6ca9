import { TOPICS } from "@saga/contracts";
import { describe, expect, it } from "vitest";
import {
  type ClientRecord,
  checkActivity,
  checkAnswers,
  checkEmissions,
  checkExits,
  checkFinalStates,
  checkInboxes,
  checkInitialBalances,
  checkMoney,
  checkMoneyConserved,
  checkOrdering,
  checkPublished,
  checkReservationOwners,
  checkSnapshot,
  checkTimeoutCancels,
  type EmittedRow,
  type KafkaCopy,
  type OrderRow,
  type OutboxRow,
  type ReservationRow,
  type Snapshot,
  timeoutRaceMarginMs,
} from "./checker.ts";

/** Seconds into the run, as PostgreSQL's timestamps. */
const at = (s: number) => new Date(Date.UTC(2030, 0, 1) + s * 1000);

const order = (
  id: string,
  status: string,
  reason: string | null = null,
  user = "u1",
  amount = "10",
): OrderRow => ({
  id,
  user_id: user,
  amount,
  status,
  cancel_reason: reason,
  created_at: at(0),
  // A TIMEOUT cancel comes at the 60 s deadline; every other saga ends within a second.
  updated_at: at(reason === "TIMEOUT" ? 60 : 1),
});
const reservation = (
  id: string,
  status: string,
  reason: string | null = null,
  user = "u1",
  amount = "10",
): ReservationRow => ({ order_id: id, user_id: user, amount, status, reason });
let rowId = 0;
const row = (aggregate: string, topic: string, replay = false): EmittedRow => ({
  id: String(++rowId),
  aggregate_id: aggregate,
  topic,
  replay,
});

/** A consistent run: a confirmed, a released, a rejected order and one canceled before its reservation. */
function healthy() {
  const orders = [
    order("a", "CONFIRMED"),
    order("b", "CANCELED", "CANCELED_BY_REQUEST"),
    order("c", "CANCELED", "INSUFFICIENT_FUNDS"),
    order("d", "CANCELED", "CANCELED_BY_REQUEST"),
  ];
  const reservations = [
    reservation("a", "RESERVED"),
    reservation("b", "RELEASED"),
    reservation("c", "REJECTED", "INSUFFICIENT_FUNDS"),
    reservation("d", "CANCELED", "ORDER_CANCELED"),
  ];
  const orderOutbox = [
    ...["a", "b", "c", "d"].map((id) => row(id, TOPICS.orderCreated)),
    row("b", TOPICS.orderCanceled),
    row("d", TOPICS.orderCanceled),
  ];
  const userOutbox = [
    row("a", TOPICS.creditReserved),
    row("b", TOPICS.creditReserved),
    row("c", TOPICS.creditReservationFailed),
    row("d", TOPICS.creditReservationFailed),
  ];
  return { orders, reservations, orderOutbox, userOutbox };
}

const emissions = (run: ReturnType<typeof healthy>) =>
  checkEmissions(run.orders, run.reservations, run.orderOutbox, run.userOutbox);
const failed = (run: ReturnType<typeof healthy>) =>
  emissions(run)
    .filter((r) => !r.pass)
    .map((r) => [r.name, r.counterExamples]);

describe("checkEmissions", () => {
  it("passes a run where every order emitted what its final state says", () => {
    expect(failed(healthy())).toEqual([]);
    expect(emissions(healthy()).map((r) => r.checked)).toEqual([
      "4 orders",
      "4 orders",
      "4 answered reservations of 4 orders",
      "10 order/topic streams",
    ]);
  });

  it("fails an order whose order.created was never written, even though its saga timed out", () => {
    const run = healthy();
    run.orders.push(order("e", "CANCELED", "TIMEOUT"));
    run.orderOutbox.push(row("e", TOPICS.orderCanceled));
    expect(failed(run)).toEqual([
      [
        "every order's order.created written exactly once",
        ["order e (CANCELED) has 0 order.created rows in order_db's outbox"],
      ],
      [
        "every reservation answered exactly once (credit reply by its final state)",
        ["order e (CANCELED) has no reservation: its order.created was never applied"],
      ],
    ]);
  });

  it("fails a reservation whose credit reply was never written", () => {
    const run = healthy();
    run.userOutbox = run.userOutbox.filter((r) => r.aggregate_id !== "b");
    expect(failed(run)).toEqual([
      [
        "every reservation answered exactly once (credit reply by its final state)",
        [
          "reservation b (RELEASED) has 0 user.credit-reserved and 0 user.credit-reservation-failed rows in user_db's outbox; expected 1 and 0",
        ],
      ],
    ]);
  });

  it("fails a reply of the wrong kind", () => {
    const run = healthy();
    run.userOutbox = run.userOutbox.map((r) =>
      r.aggregate_id === "c" ? { ...r, topic: TOPICS.creditReserved } : r,
    );
    expect(failed(run)[0]?.[1]).toEqual([
      "reservation c (REJECTED INSUFFICIENT_FUNDS) has 1 user.credit-reserved and 0 user.credit-reservation-failed rows in user_db's outbox; expected 0 and 1",
    ]);
  });

  it("fails a reservation canceled first whose order.created never arrived", () => {
    const run = healthy();
    run.reservations = run.reservations.map((r) => (r.order_id === "d" ? { ...r, reason: null } : r));
    run.userOutbox = run.userOutbox.filter((r) => r.aggregate_id !== "d");
    expect(failed(run)[0]?.[1]).toEqual([
      "reservation d (CANCELED): its order.created was never applied (0 user.credit-reserved and 0 user.credit-reservation-failed rows in user_db's outbox)",
    ]);
  });

  it("fails a cancel the order-service decided without its order.canceled, and an order.canceled without one", () => {
    const run = healthy();
    run.orders.push(order("e", "CANCELED", "TIMEOUT"));
    run.reservations.push(reservation("e", "RESERVED"));
    run.orderOutbox.push(row("e", TOPICS.orderCreated), row("c", TOPICS.orderCanceled));
    run.userOutbox.push(row("e", TOPICS.creditReserved));
    expect(failed(run)).toEqual([
      [
        "order.canceled written once for each cancel by request or deadline, never otherwise",
        [
          "order c (CANCELED INSUFFICIENT_FUNDS) has 1 order.canceled rows in order_db's outbox; expected 0",
          "order e (CANCELED TIMEOUT) has 0 order.canceled rows in order_db's outbox; expected 1",
        ],
      ],
    ]);
  });

  it("fails an order that emitted a topic twice", () => {
    const run = healthy();
    run.orderOutbox.push(row("b", TOPICS.orderCanceled));
    run.userOutbox.push(row("a", TOPICS.creditReserved));
    const results = failed(run);
    expect(results.map(([name]) => name)).toEqual([
      "order.canceled written once for each cancel by request or deadline, never otherwise",
      "every reservation answered exactly once (credit reply by its final state)",
      "no order emits a topic twice",
    ]);
    expect(results[2]?.[1]).toEqual([
      "order b: 2 order.canceled rows in order_db's outbox",
      "order a: 2 user.credit-reserved rows in user_db's outbox",
    ]);
  });

  it("leaves out dead-letter rows and replayed dead letters", () => {
    const run = healthy();
    run.userOutbox.push(row("a", `${TOPICS.orderCreated}.dlq`), row("a", TOPICS.orderCreated, true));
    run.orderOutbox.push(row("a", `${TOPICS.creditReserved}.dlq`), row("a", TOPICS.creditReserved, true));
    run.orderOutbox.push(row("c", TOPICS.orderCreated, true));
    expect(failed(run)).toEqual([]);
  });
});

describe("checkReservationOwners", () => {
  it("passes reservations of their orders' users and amounts", () => {
    const { orders, reservations } = healthy();
    expect(checkReservationOwners(orders, reservations)).toMatchObject({
      pass: true,
      checked: "4 reservations",
    });
  });

  it("fails a reservation of another user or amount", () => {
    const { orders, reservations } = healthy();
    reservations[0] = reservation("a", "RESERVED", null, "u2");
    reservations[2] = reservation("c", "REJECTED", "INSUFFICIENT_FUNDS", "u1", "11");
    expect(checkReservationOwners(orders, reservations)).toMatchObject({
      pass: false,
      counterExamples: [
        "order a of user u1: reservation (RESERVED) is of user u2",
        "order c: amount 10, reservation (REJECTED) 11",
      ],
    });
  });
});

describe("checkActivity", () => {
  const planned = { kill: { "user-1": 2, kafka: 1 }, freeze: {}, blackhole: { "relay-1→kafka": 1 } };

  it("passes a run with confirmed orders and every planned fault done", () => {
    expect(
      checkActivity({ ordersByStatus: { CONFIRMED: 5, CANCELED: 2 }, planned, done: planned }),
    ).toMatchObject({ pass: true, checked: "7 orders (5 CONFIRMED), faults 4/4" });
  });

  it("fails a run without orders", () => {
    expect(checkActivity({ ordersByStatus: {}, planned, done: planned }).counterExamples).toEqual([
      "no order was created",
    ]);
  });

  it("fails a run where no order was confirmed", () => {
    expect(
      checkActivity({ ordersByStatus: { CANCELED: 3 }, planned, done: planned }).counterExamples,
    ).toEqual(["none of 3 orders ended CONFIRMED"]);
  });

  it("fails a run that did not carry out a planned fault", () => {
    const done = { kill: { "user-1": 1, kafka: 1 }, freeze: {}, blackhole: {} };
    expect(checkActivity({ ordersByStatus: { CONFIRMED: 1 }, planned, done })).toMatchObject({
      pass: false,
      checked: "1 orders (1 CONFIRMED), faults 2/4",
      counterExamples: ["kill user-1: 1 of 2 planned done", "blackhole relay-1→kafka: 0 of 1 planned done"],
    });
  });
});

describe("checkExits", () => {
  it("passes a run whose processes exited only when it killed or stopped them", () => {
    expect(checkExits([], 6)).toMatchObject({ pass: true, checked: "6 processes" });
  });

  it("fails a run in which a process exited by itself once ready, naming it, its code and its time up", () => {
    const exits = [
      { name: "relay-2", code: 1, upMs: 41_250 },
      { name: "user-1", code: null, upMs: 3_000 },
    ];
    expect(checkExits(exits, 6)).toMatchObject({
      pass: false,
      checked: "6 processes",
      counterExamples: [
        "relay-2 exited by itself (code 1) after 41.3 s up",
        "user-1 exited by itself (code none: a signal) after 3.0 s up",
      ],
    });
  });
});

/**
 * A consistent quiet run as read from the databases and Kafka: healthy()'s orders, and an order e canceled
 * at its deadline whose `user.credit-reserved` came late (recorded a second after the cancel). Every row
 * published once, every event in its consumer's inbox, every order from a key the load sent.
 */
function quietRun(): { snapshot: Snapshot; clients: ClientRecord } {
  const run = healthy();
  run.orders.push(order("e", "CANCELED", "TIMEOUT"));
  run.reservations.push(reservation("e", "RELEASED"));
  run.orderOutbox.push(row("e", TOPICS.orderCreated), row("e", TOPICS.orderCanceled));
  run.userOutbox.push(row("e", TOPICS.creditReserved));
  const copies: KafkaCopy[] = [];
  const publish = (r: EmittedRow): OutboxRow => {
    const { id, aggregate_id } = r;
    copies.push({
      topic: r.topic,
      partition: 0,
      offset: copies.length,
      key: aggregate_id,
      eventId: id,
      aggregateId: aggregate_id,
    });
    return { ...r, position: copies.length, published_at: at(1) };
  };
  const orderOutbox = run.orderOutbox.map(publish);
  const userOutbox = run.userOutbox.map(publish);
  const recorded = (group: string, rows: OutboxRow[]) =>
    rows.map((r) => ({
      consumer_group: group,
      event_id: r.id,
      topic: r.topic,
      offset: copies.find((c) => c.eventId === r.id)?.offset ?? -1,
      processed_at: r.aggregate_id === "e" && r.topic === TOPICS.creditReserved ? at(61) : at(1),
    }));
  const keyOf = (o: OrderRow) => `key-${o.id}`;
  return {
    snapshot: {
      // Order a's 10 RESERVED.
      users: [{ id: "u1", initial_balance: "1000", balance: "990" }],
      reservations: run.reservations,
      orders: run.orders,
      orderOutbox,
      userOutbox,
      userInbox: recorded("user-service", orderOutbox),
      orderInbox: recorded("order-service", userOutbox),
      idempotencyKeys: run.orders.map((o) => ({ subject: "u1", key: keyOf(o), order_id: o.id })),
      copies,
    },
    clients: {
      users: [{ id: "u1", balance: 1000 }],
      keysSent: new Set(run.orders.map(keyOf)),
      created: new Map(run.orders.map((o) => [keyOf(o), { id: o.id, userId: "u1", amount: 10 }])),
      canceled: new Set(["b", "d"]),
    },
  };
}

// A run with the default statement timeout (10 s) whose longest freeze or blackhole was 12 s.
const MARGIN_MS = timeoutRaceMarginMs(10_000, 12_000) ?? Number.NaN;
const idOf = (s: Snapshot, aggregate: string, topic: string) =>
  [...s.orderOutbox, ...s.userOutbox].find((r) => r.aggregate_id === aggregate && r.topic === topic)?.id ??
  "";

describe("checkSnapshot", () => {
  it("passes a consistent run, every invariant of it, and lists its TIMEOUT cancel", () => {
    const { snapshot, clients } = quietRun();
    const { results, timeoutCancels } = checkSnapshot(snapshot, {
      outboxComplete: true,
      clients,
      timeoutMarginMs: MARGIN_MS,
    });
    expect(results.filter((r) => !r.pass)).toEqual([]);
    expect(results.map((r) => [r.name, r.checked])).toEqual([
      ["money: balance = initial - RESERVED, never negative", "1 users"],
      [
        "money conserved: Σ (initial - balance) over users = Σ amount of CONFIRMED orders",
        "1 users, 1 CONFIRMED orders",
      ],
      ["every user's initial_balance is what the run created it with", "1 users created"],
      ["orders final; CONFIRMED exactly when RESERVED; no reservation without an order", "5 orders"],
      ["each reservation has its order's user and amount", "5 reservations"],
      ["every order's order.created written exactly once", "5 orders"],
      ["order.canceled written once for each cancel by request or deadline, never otherwise", "5 orders"],
      [
        "every reservation answered exactly once (credit reply by its final state)",
        "5 answered reservations of 5 orders",
      ],
      ["no order emits a topic twice", "13 order/topic streams"],
      [
        "no TIMEOUT cancel of an order whose credit reply was consumed while it was PENDING (over 27 s before the cancel)",
        "1 TIMEOUT cancels, 1 with a reply in the inbox",
      ],
      ["every order a 201 named exists, with the user and amount asked for", "5 orders created (201)"],
      [
        "one order per Idempotency-Key: every order named by one key's stored answer, a key the load sent",
        "5 orders, 5 keys sent",
      ],
      ["every order whose DELETE was answered 204 is CANCELED", "2 orders"],
      ["every outbox row published at least once", "13 outbox rows"],
      ["every event recorded once in its consumer's inbox", "13 events"],
      [
        "per order and topic, published and applied in the order written",
        "13 order/topic streams (0 with several events), 13 keys",
      ],
    ]);
    expect(timeoutCancels).toEqual([
      { orderId: "e", sagaS: 60, reply: { topic: TOPICS.creditReserved, processedS: 1 } },
    ]);
  });

  it("leaves out the checks of what clients were told when there is no record of it (the bench)", () => {
    const { snapshot } = quietRun();
    const { results } = checkSnapshot(snapshot, { outboxComplete: false, timeoutMarginMs: MARGIN_MS });
    // Neither the initial balances, the answers (4 checks) nor the emissions (4): 8 of the 16.
    expect(results).toHaveLength(8);
    expect(results.filter((r) => !r.pass)).toEqual([]);
  });
});

describe("the money checks", () => {
  it("fails a balance that is not its initial balance less what is RESERVED", () => {
    const { snapshot } = quietRun();
    snapshot.users[0] = { id: "u1", initial_balance: "1000", balance: "980" };
    expect(checkMoney(snapshot.users, snapshot.reservations)).toMatchObject({
      pass: false,
      counterExamples: ["user u1: balance 980, but initial 1000 - reserved 10 = 990"],
    });
  });

  it("fails a negative balance, even one that matches its reservations", () => {
    const { snapshot } = quietRun();
    snapshot.users[0] = { id: "u1", initial_balance: "5", balance: "-5" };
    expect(checkMoney(snapshot.users, snapshot.reservations)).toMatchObject({
      pass: false,
      counterExamples: ["user u1: negative balance -5"],
    });
  });

  it("fails money spent that the CONFIRMED orders do not account for, though each balance matches its reservations", () => {
    const { snapshot } = quietRun();
    // A reservation of 20 for order a of 10: user_db is consistent with itself, not with order_db.
    snapshot.reservations[0] = reservation("a", "RESERVED", null, "u1", "20");
    snapshot.users[0] = { id: "u1", initial_balance: "1000", balance: "980" };
    expect(checkMoney(snapshot.users, snapshot.reservations).pass).toBe(true);
    expect(checkMoneyConserved(snapshot.users, snapshot.orders)).toMatchObject({
      pass: false,
      counterExamples: ["users spent 20, CONFIRMED orders cost 10"],
    });
  });

  it("fails an initial_balance that is not what the run created the user with, and a user it never created", () => {
    const { snapshot, clients } = quietRun();
    // Balance and reference moved together: the money check, which reads both from user_db, passes.
    snapshot.users[0] = { id: "u1", initial_balance: "2000", balance: "1990" };
    snapshot.users.push({ id: "u9", initial_balance: "0", balance: "0" });
    expect(checkMoney(snapshot.users, snapshot.reservations).pass).toBe(true);
    expect(checkInitialBalances(snapshot.users, clients)).toMatchObject({
      pass: false,
      counterExamples: [
        "user u1: initial_balance 2000, created with 1000",
        "user u9 was not created by the run",
      ],
    });
  });
});

describe("checkFinalStates", () => {
  it("fails an order left PENDING, a CONFIRMED order without its reservation, and a reservation with no order", () => {
    const { snapshot } = quietRun();
    snapshot.orders.push(order("f", "PENDING"), order("g", "CONFIRMED"));
    snapshot.reservations.push(reservation("g", "RELEASED"), reservation("z", "RESERVED"));
    expect(checkFinalStates(snapshot.orders, snapshot.reservations)).toMatchObject({
      pass: false,
      counterExamples: [
        "order f is still PENDING",
        "order g is CONFIRMED but its reservation is RELEASED",
        "reservation z (RESERVED) has no order",
      ],
    });
  });
});

describe("checkPublished", () => {
  it("fails an outbox row never published", () => {
    const { snapshot } = quietRun();
    const [first] = snapshot.orderOutbox;
    if (first) first.published_at = null;
    expect(checkPublished([...snapshot.userOutbox, ...snapshot.orderOutbox], snapshot.copies)).toMatchObject({
      pass: false,
      counterExamples: [`outbox row ${first?.id} (order.created, position 1) is unpublished`],
    });
  });

  it("fails a row marked published that is not on Kafka", () => {
    const { snapshot } = quietRun();
    const lost = idOf(snapshot, "b", TOPICS.creditReserved);
    snapshot.copies = snapshot.copies.filter((c) => c.eventId !== lost);
    expect(checkPublished([...snapshot.userOutbox, ...snapshot.orderOutbox], snapshot.copies)).toMatchObject({
      pass: false,
      counterExamples: [`outbox row ${lost} (user.credit-reserved) is marked published but is not on Kafka`],
    });
  });
});

describe("checkInboxes", () => {
  it("fails an event its consumer never recorded, and one recorded only by another group", () => {
    const { snapshot } = quietRun();
    const created = idOf(snapshot, "a", TOPICS.orderCreated);
    const reply = idOf(snapshot, "c", TOPICS.creditReservationFailed);
    snapshot.userInbox = snapshot.userInbox.filter((r) => r.event_id !== created);
    snapshot.orderInbox = snapshot.orderInbox.map((r) =>
      r.event_id === reply ? { ...r, consumer_group: "someone-else" } : r,
    );
    expect(checkInboxes(snapshot)).toMatchObject({
      pass: false,
      counterExamples: [
        `event ${created} (order.created) recorded 0 times in user-service's inbox`,
        `event ${reply} (user.credit-reservation-failed) recorded 0 times in order-service's inbox`,
      ],
    });
  });
});

describe("checkOrdering", () => {
  it("fails two events of one order and topic published or applied out of the order written", () => {
    const { snapshot } = quietRun();
    // A second order.canceled of b, written after the first (position 100), published before it (offset -1)
    // and applied by the user-service before it.
    const first = idOf(snapshot, "b", TOPICS.orderCanceled);
    snapshot.orderOutbox.push({
      id: "later",
      position: 100,
      aggregate_id: "b",
      topic: TOPICS.orderCanceled,
      published_at: at(1),
      replay: false,
    });
    snapshot.copies.unshift({
      topic: TOPICS.orderCanceled,
      partition: 0,
      offset: -1,
      key: "b",
      eventId: "later",
      aggregateId: "b",
    });
    snapshot.userInbox.push({
      consumer_group: "user-service",
      event_id: "later",
      topic: TOPICS.orderCanceled,
      offset: -1,
      processed_at: at(1),
    });
    const firstCopy = snapshot.copies.find((c) => c.eventId === first);
    expect(checkOrdering(snapshot)).toMatchObject({
      pass: false,
      counterExamples: [
        `b order.canceled: position ${snapshot.orderOutbox.find((r) => r.id === first)?.position} published at 0/${firstCopy?.offset}, after it 100 at 0/-1`,
        `b order.canceled: user-service applied position 100 (offset -1) before ${snapshot.orderOutbox.find((r) => r.id === first)?.position} (offset ${firstCopy?.offset})`,
      ],
    });
  });

  it("fails a message whose key is not its aggregate", () => {
    const { snapshot } = quietRun();
    const [copy] = snapshot.copies;
    if (copy) copy.key = "someone-else";
    expect(checkOrdering(snapshot)).toMatchObject({
      pass: false,
      counterExamples: [`event ${copy?.eventId} on order.created has key someone-else, not its aggregate a`],
    });
  });
});

describe("checkTimeoutCancels", () => {
  it("fails a TIMEOUT cancel whose credit reply was recorded while the order was PENDING: consumed without effect", () => {
    const { snapshot } = quietRun();
    // The reply recorded 1 s into the saga; the deadline canceled the order 59 s later.
    snapshot.orderInbox = snapshot.orderInbox.map((r) =>
      r.event_id === idOf(snapshot, "e", TOPICS.creditReserved) ? { ...r, processed_at: at(1) } : r,
    );
    const { result, cancels } = checkTimeoutCancels(snapshot, MARGIN_MS);
    expect(result).toMatchObject({
      pass: false,
      counterExamples: [
        "order e canceled at its deadline (TIMEOUT), though its user.credit-reserved was recorded 59.0 s before, while it was PENDING",
      ],
    });
    expect(cancels).toEqual([
      { orderId: "e", sagaS: 60, reply: { topic: TOPICS.creditReserved, processedS: -59 } },
    ]);
  });

  it("passes a reply whose batch began within the margin before the cancel: it waited for its locks while the sweep canceled", () => {
    const { snapshot } = quietRun();
    const reply = idOf(snapshot, "e", TOPICS.creditReserved);
    // Under the inbox's stored, prefixed topic, as consumed.
    snapshot.orderInbox = snapshot.orderInbox.map((r) =>
      r.event_id === reply ? { ...r, topic: `run-7.${r.topic}`, processed_at: at(60 - MARGIN_MS / 1000) } : r,
    );
    const { result, cancels } = checkTimeoutCancels(snapshot, MARGIN_MS);
    expect(result.pass).toBe(true);
    expect(cancels[0]?.reply).toEqual({ topic: TOPICS.creditReserved, processedS: -MARGIN_MS / 1000 });
  });

  it("passes a TIMEOUT cancel whose reply never reached the inbox, and finds the reply's order from Kafka when its outbox row is gone", () => {
    const { snapshot } = quietRun();
    const reply = idOf(snapshot, "e", TOPICS.creditReserved);
    snapshot.orderInbox = snapshot.orderInbox.map((r) =>
      r.event_id === reply ? { ...r, processed_at: at(1) } : r,
    );
    // The relay deleted the published row (OUTBOX_RETENTION_SECONDS=0): the copy on Kafka names the order.
    snapshot.userOutbox = snapshot.userOutbox.filter((r) => r.id !== reply);
    expect(checkTimeoutCancels(snapshot, MARGIN_MS).result.pass).toBe(false);
    snapshot.orderInbox = snapshot.orderInbox.filter((r) => r.event_id !== reply);
    expect(checkTimeoutCancels(snapshot, MARGIN_MS)).toMatchObject({
      result: { pass: true, checked: "1 TIMEOUT cancels, 0 with a reply in the inbox" },
      cancels: [{ orderId: "e", sagaS: 60, reply: null }],
    });
  });

  it("allows the statement timeout, the longest stall and 5 s", () => {
    expect(timeoutRaceMarginMs(10_000, 0)).toBe(15_000);
    expect(MARGIN_MS).toBe(27_000);
  });

  // `npm run bench -- --env DB_STATEMENT_TIMEOUT_MS=…`, or the variable in the caller's environment: the
  // services run with it, and a claim waits for its locks that long.
  it("allows the statement timeout the services were started with", () => {
    const { snapshot } = quietRun();
    const reply = idOf(snapshot, "e", TOPICS.creditReserved);
    // Recorded 20 s before the cancel: within a 30 s statement timeout's wait, past a 10 s one's.
    snapshot.orderInbox = snapshot.orderInbox.map((r) =>
      r.event_id === reply ? { ...r, processed_at: at(40) } : r,
    );
    expect(checkTimeoutCancels(snapshot, timeoutRaceMarginMs(30_000, 0)).result).toMatchObject({
      name: "no TIMEOUT cancel of an order whose credit reply was consumed while it was PENDING (over 35 s before the cancel)",
      pass: true,
    });
    expect(checkTimeoutCancels(snapshot, timeoutRaceMarginMs(10_000, 0)).result.pass).toBe(false);
  });

  it("is skipped, and says why, when the services ran without a statement timeout", () => {
    const { snapshot } = quietRun();
    snapshot.orderInbox = snapshot.orderInbox.map((r) =>
      r.event_id === idOf(snapshot, "e", TOPICS.creditReserved) ? { ...r, processed_at: at(1) } : r,
    );
    const { result, cancels } = checkTimeoutCancels(snapshot, timeoutRaceMarginMs(0, 12_000));
    expect(result).toEqual({
      name: "no TIMEOUT cancel of an order whose credit reply was consumed while it was PENDING",
      pass: true,
      skipped: true,
      checked:
        "not checked: the services ran without a statement timeout (DB_STATEMENT_TIMEOUT_MS=0), so a reply's batch may wait for its locks without bound; 1 TIMEOUT cancels, 1 with a reply in the inbox",
      counterExamples: [],
    });
    // The cancels are listed all the same.
    expect(cancels).toEqual([
      { orderId: "e", sagaS: 60, reply: { topic: TOPICS.creditReserved, processedS: -59 } },
    ]);
  });
});

describe("checkAnswers", () => {
  const failures = (s: Snapshot, clients: ClientRecord) =>
    checkAnswers(s.orders, s.idempotencyKeys, clients)
      .filter((r) => !r.pass)
      .map((r) => [r.name, r.counterExamples]);

  it("fails an order a 201 named that is not in order_db, or not as it was asked for", () => {
    const { snapshot, clients } = quietRun();
    const created = new Map(clients.created);
    created.set("key-f", { id: "f", userId: "u1", amount: 10 });
    created.set("key-a", { id: "a", userId: "u1", amount: 11 });
    const keysSent = new Set([...clients.keysSent, "key-f"]);
    expect(failures(snapshot, { ...clients, created, keysSent })).toEqual([
      [
        "every order a 201 named exists, with the user and amount asked for",
        [
          "order a is of user u1, amount 10; its POST (key key-a) asked for u1, 11",
          "order f, a 201's for key key-f, is not in order_db",
        ],
      ],
      [
        "one order per Idempotency-Key: every order named by one key's stored answer, a key the load sent",
        ["key key-f: its 201 named order f, and no answer is stored under it for its caller u1"],
      ],
    ]);
  });

  it("fails orders made without their Idempotency-Key: a retried POST made a second order", () => {
    const { snapshot, clients } = quietRun();
    // The order-service ignored the key: no key stored, and the retry of a's POST (its answer lost to a
    // kill) created a2; the load saw only a2's 201.
    snapshot.idempotencyKeys = [];
    snapshot.orders.push(order("a2", "CANCELED", "CANCELED_BY_REQUEST"));
    const created = new Map(clients.created);
    created.set("key-a", { id: "a2", userId: "u1", amount: 10 });
    const [[name, examples]] = failures(snapshot, { ...clients, created }) as [[string, string[]]];
    expect(name).toBe(
      "one order per Idempotency-Key: every order named by one key's stored answer, a key the load sent",
    );
    expect(examples).toEqual([
      "order a is named by 0 idempotency keys' stored answers",
      "order b is named by 0 idempotency keys' stored answers",
      "order c is named by 0 idempotency keys' stored answers",
      "order d is named by 0 idempotency keys' stored answers",
      "order e is named by 0 idempotency keys' stored answers",
    ]);
    // Counted from the load alone, too: more orders than keys.
    const counted = checkAnswers(snapshot.orders, snapshot.idempotencyKeys, { ...clients, created })[1];
    expect(counted?.checked).toBe("6 orders, 5 keys sent");
  });

  it("fails a key whose stored answer names another order than its 201 did, and a key the load never sent", () => {
    const { snapshot, clients } = quietRun();
    snapshot.idempotencyKeys = snapshot.idempotencyKeys.map((k) =>
      k.key === "key-b"
        ? { subject: "u1", key: "key-b", order_id: "a" }
        : k.key === "key-a"
          ? { subject: "u1", key: "stranger", order_id: "b" }
          : k,
    );
    expect(failures(snapshot, clients)).toEqual([
      [
        "one order per Idempotency-Key: every order named by one key's stored answer, a key the load sent",
        [
          "idempotency key stranger was never sent by the load",
          "key key-a: its 201 named order a, and no answer is stored under it for its caller u1",
          "key key-b: its 201 named order b, its stored answer a",
        ],
      ],
    ]);
  });

  // The API keeps keys per caller: another caller's answer under the same key answered another request.
  it("fails a 201 whose key's answer is stored only under another caller", () => {
    const { snapshot, clients } = quietRun();
    snapshot.idempotencyKeys = snapshot.idempotencyKeys.map((k) =>
      k.key === "key-a" ? { ...k, subject: "u2" } : k,
    );
    expect(failures(snapshot, clients)).toEqual([
      [
        "one order per Idempotency-Key: every order named by one key's stored answer, a key the load sent",
        ["key key-a: its 201 named order a, and no answer is stored under it for its caller u1"],
      ],
    ]);
  });

  it("fails an order whose DELETE was answered 204 that is not CANCELED", () => {
    const { snapshot, clients } = quietRun();
    expect(failures(snapshot, { ...clients, canceled: new Set(["a", "b", "x"]) })).toEqual([
      [
        "every order whose DELETE was answered 204 is CANCELED",
        [
          "order a: its DELETE was answered 204, and it is CONFIRMED",
          "order x: its DELETE was answered 204, and it is not in order_db",
        ],
      ],
    ]);
  });
});
