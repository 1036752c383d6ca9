import {
  ALL_TOPICS,
  CANCEL_REASONS,
  DLQ_HEADERS,
  EVENT_TOPICS,
  HEADERS,
  prefixedTopic,
  TOPICS,
} from "@saga/contracts";
import type { IncomingMessage, KafkaClient } from "@saga/kafka";
import postgres from "postgres";

/** Which consumer group applies which topics: the inbox of that group must hold each event once. */
export const CONSUMERS = [
  { db: "user", group: "user-service", topics: [TOPICS.orderCreated, TOPICS.orderCanceled] },
  { db: "order", group: "order-service", topics: [TOPICS.creditReserved, TOPICS.creditReservationFailed] },
] as const;

export type InvariantResult = {
  name: string;
  pass: boolean;
  /** What was checked, for the report: "1200 users", … */
  checked: string;
  counterExamples: string[];
};

export type CheckInput = {
  userDbUrl: string;
  orderDbUrl: string;
  kafka: KafkaClient;
  topicPrefix?: string;
  /**
   * Every outbox row the run wrote is still there (the chaos run keeps them all): the checker then also
   * counts what each order emitted. Off where the relay may have deleted published rows.
   */
  outboxComplete?: boolean;
};

export type Observed = {
  /** Copies on Kafka beyond the first, per topic: what the inboxes absorbed. */
  duplicateCopies: number;
  messages: number;
};

type OutboxRow = {
  id: string;
  position: number;
  aggregate_id: string;
  topic: string;
  published_at: Date | null;
  /** A replayed dead letter (`dlq-replay-of`): the copy of an event written before, not an emission. */
  replay: boolean;
};
export type OrderRow = {
  id: string;
  user_id: string;
  amount: string;
  status: string;
  cancel_reason: string | null;
};
export type ReservationRow = {
  order_id: string;
  user_id: string;
  amount: string;
  status: string;
  reason: string | null;
};
/** What the emission checks read of an outbox row. */
export type EmittedRow = Pick<OutboxRow, "id" | "aggregate_id" | "topic" | "replay">;
type InboxRow = { consumer_group: string; event_id: string; topic: string; offset: number };

const MAX_EXAMPLES = 5;

function result(name: string, checked: string, violations: string[]): InvariantResult {
  return { name, checked, pass: violations.length === 0, counterExamples: violations.slice(0, MAX_EXAMPLES) };
}

/**
 * Checks every invariant of docs/design.md by reading both databases and Kafka directly, never through
 * the services. Call it once the system is quiet.
 */
