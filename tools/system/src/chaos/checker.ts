import {
  ALL_TOPICS,
  CANCEL_REASONS,
  DLQ_HEADERS,
  EVENT_TOPICS,
  HEADERS,
  prefixedTopic,
  TOPICS,
} from "@saga/contracts";
import { postgresJsOptions, sessionParameters } from "@saga/db";
import type { KafkaClient } from "@saga/kafka";
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
  /** Not checked (`checked` says why): it passes, and the report says so. */
  skipped?: boolean;
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
  /** What the load was told and created: the final state is checked against it too (`checkAnswers`). */
  clients?: ClientRecord;
  /**
   * The `DB_STATEMENT_TIMEOUT_MS` the services run with (`System.statementTimeoutMs`: the caller's
   * environment may set it), for `timeoutRaceMarginMs`; 0 (none) leaves the TIMEOUT race unchecked.
   */
  statementTimeoutMs: number;
  /** The longest freeze or blackhole the run injected, for `timeoutRaceMarginMs`; 0 without faults. */
  longestStallMs?: number;
};

export type Observed = {
  /** Copies on Kafka beyond the first, per topic: what the inboxes absorbed. */
  duplicateCopies: number;
  messages: number;
};

export type UserRow = { id: string; initial_balance: string; balance: string };
export type OutboxRow = {
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
  created_at: Date;
  /** When it last changed: for a TIMEOUT cancel, the deadline sweep's `now()`, its transaction's start. */
  updated_at: Date;
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
type InboxRow = {
  consumer_group: string;
  event_id: string;
  topic: string;
  offset: number;
  /** Its transaction's start (`now()`): the batch began then, before it took its orders' locks. */
  processed_at: Date;
};
/** An order-service idempotency key, the caller it belongs to, and the order id its stored answer names. */
export type KeyRow = { subject: string; key: string; order_id: string | null };
/** A message read back from Kafka, its topic without the run's prefix. */
export type KafkaCopy = {
  topic: string;
  partition: number;
  offset: number;
  key: string | null;
  eventId: string | undefined;
  aggregateId: string | undefined;
};

/** Everything the invariants are checked on, read from both databases and Kafka once the run is quiet. */
export type Snapshot = {
  users: UserRow[];
  reservations: ReservationRow[];
  orders: OrderRow[];
  userOutbox: OutboxRow[];
  orderOutbox: OutboxRow[];
  userInbox: InboxRow[];
  orderInbox: InboxRow[];
  idempotencyKeys: KeyRow[];
  copies: KafkaCopy[];
};

/**
 * What the load sent and was answered (load.ts): the final state must agree with what clients were told.
 * The API keeps an Idempotency-Key per caller (the token's subject); the load sends each `POST /orders`
 * with the token of the user it orders for, whose subject is the user's id, and a fresh random key, so
 * no two callers share a key and a key alone names its request.
 */
export type ClientRecord = {
  /** Each user the run created, with the initial balance it asked for. */
  users: readonly { id: string; balance: number }[];
  /** Every Idempotency-Key sent with a `POST /orders`, answered or not. */
  keysSent: ReadonlySet<string>;
  /**
   * The order each `201` named, by the Idempotency-Key of its request, with the user and amount sent: its
   * answer is stored under that user as the subject.
   */
  created: ReadonlyMap<string, { id: string; userId: string; amount: number }>;
  /** Orders whose `DELETE` was answered `204`. */
  canceled: ReadonlySet<string>;
};

/** A TIMEOUT cancel, for the report: how long its saga ran, and its credit reply in order_db's inbox. */
export type TimeoutCancel = {
  orderId: string;
  sagaS: number;
  /** Seconds from the cancel to the start of the batch that recorded the reply (negative: before it). */
  reply: { topic: string; processedS: number } | null;
};

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
): Promise<{ results: InvariantResult[]; observed: Observed; timeoutCancels: TimeoutCancel[] }> {
  const snapshot = await readSnapshot(input);
  const checked = checkSnapshot(snapshot, {
    outboxComplete: input.outboxComplete ?? false,
    clients: input.clients,
    timeoutMarginMs: timeoutRaceMarginMs(input.statementTimeoutMs, input.longestStallMs ?? 0),
  });
  const events = snapshot.copies.filter((c) => c.eventId).length;
  const duplicateCopies = events - firstCopies(snapshot.copies).size;
  return {
    ...checked,
    observed: { duplicateCopies, messages: snapshot.copies.length },
  };
}

