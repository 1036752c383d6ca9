import {
  type CreateOrderRequest,
  EVENT_TYPES,
  HEADERS,
  type Order,
  type OrderStatus,
  SCHEMA_VERSION,
  TOPICS,
} from "@saga/contracts";
import { newRowId, outboxRow } from "@saga/messaging";
import type pg from "pg";
import { onDelete } from "./order-machine.ts";
import { CANCELED_BY_REQUEST, type Transition } from "./orders.ts";

/**
 * The saga's HTTP hot path in hand-written SQL, one round trip per request: `POST /orders`,
 * `GET /orders/:id` and `DELETE /orders/:id`. Each is a node-postgres named statement, parsed and
 * planned once per pooled connection. The rest of the order-service uses drizzle (src/domain/orders.ts).
 */

// ISO 8601 with milliseconds in UTC, as `Date.prototype.toISOString` writes it (both truncate to ms),
// so an order's `createdAt` reads the same from POST, a replayed POST, GET and the composed read.
const ISO_CREATED_AT = `to_char(created_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')`;

// The order and its `order.created` event. Data-modifying CTEs run exactly once whether or not the
// outer query reads them, and all of one statement commits or none of it (no BEGIN/COMMIT needed):
// the transactional-outbox rule (state and event in one transaction) holds. No aggregate lock: the
// order id is new, so no other writer can touch this order or append to its events before it commits.
const PLACE = (gate: string) => `
  placed as (
    insert into orders (id, user_id, amount, status)
    select $1::uuid, $2::uuid, $3::bigint, 'PENDING' ${gate}
    returning id, user_id, amount, status, ${ISO_CREATED_AT} as created_at
  ),
  event as (
    insert into outbox (id, aggregate_id, topic, event_type, schema_version, payload, headers)
    select $4::uuid, placed.id::text, $5, $6, $7, $8, $9::jsonb from placed
  )`;

const PLACE_ORDER = `with ${PLACE("")} select * from placed`;

// With an Idempotency-Key, the key's record is written by the same statement as the order:
// - `claim` inserts it first; ON CONFLICT DO NOTHING makes a request whose key is taken claim nothing.
//   A concurrent request with the same key waits on the key's index entry until the first commits, then
//   claims nothing too; if the first rolled back, it claims the key itself. At most one order per key.
// - `placed` (and so `event`) reads from `claim`: nothing is written unless the key was claimed.
// - The stored response is built from the same values and the statement's `now()`, which is also the
//   order's `created_at`: a replay answers byte for byte what the first request was answered.
// - A key that was taken before this statement began is read back by the second branch (same snapshot)
//   with whether its request matched; a key that a concurrent request committed meanwhile is invisible
//   to this statement's snapshot and yields no row at all (`READ_KEY` then reads it).
const PLACE_ORDER_ONCE = `
  with claim as (
    insert into idempotency_keys (subject, key, request_hash, status, body)
    values ($12, $10, $11, 201, json_build_object(
      'id', $1::uuid, 'userId', $2::uuid, 'amount', $3::bigint, 'status', 'PENDING',
      'createdAt', to_char(now() at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')))
    on conflict (subject, key) do nothing
    returning key
  ),
  ${PLACE("from claim")}
  select 'fresh' as outcome, null::integer as stored_status, null::json as stored_body, placed.*
  from placed
  union all
  select case when request_hash = $11 then 'replayed' else 'mismatch' end, status, body,
         null, null, null, null, null
  from idempotency_keys where subject = $12 and key = $10 and not exists (select from claim)`;

// Keys are per caller (the gateway's verified subject): one user's key never answers another's request.
const READ_KEY = `select request_hash, status, body from idempotency_keys where subject = $1 and key = $2`;

const READ_ORDER = `select id, user_id, amount, status, ${ISO_CREATED_AT} as created_at from orders where id = $1`;

type OrderRow = { id: string; user_id: string; amount: string; status: OrderStatus; created_at: string };

const toOrder = (row: OrderRow): Order => ({
  id: row.id,
  userId: row.user_id,
  // bigint arrives as a string; amounts are safe integers (contracts' `amount`).
  amount: Number(row.amount),
  status: row.status,
  createdAt: row.created_at,
});