export async function checkInvariants(
  input: CheckInput,
): Promise<{ results: InvariantResult[]; observed: Observed }> {
  const prefix = input.topicPrefix ?? "";
  const userDb = postgres(input.userDbUrl, { max: 1, onnotice: () => {} });
  const orderDb = postgres(input.orderDbUrl, { max: 1, onnotice: () => {} });
  try {
    const [users, reservations, orders, userOutbox, orderOutbox, userInbox, orderInbox] = await Promise.all([
      userDb<
        { id: string; initial_balance: string; balance: string }[]
      >`select id, initial_balance, balance from users`,
      userDb<ReservationRow[]>`select order_id, user_id, amount, status, reason from reservations`,
      orderDb<OrderRow[]>`select id, user_id, amount, status, cancel_reason from orders`,
      userDb<OutboxRow[]>`
        select id::text, position::int8::float8 as position, aggregate_id, topic, published_at,
          headers ? ${DLQ_HEADERS.replayOf} as replay
        from outbox`,
      orderDb<OutboxRow[]>`
        select id::text, position::int8::float8 as position, aggregate_id, topic, published_at,
          headers ? ${DLQ_HEADERS.replayOf} as replay
        from outbox`,
      userDb<InboxRow[]>`select consumer_group, event_id, topic, "offset"::float8 as "offset" from inbox`,
      orderDb<InboxRow[]>`select consumer_group, event_id, topic, "offset"::float8 as "offset" from inbox`,
    ]);
    const messages = await input.kafka.readToEnd(ALL_TOPICS.map((t) => prefixedTopic(prefix, t)));
    const strip = (topic: string) => topic.slice(prefix.length);

    // First copy of each event on Kafka, by event id.
    const firstCopy = new Map<string, IncomingMessage>();
    let duplicateCopies = 0;
    for (const m of messages) {
      const id = m.headers[HEADERS.eventId];
      if (!id) continue;
      const seen = firstCopy.get(id);
      if (!seen) firstCopy.set(id, m);
      else duplicateCopies++;
    }

    const results: InvariantResult[] = [];

    // 1. Money.
    const reservedByUser = new Map<string, number>();
    for (const r of reservations) {
      if (r.status === "RESERVED")
        reservedByUser.set(r.user_id, (reservedByUser.get(r.user_id) ?? 0) + Number(r.amount));
    }
    const moneyViolations: string[] = [];
    for (const u of users) {
      const expected = Number(u.initial_balance) - (reservedByUser.get(u.id) ?? 0);
      if (Number(u.balance) !== expected) {
        moneyViolations.push(
          `user ${u.id}: balance ${u.balance}, but initial ${u.initial_balance} - reserved ${reservedByUser.get(u.id) ?? 0} = ${expected}`,
        );
      }
      if (Number(u.balance) < 0) moneyViolations.push(`user ${u.id}: negative balance ${u.balance}`);
    }
    results.push(
      result("money: balance = initial - RESERVED, never negative", `${users.length} users`, moneyViolations),
    );

    // 2. Every order final; CONFIRMED exactly when RESERVED.
    const reservationOf = new Map(reservations.map((r) => [r.order_id, r]));
    const finalViolations: string[] = [];
    for (const o of orders) {
      const r = reservationOf.get(o.id);
      if (o.status !== "CONFIRMED" && o.status !== "CANCELED")
        finalViolations.push(`order ${o.id} is still ${o.status}`);
      else if ((o.status === "CONFIRMED") !== (r?.status === "RESERVED")) {
        finalViolations.push(`order ${o.id} is ${o.status} but its reservation is ${r?.status ?? "missing"}`);
      }
    }
    const orderIds = new Set(orders.map((o) => o.id));
    for (const r of reservations) {
      if (!orderIds.has(r.order_id))
        finalViolations.push(`reservation ${r.order_id} (${r.status}) has no order`);
    }
    results.push(
      result("orders final; CONFIRMED exactly when RESERVED", `${orders.length} orders`, finalViolations),
    );
    results.push(checkReservationOwners(orders, reservations));
    if (input.outboxComplete) results.push(...checkEmissions(orders, reservations, orderOutbox, userOutbox));

    // 3a. Every outbox row published, and on Kafka.
    const outbox = [...userOutbox, ...orderOutbox];
    const unpublished: string[] = [];
    for (const row of outbox) {
      if (!row.published_at)
        unpublished.push(`outbox row ${row.id} (${row.topic}, position ${row.position}) is unpublished`);
      else if (!firstCopy.has(row.id))
        unpublished.push(`outbox row ${row.id} (${row.topic}) is marked published but is not on Kafka`);
    }
    results.push(
      result("every outbox row published at least once", `${outbox.length} outbox rows`, unpublished),
    );

    // 3b. Every event applied exactly once by the group that consumes it.
    const inboxes = { user: userInbox, order: orderInbox };
    const appliedViolations: string[] = [];
    let expectedApplications = 0;
    for (const { db, group, topics } of CONSUMERS) {
      const applied = new Map<string, number>();
      for (const row of inboxes[db]) {
        if (row.consumer_group === group) applied.set(row.event_id, (applied.get(row.event_id) ?? 0) + 1);
      }
      const sourceOutbox = db === "user" ? orderOutbox : userOutbox;
      for (const row of sourceOutbox) {
        if (!(topics as readonly string[]).includes(row.topic)) continue;
        expectedApplications++;
        const times = applied.get(row.id) ?? 0;
        if (times !== 1)
          appliedViolations.push(`event ${row.id} (${row.topic}) applied ${times} times by ${group}`);
      }
    }
    results.push(
      result(
        "every event applied exactly once per consumer group",
        `${expectedApplications} applications`,
        appliedViolations,
      ),
    );

    // 4. Per order and topic: published and applied in the order written.
    const orderViolations: string[] = [];
    const byAggregateTopic = new Map<string, OutboxRow[]>();
    for (const row of outbox) {
      if (!(EVENT_TOPICS as readonly string[]).includes(row.topic)) continue;
      const key = `${row.aggregate_id} ${row.topic}`;
      byAggregateTopic.set(key, [...(byAggregateTopic.get(key) ?? []), row]);
    }
    const appliedOffset = new Map<string, number>();
    for (const row of [...userInbox, ...orderInbox])
      appliedOffset.set(`${row.consumer_group} ${row.event_id}`, row.offset);
    const groupOf = new Map<string, string>(
      CONSUMERS.flatMap(({ group, topics }) => topics.map((t) => [t, group] as const)),
    );
    for (const [key, rows] of byAggregateTopic) {
      if (rows.length < 2) continue;
      rows.sort((a, b) => a.position - b.position);
      const copies = rows.map((r) => firstCopy.get(r.id));
      for (let i = 1; i < rows.length; i++) {
        const before = copies[i - 1];
        const after = copies[i];
        if (!before || !after) continue;
        if (before.partition !== after.partition || Number(before.offset) >= Number(after.offset)) {
          orderViolations.push(
            `${key}: position ${rows[i - 1]?.position} published at ${before.partition}/${before.offset}, after it ${rows[i]?.position} at ${after.partition}/${after.offset}`,
          );
        }
        const group = groupOf.get(rows[i]?.topic ?? "");
        const a = appliedOffset.get(`${group} ${rows[i - 1]?.id}`);
        const b = appliedOffset.get(`${group} ${rows[i]?.id}`);
        if (a !== undefined && b !== undefined && a >= b)
          orderViolations.push(
            `${key}: ${group} applied position ${rows[i]?.position} (offset ${b}) before ${rows[i - 1]?.position} (offset ${a})`,
          );
      }
    }
    for (const m of messages) {
      const id = m.headers[HEADERS.eventId];
      const aggregate = m.headers[HEADERS.aggregateId];
      if (id && m.key !== aggregate)
        orderViolations.push(
          `event ${id} on ${strip(m.topic)} has key ${m.key}, not its aggregate ${aggregate}`,
        );
    }
    const multi = [...byAggregateTopic.values()].filter((rows) => rows.length > 1).length;
    results.push(
      result(
        "per order and topic, published and applied in the order written",
        `${byAggregateTopic.size} order/topic streams (${multi} with several events), ${messages.length} keys`,
        orderViolations,
      ),
    );

    return { results, observed: { duplicateCopies, messages: messages.length } };
  } finally {
    await Promise.all([userDb.end(), orderDb.end()]);
  }
}