async function readSnapshot(input: CheckInput): Promise<Snapshot> {
  const prefix = input.topicPrefix ?? "";
  const userDb = postgres({
    ...postgresJsOptions(input.userDbUrl),
    max: 1,
    onnotice: () => {},
    connection: sessionParameters(),
  });
  const orderDb = postgres({
    ...postgresJsOptions(input.orderDbUrl),
    max: 1,
    onnotice: () => {},
    connection: sessionParameters(),
  });
  try {
    const outbox = (sql: postgres.Sql) => sql<OutboxRow[]>`
      select id::text, position::int8::float8 as position, aggregate_id, topic, published_at,
        headers ? ${DLQ_HEADERS.replayOf} as replay
      from outbox`;
    const inbox = (sql: postgres.Sql) => sql<InboxRow[]>`
      select consumer_group, event_id, topic, "offset"::float8 as "offset", processed_at from inbox`;
    const [users, reservations, orders, userOutbox, orderOutbox, userInbox, orderInbox, idempotencyKeys] =
      await Promise.all([
        userDb<UserRow[]>`select id, initial_balance, balance from users`,
        userDb<ReservationRow[]>`select order_id, user_id, amount, status, reason from reservations`,
        orderDb<OrderRow[]>`
          select id, user_id, amount, status, cancel_reason, created_at, updated_at from orders`,
        outbox(userDb),
        outbox(orderDb),
        inbox(userDb),
        inbox(orderDb),
        orderDb<KeyRow[]>`select subject, key, body->>'id' as order_id from idempotency_keys`,
      ]);
    const messages = await input.kafka.readToEnd(ALL_TOPICS.map((t) => prefixedTopic(prefix, t)));
    const copies = messages.map(
      (m): KafkaCopy => ({
        topic: m.topic.slice(prefix.length),
        partition: m.partition,
        offset: Number(m.offset),
        key: m.key,
        eventId: m.headers[HEADERS.eventId],
        aggregateId: m.headers[HEADERS.aggregateId],
      }),
    );
    return {
      users,
      reservations,
      orders,
      userOutbox,
      orderOutbox,
      userInbox,
      orderInbox,
      idempotencyKeys,
      copies,
    };
  } finally {
    await Promise.all([userDb.end(), orderDb.end()]);
  }
}

/** Every invariant on what was read; pure, so that each check has a test of its own. */
export function checkSnapshot(
  s: Snapshot,
  opts: { outboxComplete: boolean; clients?: ClientRecord; timeoutMarginMs: number | undefined },
): { results: InvariantResult[]; timeoutCancels: TimeoutCancel[] } {
  const timeouts = checkTimeoutCancels(s, opts.timeoutMarginMs);
  const results = [
    checkMoney(s.users, s.reservations),
    checkMoneyConserved(s.users, s.orders),
    ...(opts.clients ? [checkInitialBalances(s.users, opts.clients)] : []),
    checkFinalStates(s.orders, s.reservations),
    checkReservationOwners(s.orders, s.reservations),
    ...(opts.outboxComplete ? checkEmissions(s.orders, s.reservations, s.orderOutbox, s.userOutbox) : []),
    timeouts.result,
    ...(opts.clients ? checkAnswers(s.orders, s.idempotencyKeys, opts.clients) : []),
    checkPublished([...s.userOutbox, ...s.orderOutbox], s.copies),
    checkInboxes(s),
    checkOrdering(s),
  ];
  return { results, timeoutCancels: timeouts.cancels };
}

/** The first copy of each event on Kafka, by its event id. */
function firstCopies(copies: readonly KafkaCopy[]): Map<string, KafkaCopy> {
  const first = new Map<string, KafkaCopy>();
  for (const c of copies) if (c.eventId && !first.has(c.eventId)) first.set(c.eventId, c);
  return first;
}