export type PlaceOrderResult =
  | { outcome: "fresh"; order: Order }
  | { outcome: "replayed"; status: number; body: unknown }
  /** The key was first used for a different request. */
  | { outcome: "mismatch" };

/**
 * Creates a PENDING order and the `order.created` event that starts its saga, in one statement; with
 * an idempotency key, at most once per key (see `PLACE_ORDER_ONCE`). `fingerprint` identifies the
 * request (`requestFingerprint`).
 */
export async function placeOrder(
  pool: pg.Pool | pg.PoolClient,
  { userId, amount }: CreateOrderRequest,
  traceparent: string,
  idempotency?: { subject: string; key: string; fingerprint: string },
): Promise<PlaceOrderResult> {
  const id = newRowId();
  const event = outboxRow({
    topic: TOPICS.orderCreated,
    aggregateId: id,
    payload: { orderId: id, userId, amount },
    traceparent,
  });
  const values: unknown[] = [
    id,
    userId,
    amount,
    event.id,
    event.topic,
    event.eventType,
    event.schemaVersion,
    event.payload,
    JSON.stringify(event.headers),
  ];
  if (!idempotency) {
    const { rows } = await pool.query<OrderRow>({ name: "place-order", text: PLACE_ORDER, values });
    if (!rows[0]) throw new Error("insert returned no order");
    return { outcome: "fresh", order: toOrder(rows[0]) };
  }
  const { subject, key, fingerprint } = idempotency;
  const { rows } = await pool.query<
    OrderRow & { outcome: "fresh" | "replayed" | "mismatch"; stored_status: number; stored_body: unknown }
  >({ name: "place-order-once", text: PLACE_ORDER_ONCE, values: [...values, key, fingerprint, subject] });
  const [row] = rows;
  if (row?.outcome === "fresh") return { outcome: "fresh", order: toOrder(row) };
  if (row?.outcome === "replayed")
    return { outcome: "replayed", status: row.stored_status, body: row.stored_body };
  if (row?.outcome === "mismatch") return { outcome: "mismatch" };
  // A concurrent request with this key committed after this statement's snapshot was taken.
  const { rows: stored } = await pool.query<{ request_hash: string; status: number; body: unknown }>({
    name: "read-idempotency-key",
    text: READ_KEY,
    values: [subject, key],
  });
  const first = stored[0];
  if (!first) throw new Error(`idempotency key ${key} was neither claimed nor found`);
  if (first.request_hash !== fingerprint) return { outcome: "mismatch" };
  return { outcome: "replayed", status: first.status, body: first.body };
}

/** The order, read with one prepared statement outside any transaction. */
export async function readOrder(pool: pg.Pool | pg.PoolClient, id: string): Promise<Order | undefined> {
  const { rows } = await pool.query<OrderRow>({ name: "read-order", text: READ_ORDER, values: [id] });
  return rows[0] && toOrder(rows[0]);
}

const READ_ORDERS = `select id, user_id, amount, status, ${ISO_CREATED_AT} as created_at from orders where id = any($1::uuid[])`;

/** The orders of these ids that exist, in one statement. */
export async function readOrders(pool: pg.Pool | pg.PoolClient, ids: string[]): Promise<Order[]> {
  const { rows } = await pool.query<OrderRow>({ name: "read-orders", text: READ_ORDERS, values: [ids] });
  return rows.map(toOrder);
}

/**
 * `order.canceled`'s payload, built in SQL by the statements that write the event themselves (a DELETE,
 * the saga deadline) from the canceled row's `id`, `user_id` and `amount`: the text is exactly what
 * `JSON.stringify` of the contract's `{orderId, userId, amount}` gives (uuids and a bigint need no
 * escaping), which the tests check against `outboxRow`.
 */
export const ORDER_CANCELED_PAYLOAD = `'{"orderId":"' || id || '","userId":"' || user_id || '","amount":' || amount || '}'`;

/** The rest of such an `order.canceled` row, as parameters: topic, event type, schema version, headers. */
export const orderCanceledParams = (traceparent: string) => [
  TOPICS.orderCanceled,
  EVENT_TYPES[TOPICS.orderCanceled],
  SCHEMA_VERSION,
  JSON.stringify({ [HEADERS.traceparent]: traceparent }),
];