/**
 * Each reservation was made for its order's user and amount: the user-service debits whom and what the
 * event names, so a wrong user or amount in `order.created` moves someone else's money.
 */
export function checkReservationOwners(
  orders: readonly OrderRow[],
  reservations: readonly ReservationRow[],
): InvariantResult {
  const orderOf = new Map(orders.map((o) => [o.id, o]));
  const violations: string[] = [];
  let compared = 0;
  for (const r of reservations) {
    const o = orderOf.get(r.order_id);
    if (!o) continue; // "no reservation without an order" is checked with the final states.
    compared++;
    if (r.user_id !== o.user_id)
      violations.push(
        `order ${o.id} of user ${o.user_id}: reservation (${r.status}) is of user ${r.user_id}`,
      );
    if (Number(r.amount) !== Number(o.amount))
      violations.push(`order ${o.id}: amount ${o.amount}, reservation (${r.status}) ${r.amount}`);
  }
  return result("each reservation has its order's user and amount", `${compared} reservations`, violations);
}

/** The cancel reasons of the order-service's own cancels. */
const ORDER_CANCELS = new Set<string>(Object.values(CANCEL_REASONS));

/** What each reservation's answer to `order.created` must be, by its final state. */
function expectedReply(r: ReservationRow): { reserved: number; failed: number } | "unanswered" {
  switch (r.status) {
    // RELEASED was RESERVED before its order.canceled.
    case "RESERVED":
    case "RELEASED":
      return { reserved: 1, failed: 0 };
    case "REJECTED":
      return { reserved: 0, failed: 1 };
    default:
      // CANCELED: order.canceled came first; its order.created, once applied, sets a reason and
      // answers with a failure (ORDER_CANCELED). Without a reason, order.created was never applied.
      return r.reason === null ? "unanswered" : { reserved: 0, failed: 1 };
  }
}