/** Invariant 1: each balance is its initial balance less what its RESERVED reservations hold. */
export function checkMoney(
  users: readonly UserRow[],
  reservations: readonly ReservationRow[],
): InvariantResult {
  const reservedByUser = new Map<string, number>();
  for (const r of reservations) {
    if (r.status === "RESERVED")
      reservedByUser.set(r.user_id, (reservedByUser.get(r.user_id) ?? 0) + Number(r.amount));
  }
  const violations: string[] = [];
  for (const u of users) {
    const reserved = reservedByUser.get(u.id) ?? 0;
    const expected = Number(u.initial_balance) - reserved;
    if (Number(u.balance) !== expected)
      violations.push(
        `user ${u.id}: balance ${u.balance}, but initial ${u.initial_balance} - reserved ${reserved} = ${expected}`,
      );
    if (Number(u.balance) < 0) violations.push(`user ${u.id}: negative balance ${u.balance}`);
  }
  return result("money: balance = initial - RESERVED, never negative", `${users.length} users`, violations);
}

/**
 * Invariant 1 across the databases: what left the balances is what the CONFIRMED orders cost. The check
 * above reads its reference, `initial_balance`, from the table it checks; this one compares user_db's
 * money with order_db's orders.
 */
export function checkMoneyConserved(users: readonly UserRow[], orders: readonly OrderRow[]): InvariantResult {
  const spent = users.reduce((n, u) => n + Number(u.initial_balance) - Number(u.balance), 0);
  const confirmed = orders.filter((o) => o.status === "CONFIRMED");
  const cost = confirmed.reduce((n, o) => n + Number(o.amount), 0);
  return result(
    "money conserved: Σ (initial - balance) over users = Σ amount of CONFIRMED orders",
    `${users.length} users, ${confirmed.length} CONFIRMED orders`,
    spent === cost ? [] : [`users spent ${spent}, CONFIRMED orders cost ${cost}`],
  );
}

/** Each user the run created has the initial balance the run asked for, and no other user exists. */
export function checkInitialBalances(users: readonly UserRow[], clients: ClientRecord): InvariantResult {
  const stored = new Map(users.map((u) => [u.id, u]));
  const created = new Set(clients.users.map((u) => u.id));
  const violations: string[] = [];
  for (const { id, balance } of clients.users) {
    const u = stored.get(id);
    if (!u) violations.push(`user ${id} was created (201) but is not in user_db`);
    else if (Number(u.initial_balance) !== balance)
      violations.push(`user ${id}: initial_balance ${u.initial_balance}, created with ${balance}`);
  }
  for (const u of users) if (!created.has(u.id)) violations.push(`user ${u.id} was not created by the run`);
  return result(
    "every user's initial_balance is what the run created it with",
    `${clients.users.length} users created`,
    violations,
  );
}

/** Invariant 2: every order final, CONFIRMED exactly when RESERVED; no reservation without an order. */
export function checkFinalStates(
  orders: readonly OrderRow[],
  reservations: readonly ReservationRow[],
): InvariantResult {
  const reservationOf = new Map(reservations.map((r) => [r.order_id, r]));
  const violations: string[] = [];
  for (const o of orders) {
    const r = reservationOf.get(o.id);
    if (o.status !== "CONFIRMED" && o.status !== "CANCELED")
      violations.push(`order ${o.id} is still ${o.status}`);
    else if ((o.status === "CONFIRMED") !== (r?.status === "RESERVED"))
      violations.push(`order ${o.id} is ${o.status} but its reservation is ${r?.status ?? "missing"}`);
  }
  const orderIds = new Set(orders.map((o) => o.id));
  for (const r of reservations) {
    if (!orderIds.has(r.order_id)) violations.push(`reservation ${r.order_id} (${r.status}) has no order`);
  }
  return result(
    "orders final; CONFIRMED exactly when RESERVED; no reservation without an order",
    `${orders.length} orders`,
    violations,
  );
}

/** Invariant 3: every outbox row is marked published and its first copy is on Kafka. */
export function checkPublished(outbox: readonly OutboxRow[], copies: readonly KafkaCopy[]): InvariantResult {
  const onKafka = firstCopies(copies);
  const violations: string[] = [];
  for (const row of outbox) {
    if (!row.published_at)
      violations.push(`outbox row ${row.id} (${row.topic}, position ${row.position}) is unpublished`);
    else if (!onKafka.has(row.id))
      violations.push(`outbox row ${row.id} (${row.topic}) is marked published but is not on Kafka`);
  }
  return result("every outbox row published at least once", `${outbox.length} outbox rows`, violations);
}

