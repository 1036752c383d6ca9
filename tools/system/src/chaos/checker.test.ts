import { TOPICS } from "@saga/contracts";
import { describe, expect, it } from "vitest";
import {
  checkActivity,
  checkEmissions,
  checkExits,
  checkReservationOwners,
  type EmittedRow,
  type OrderRow,
  type ReservationRow,
} from "./checker.ts";

const order = (
  id: string,
  status: string,
  reason: string | null = null,
  user = "u1",
  amount = "10",
): OrderRow => ({ id, user_id: user, amount, status, cancel_reason: reason });
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