// `DELETE /orders/:id` in one statement (one round trip, no BEGIN/COMMIT), where the drizzle transaction
// took six: the cancel and its `order.canceled` event commit together or not at all.
// - `locked`: the aggregate lock every writer of an existing order takes first (`lockAggregate`), waited for;
//   only on an order the caller may cancel ($7: a user's id, or null for an admin), so that someone
//   else's order takes no lock, is never waited on, and answers exactly as an unknown id. An order's
//   owner never changes, so this check cannot go stale before the UPDATE, which repeats it.
//   The UPDATE then locks the row; in READ COMMITTED a row that a writer changed and committed while
//   this statement waited is read again in its latest version, and the WHERE is checked on that
//   (EvalPlanQual), so the status decided on is the latest committed one, as it was after the lock.
// - `canceled`: `status <> 'CANCELED'` is the state machine's `onDelete` ("cancel" for PENDING and
//   CONFIRMED); `old.status` (PostgreSQL 18's RETURNING OLD) says whether the cancel ended the saga (it
//   left PENDING) or compensated a CONFIRMED order.
// - `event`: written only for the row `canceled` returned; its id a UUIDv7 as `newRowId` makes them
//   (PostgreSQL 18's `uuidv7()`), not the column's random default (see packages/messaging/src/ids.ts).
// - the final select: the order's status before the cancel; or CANCELED when the UPDATE left an order
//   that exists (nothing written): of its clauses only `status <> 'CANCELED'` can fail there (id and
//   owner never change), checked on the latest version; or no row when there is no such order. That
//   CANCELED is written, not read: this select sees the statement's snapshot, taken before the lock
//   wait, where an order that a credit batch or the saga deadline canceled meanwhile is still PENDING.
const CANCEL_ORDER = `
  with locked as materialized (
    select count(pg_advisory_xact_lock(hashtextextended($1::uuid::text, 0))) as n
    from orders where id = $1::uuid and ($7::text is null or user_id::text = $7)
  ),
  canceled as (
    update orders as o set status = 'CANCELED', cancel_reason = $2, updated_at = now()
    from locked
    where o.id = $1::uuid and o.status <> 'CANCELED' and ($7::text is null or o.user_id::text = $7)
    returning o.id, o.user_id, o.amount, old.status as was,
              extract(epoch from o.updated_at - o.created_at)::float8 as saga_seconds
  ),
  event as (
    insert into outbox (id, aggregate_id, topic, event_type, schema_version, payload, headers)
    select uuidv7(), id::text, $3, $4, $5, ${ORDER_CANCELED_PAYLOAD}, $6::jsonb from canceled
  )
  select true as changed, was as status, saga_seconds from canceled
  union all
  select false, 'CANCELED', null from orders
  where id = $1::uuid and ($7::text is null or user_id::text = $7) and not exists (select from canceled)`;

/**
 * Cancels an order on request and emits `order.canceled` so the user-service releases its reservation,
 * in one statement (see `CANCEL_ORDER`). Undefined when there is no such order, or it is not `owner`'s
 * (a user's lower-case id; undefined for an admin); `ignored` when it was already CANCELED.
 */
export async function cancelOrder(
  pool: pg.Pool | pg.PoolClient,
  orderId: string,
  traceparent: string,
  owner?: string,
): Promise<Transition | undefined> {
  const { rows } = await pool.query<{ changed: boolean; status: OrderStatus; saga_seconds: number | null }>({
    name: "cancel-order",
    text: CANCEL_ORDER,
    values: [orderId, CANCELED_BY_REQUEST, ...orderCanceledParams(traceparent), owner ?? null],
  });
  const [row] = rows;
  if (!row) return undefined;
  if (!row.changed) return { kind: "ignored", state: row.status };
  if (onDelete(row.status) !== "cancel")
    throw new Error(`order ${orderId} was canceled from ${row.status}, which onDelete leaves alone`);
  // Only the step that leaves PENDING ends the saga; a later cancel of a CONFIRMED order is compensation.
  const sagaSeconds = row.status === "PENDING" ? (row.saga_seconds ?? undefined) : undefined;
  return { kind: "changed", status: "CANCELED", reason: CANCELED_BY_REQUEST, sagaSeconds };
}