/**
 * Invariant 3: the group that consumes each event has its inbox row. The inbox's primary key (group, event
 * id) allows one row, so this sees an event never applied, not one applied twice: a second application
 * would show as a second emission (`checkEmissions`) or a balance off its ledger (`checkMoney`).
 */
export function checkInboxes(s: Pick<Snapshot, "userOutbox" | "orderOutbox" | "userInbox" | "orderInbox">) {
  const inboxes = { user: s.userInbox, order: s.orderInbox };
  const violations: string[] = [];
  let expected = 0;
  for (const { db, group, topics } of CONSUMERS) {
    const recorded = new Map<string, number>();
    for (const row of inboxes[db]) {
      if (row.consumer_group === group) recorded.set(row.event_id, (recorded.get(row.event_id) ?? 0) + 1);
    }
    const sourceOutbox = db === "user" ? s.orderOutbox : s.userOutbox;
    for (const row of sourceOutbox) {
      if (!(topics as readonly string[]).includes(row.topic)) continue;
      expected++;
      const times = recorded.get(row.id) ?? 0;
      if (times !== 1)
        violations.push(`event ${row.id} (${row.topic}) recorded ${times} times in ${group}'s inbox`);
    }
  }
  return result("every event recorded once in its consumer's inbox", `${expected} events`, violations);
}

/**
 * Invariant 4: per order and topic, events published (same partition, rising offsets) and applied (rising
 * inbox offsets) in the order written; every message's key is its aggregate.
 */
export function checkOrdering(
  s: Pick<Snapshot, "userOutbox" | "orderOutbox" | "userInbox" | "orderInbox" | "copies">,
): InvariantResult {
  const onKafka = firstCopies(s.copies);
  const violations: string[] = [];
  const byAggregateTopic = new Map<string, OutboxRow[]>();
  for (const row of [...s.userOutbox, ...s.orderOutbox]) {
    if (!(EVENT_TOPICS as readonly string[]).includes(row.topic)) continue;
    const key = `${row.aggregate_id} ${row.topic}`;
    byAggregateTopic.set(key, [...(byAggregateTopic.get(key) ?? []), row]);
  }
  const appliedOffset = new Map<string, number>();
  for (const row of [...s.userInbox, ...s.orderInbox])
    appliedOffset.set(`${row.consumer_group} ${row.event_id}`, row.offset);
  const groupOf = new Map<string, string>(
    CONSUMERS.flatMap(({ group, topics }) => topics.map((t) => [t, group] as const)),
  );
  for (const [key, rows] of byAggregateTopic) {
    if (rows.length < 2) continue;
    rows.sort((a, b) => a.position - b.position);
    const copies = rows.map((r) => onKafka.get(r.id));
    for (let i = 1; i < rows.length; i++) {
      const before = copies[i - 1];
      const after = copies[i];
      if (before && after && (before.partition !== after.partition || before.offset >= after.offset))
        violations.push(
          `${key}: position ${rows[i - 1]?.position} published at ${before.partition}/${before.offset}, after it ${rows[i]?.position} at ${after.partition}/${after.offset}`,
        );
      const group = groupOf.get(rows[i]?.topic ?? "");
      const a = appliedOffset.get(`${group} ${rows[i - 1]?.id}`);
      const b = appliedOffset.get(`${group} ${rows[i]?.id}`);
      if (a !== undefined && b !== undefined && a >= b)
        violations.push(
          `${key}: ${group} applied position ${rows[i]?.position} (offset ${b}) before ${rows[i - 1]?.position} (offset ${a})`,
        );
    }
  }
  for (const c of s.copies) {
    if (c.eventId && c.key !== c.aggregateId)
      violations.push(
        `event ${c.eventId} on ${c.topic} has key ${c.key}, not its aggregate ${c.aggregateId}`,
      );
  }
  const multi = [...byAggregateTopic.values()].filter((rows) => rows.length > 1).length;
  return result(
    "per order and topic, published and applied in the order written",
    `${byAggregateTopic.size} order/topic streams (${multi} with several events), ${s.copies.length} keys`,
    violations,
  );
}