/**
 * What each order emitted, counted in the outboxes (which must hold every row the run wrote): a dropped
 * `order.created` or credit reply otherwise ends as a TIMEOUT cancel that every other check accepts.
 * Dead-letter rows (`<topic>.dlq`) and replayed dead letters are copies, not emissions: left out.
 */
export function checkEmissions(
  orders: readonly OrderRow[],
  reservations: readonly ReservationRow[],
  orderOutbox: readonly EmittedRow[],
  userOutbox: readonly EmittedRow[],
): InvariantResult[] {
  const emitted = (rows: readonly EmittedRow[]) => {
    const counts = new Map<string, number>();
    for (const row of rows) {
      if (row.replay || !(EVENT_TOPICS as readonly string[]).includes(row.topic)) continue;
      const key = `${row.aggregate_id} ${row.topic}`;
      counts.set(key, (counts.get(key) ?? 0) + 1);
    }
    return counts;
  };
  const fromOrders = emitted(orderOutbox);
  const fromUsers = emitted(userOutbox);
  const count = (counts: Map<string, number>, orderId: string, topic: string) =>
    counts.get(`${orderId} ${topic}`) ?? 0;

  const created: string[] = [];
  for (const o of orders) {
    const n = count(fromOrders, o.id, TOPICS.orderCreated);
    if (n !== 1)
      created.push(`order ${o.id} (${o.status}) has ${n} ${TOPICS.orderCreated} rows in order_db's outbox`);
  }

  // The order-service emits order.canceled for a cancel it decides (by request, or at the saga's deadline),
  // not for one the user-service's refusal ended (its reason one of the refusals').
  const cancels: string[] = [];
  for (const o of orders) {
    const expected = o.status === "CANCELED" && ORDER_CANCELS.has(o.cancel_reason ?? "") ? 1 : 0;
    const n = count(fromOrders, o.id, TOPICS.orderCanceled);
    if (n !== expected)
      cancels.push(
        `order ${o.id} (${o.status} ${o.cancel_reason ?? ""}) has ${n} ${TOPICS.orderCanceled} rows in order_db's outbox; expected ${expected}`,
      );
  }

  const replies: string[] = [];
  const reservationOf = new Map(reservations.map((r) => [r.order_id, r]));
  let answered = 0;
  for (const o of orders) {
    if (!reservationOf.has(o.id))
      replies.push(
        `order ${o.id} (${o.status}) has no reservation: its ${TOPICS.orderCreated} was never applied`,
      );
  }
  for (const r of reservations) {
    const expected = expectedReply(r);
    const got = {
      reserved: count(fromUsers, r.order_id, TOPICS.creditReserved),
      failed: count(fromUsers, r.order_id, TOPICS.creditReservationFailed),
    };
    const what = `reservation ${r.order_id} (${r.status}${r.reason ? ` ${r.reason}` : ""})`;
    const wrote = `${got.reserved} ${TOPICS.creditReserved} and ${got.failed} ${TOPICS.creditReservationFailed} rows`;
    if (expected === "unanswered") {
      replies.push(`${what}: its ${TOPICS.orderCreated} was never applied (${wrote} in user_db's outbox)`);
      continue;
    }
    answered++;
    if (got.reserved !== expected.reserved || got.failed !== expected.failed)
      replies.push(
        `${what} has ${wrote} in user_db's outbox; expected ${expected.reserved} and ${expected.failed}`,
      );
  }

  const duplicates: string[] = [];
  for (const [db, counts] of [
    ["order_db", fromOrders],
    ["user_db", fromUsers],
  ] as const) {
    for (const [key, n] of counts) {
      if (n > 1) {
        const [aggregate, topic] = key.split(" ");
        duplicates.push(`order ${aggregate}: ${n} ${topic} rows in ${db}'s outbox`);
      }
    }
  }
  const streams = fromOrders.size + fromUsers.size;

  return [
    result(`every order's ${TOPICS.orderCreated} written exactly once`, `${orders.length} orders`, created),
    result(
      `${TOPICS.orderCanceled} written once for each cancel by request or deadline, never otherwise`,
      `${orders.length} orders`,
      cancels,
    ),
    result(
      "every reservation answered exactly once (credit reply by its final state)",
      `${answered} answered reservations of ${orders.length} orders`,
      replies,
    ),
    result("no order emits a topic twice", `${streams} order/topic streams`, duplicates),
  ];
}

