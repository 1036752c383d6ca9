import { CANCEL_REASONS } from "@saga/contracts";
import type pg from "pg";
import { ORDER_CANCELED_PAYLOAD, orderCanceledParams } from "./order-hot-path.ts";

/** Why an order ended CANCELED when its saga outlived `SAGA_TIMEOUT`. */
export const CANCELED_BY_TIMEOUT = CANCEL_REASONS.timeout;

/*
 * Saga deadlines in one statement per sweep: it picks a bounded batch of PENDING orders older than
 * the deadline, cancels them with reason TIMEOUT and writes their `order.canceled` outbox rows, all in
 * the statement's own transaction (the transactional-outbox rule: the cancel and its event commit
 * together, as DELETE of a PENDING order does). Why each clause is there:
 *
 * - `due`: the oldest overdue orders by `orders_pending_created_at_idx` (partial, PENDING only). A
 *   decided order's entry stays in it until a vacuum cleans the index: right after one an idle sweep
 *   reads a page or two and no heap; until the next, also the pages of the entries decided since, each
 *   skipped once a scan has read its heap row and marked it dead, and removed from a page only by an
 *   insert into that page when full. Sweeps and recounts that pass the head every few hundred decided
 *   orders keep it at a page or two; otherwise it grows by up to a page per 370 (400,000 decided: 0.3
 *   to 2.9 ms a sweep; docs/design.md, "Dead index entries"). `for update skip locked` makes two
 *   order-service instances sweeping at once take disjoint batches and never wait for each other, and
 *   never wait for a consumer or DELETE that holds the row; the status is re-checked on the locked row,
 *   so an order decided meanwhile is not taken.
 * - `claimed`: the aggregate lock every writer of an existing order takes first (`lockAggregate`), tried
 *   rather than waited for: an order that a consumer batch or a DELETE holds is being decided right now,
 *   and is left to the next sweep. Holding it keeps the per-aggregate rule (one order's outbox rows commit
 *   in position order), and a DELETE that comes after reads CANCELED and emits nothing. Never waiting
 *   means the sweep can take part in no deadlock. Materialized, so the lock is tried once per row of
 *   `due` and only for those.
 * - `canceled`: `status = 'PENDING'` once more (the state machine's `onDeadline`), so the statement can
 *   never move an order twice.
 * - `events`: the payload is built in SQL because one statement has to write it
 *   (`ORDER_CANCELED_PAYLOAD`, as a DELETE's), and the id too: a UUIDv7 as `newRowId` makes them
 *   (PostgreSQL 18's `uuidv7()`), not the column's random default, with no array of ids to size before
 *   the sweep knows how many it cancels.
 * - the final select reports the ages of the orders still PENDING (the snapshot still sees the ones
 *   just canceled as PENDING, hence `not in`): the saga-age gauges cost this sweep nothing more. They
 *   are few: the saga backlog bound refuses new orders past half a second of sagas (never more than
 *   `SAGA_BACKLOG_LIMIT`, 2000).
 */
export const CANCEL_OVERDUE = `
with due as materialized (
  select id, user_id, amount from orders
  where status = 'PENDING' and created_at < now() - $1::float8 * interval '1 millisecond'
  order by created_at
  limit $2
  for update skip locked
),
claimed as materialized (
  select id, user_id, amount from due where pg_try_advisory_xact_lock(hashtextextended(id::text, 0))
),
canceled as (
  update orders as o set status = 'CANCELED', cancel_reason = $3, updated_at = now()
  from claimed as c
  where o.id = c.id and o.status = 'PENDING'
  returning o.id, o.user_id, o.amount, extract(epoch from o.updated_at - o.created_at)::float8 as saga_seconds
),
events as (
  insert into outbox (id, aggregate_id, topic, event_type, schema_version, payload, headers)
  select uuidv7(), id::text, $4, $5, $6,
         ${ORDER_CANCELED_PAYLOAD},
         $7::jsonb
  from canceled
)
select
  array(select saga_seconds from canceled) as canceled,
  array(
    select extract(epoch from now() - created_at)::float8 from orders
    where status = 'PENDING' and id not in (select id from canceled)
  ) as pending_ages`;

export type OverdueSweep = {
  /** Seconds from each canceled order's creation to its cancel. */
  canceledSagaSeconds: number[];
  /** The age in seconds of every order still PENDING after the sweep. */
  pendingAges: number[];
};

/**
 * Cancels up to `batch` PENDING orders created more than `timeoutMs` ago with reason TIMEOUT and emits
 * `order.canceled` for each, in one statement (see `CANCEL_OVERDUE`). Safe to run from any number of
 * instances at once: each order is canceled, and its event written, once.
 */
export async function cancelOverdueSagas(
  pool: pg.Pool,
  { timeoutMs, batch, traceparent }: { timeoutMs: number; batch: number; traceparent: string },
): Promise<OverdueSweep> {
  const { rows } = await pool.query<{ canceled: number[]; pending_ages: number[] }>({
    name: "cancel-overdue-sagas",
    text: CANCEL_OVERDUE,
    values: [timeoutMs, batch, CANCELED_BY_TIMEOUT, ...orderCanceledParams(traceparent)],
  });
  const [row] = rows;
  if (!row) throw new Error("the overdue-saga sweep returned no row");
  return { canceledSagaSeconds: row.canceled, pendingAges: row.pending_ages };
}