/**
 * How much earlier than its order's TIMEOUT cancel a credit reply's batch may have begun and still have
 * found the order CANCELED, with the services' `statement_timeout` (`DB_STATEMENT_TIMEOUT_MS`, as they were
 * started). A batch's `processed_at` is its transaction's start; its claim (sent with BEGIN, in one write)
 * then waits for its orders' locks, at most `statement_timeout` (a claim that waits longer fails and rolls
 * back, inbox row and all); meanwhile the sweep may take an order whose lock the claim has not reached yet
 * (they are taken in key order) and cancel it. BEGIN and the claim can be held apart only by a fault: a
 * link blackholed between the two, or a frozen PostgreSQL. 5 s on top for latency faults and the sweep's
 * own statement. Undefined without a statement timeout (0): a claim may then wait for ever, and no margin
 * tells a race from a reply consumed without effect.
 */
export function timeoutRaceMarginMs(statementTimeoutMs: number, longestStallMs: number): number | undefined {
  if (statementTimeoutMs === 0) return undefined;
  return statementTimeoutMs + longestStallMs + 5000;
}

const CREDIT_REPLIES: readonly string[] = [TOPICS.creditReserved, TOPICS.creditReservationFailed];
const ORDER_GROUP = CONSUMERS[1].group;
/** The inbox stores the topic as consumed, under the run's prefix; the name without it ends the same. */
const logical = (topic: string) => CREDIT_REPLIES.find((t) => topic.endsWith(t)) ?? topic;

/**
 * A credit reply consumed without effect must not hide behind the deadline: an order canceled with
 * reason TIMEOUT whose reply the order-service recorded in its inbox while the order was still PENDING
 * was left PENDING by that reply, which a reply never does (CONFIRMED, or CANCELED with the refusal's
 * reason). "While PENDING" is read from timestamps of order_db's one clock: the reply's batch began more
 * than `marginMs` (`timeoutRaceMarginMs`) before the sweep's cancel. Closer than that, the batch may have
 * waited for its locks while the sweep canceled the order, and found it CANCELED: a legitimate race, not
 * counted. Which order a reply answers comes from user_db's outbox or the message on Kafka. Without a
 * margin (the services ran without a statement timeout) the cancels are listed, and the check skipped.
 */
export function checkTimeoutCancels(
  s: Pick<Snapshot, "orders" | "userOutbox" | "orderInbox" | "copies">,
  marginMs: number | undefined,
): { result: InvariantResult; cancels: TimeoutCancel[] } {
  const orderOfReply = new Map<string, string>();
  for (const row of s.userOutbox)
    if (CREDIT_REPLIES.includes(row.topic)) orderOfReply.set(row.id, row.aggregate_id);
  for (const c of s.copies)
    if (CREDIT_REPLIES.includes(c.topic) && c.eventId && c.aggregateId)
      orderOfReply.set(c.eventId, c.aggregateId);
  // The earliest, should an order have had two replies (which checkEmissions counts).
  const replyOf = new Map<string, InboxRow>();
  for (const row of s.orderInbox) {
    const orderId = orderOfReply.get(row.event_id);
    const seen = orderId && replyOf.get(orderId);
    if (orderId && row.consumer_group === ORDER_GROUP && (!seen || row.processed_at < seen.processed_at))
      replyOf.set(orderId, row);
  }
  const cancels: TimeoutCancel[] = [];
  const violations: string[] = [];
  for (const o of s.orders) {
    if (o.status !== "CANCELED" || o.cancel_reason !== CANCEL_REASONS.timeout) continue;
    const reply = replyOf.get(o.id);
    const processedS = reply ? (reply.processed_at.getTime() - o.updated_at.getTime()) / 1000 : undefined;
    cancels.push({
      orderId: o.id,
      sagaS: (o.updated_at.getTime() - o.created_at.getTime()) / 1000,
      reply: reply && processedS !== undefined ? { topic: logical(reply.topic), processedS } : null,
    });
    if (reply && processedS !== undefined && marginMs !== undefined && -processedS * 1000 > marginMs)
      violations.push(
        `order ${o.id} canceled at its deadline (TIMEOUT), though its ${logical(reply.topic)} was recorded ${(-processedS).toFixed(1)} s before, while it was PENDING`,
      );
  }
  const answered = cancels.filter((c) => c.reply).length;
  const name = "no TIMEOUT cancel of an order whose credit reply was consumed while it was PENDING";
  const checked = `${cancels.length} TIMEOUT cancels, ${answered} with a reply in the inbox`;
  if (marginMs === undefined)
    return {
      result: {
        ...result(
          name,
          `not checked: the services ran without a statement timeout (DB_STATEMENT_TIMEOUT_MS=0), so a reply's batch may wait for its locks without bound; ${checked}`,
          [],
        ),
        skipped: true,
      },
      cancels,
    };
  return {
    result: result(`${name} (over ${(marginMs / 1000).toFixed(0)} s before the cancel)`, checked, violations),
    cancels,
  };
}