export type Activity = {
  /** Orders in order_db, by status. */
  ordersByStatus: Record<string, number>;
  /** Faults planned, by kind and target. */
  planned: Record<string, Record<string, number>>;
  /** Faults done, by kind and target. */
  done: Record<string, Record<string, number>>;
};

/** The run did what it set out to do: orders created, some of them CONFIRMED, and every planned fault. */
export function checkActivity({ ordersByStatus, planned, done }: Activity): InvariantResult {
  const violations: string[] = [];
  const orders = Object.values(ordersByStatus).reduce((a, b) => a + b, 0);
  const confirmed = ordersByStatus.CONFIRMED ?? 0;
  if (orders === 0) violations.push("no order was created");
  else if (confirmed === 0) violations.push(`none of ${orders} orders ended CONFIRMED`);
  let plannedN = 0;
  let doneN = 0;
  for (const [kind, targets] of Object.entries(planned)) {
    for (const [target, n] of Object.entries(targets)) {
      const d = done[kind]?.[target] ?? 0;
      plannedN += n;
      doneN += Math.min(d, n);
      if (d < n) violations.push(`${kind} ${target}: ${d} of ${n} planned done`);
    }
  }
  return result(
    "the run did something: orders created and CONFIRMED, every planned fault done",
    `${orders} orders (${confirmed} CONFIRMED), faults ${doneN}/${plannedN}`,
    violations,
  );
}

/** An exit of one of the run's processes, once it was ready, that the run did not ask for. */
export type UnplannedExit = { name: string; code: number | null; upMs: number };

export const describeExit = ({ name, code, upMs }: UnplannedExit): string =>
  `${name} exited by itself (code ${code ?? "none: a signal"}) after ${(upMs / 1000).toFixed(1)} s up`;

/**
 * No process exited by itself once ready. Every fault of the schedule is one a process must ride out:
 * consumers rejoin their group however long the broker is away, relays stand by, pools reconnect,
 * requests answer 503 (docs/design.md, "Crashes and outages"). What makes one exit is a defect (a relay
 * loop that crashed, an uncaught exception), which no fault excuses. Exits during a start (a link
 * blackholed, PostgreSQL down) are not counted: the run starts the process again, and fails if it never
 * comes back.
 */
export function checkExits(exits: readonly UnplannedExit[], processes: number): InvariantResult {
  return result(
    "no process exited by itself (every exit was a kill of the schedule)",
    `${processes} processes`,
    exits.map(describeExit),
  );
}