/**
 * What clients were told holds in order_db: each `201`'s order exists as it was asked for; each order came
 * from one Idempotency-Key, so a retried POST never made a second one (the load sends a key with every
 * POST, and the order-service stores the answer it gave with the key); each order whose `DELETE` was
 * answered `204` is CANCELED.
 */
export function checkAnswers(
  orders: readonly OrderRow[],
  keys: readonly KeyRow[],
  clients: ClientRecord,
): InvariantResult[] {
  const orderOf = new Map(orders.map((o) => [o.id, o]));

  const told: string[] = [];
  for (const [key, sent] of clients.created) {
    const o = orderOf.get(sent.id);
    if (!o) told.push(`order ${sent.id}, a 201's for key ${key}, is not in order_db`);
    else if (o.user_id !== sent.userId || Number(o.amount) !== sent.amount)
      told.push(
        `order ${o.id} is of user ${o.user_id}, amount ${o.amount}; its POST (key ${key}) asked for ${sent.userId}, ${sent.amount}`,
      );
  }

  const once: string[] = [];
  const keysOf = new Map<string, string[]>();
  // Keys are per caller: by subject and key.
  const storedAnswer = new Map<string, string | null>();
  const callerKey = (subject: string, key: string) => `${subject}\n${key}`;
  for (const k of keys) {
    storedAnswer.set(callerKey(k.subject, k.key), k.order_id);
    if (!clients.keysSent.has(k.key)) once.push(`idempotency key ${k.key} was never sent by the load`);
    if (k.order_id === null || !orderOf.has(k.order_id))
      once.push(`idempotency key ${k.key} names order ${k.order_id}, which is not in order_db`);
    else keysOf.set(k.order_id, [...(keysOf.get(k.order_id) ?? []), k.key]);
  }
  for (const o of orders) {
    const n = keysOf.get(o.id)?.length ?? 0;
    if (n !== 1) once.push(`order ${o.id} is named by ${n} idempotency keys' stored answers`);
  }
  for (const [key, sent] of clients.created) {
    const stored = storedAnswer.get(callerKey(sent.userId, key));
    if (stored === undefined)
      once.push(
        `key ${key}: its 201 named order ${sent.id}, and no answer is stored under it for its caller ${sent.userId}`,
      );
    else if (stored !== sent.id)
      once.push(`key ${key}: its 201 named order ${sent.id}, its stored answer ${stored}`);
  }
  if (orders.length > clients.keysSent.size)
    once.push(`${orders.length} orders for ${clients.keysSent.size} idempotency keys sent`);

  const canceled: string[] = [];
  for (const id of clients.canceled) {
    const o = orderOf.get(id);
    if (o?.status !== "CANCELED")
      canceled.push(`order ${id}: its DELETE was answered 204, and it is ${o?.status ?? "not in order_db"}`);
  }

  return [
    result(
      "every order a 201 named exists, with the user and amount asked for",
      `${clients.created.size} orders created (201)`,
      told,
    ),
    result(
      "one order per Idempotency-Key: every order named by one key's stored answer, a key the load sent",
      `${orders.length} orders, ${clients.keysSent.size} keys sent`,
      once,
    ),
    result(
      "every order whose DELETE was answered 204 is CANCELED",
      `${clients.canceled.size} orders`,
      canceled,
    ),
  ];
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
