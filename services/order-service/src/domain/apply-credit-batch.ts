import type { OrderStatus } from "@saga/contracts";
import type { SqlClient, TxClient } from "@saga/messaging";
import { type CreditEvent, type CreditPlan, planCreditEvents } from "./credit-plan.ts";

/*
 * The order-service's consuming hot path in two statements, whatever the size of the batch. They run
 * inside the inbox's transaction, after `claimEvents` took the advisory lock of every order of the
 * batch (the lock `DELETE /orders/:id` takes too) and wrote its inbox rows: the statuses read here are
 * committed and stay so until COMMIT. The read travels with BEGIN and the claim in one round trip (see
 * `BatchHandler`). Between the two, `planCreditEvents` (pure) decides every event in the batch's order.
 */

// The status of every order of the batch; one round trip.
const READ_STATUSES = `select id, status from orders where id = any($1::uuid[])`;

/**
 * The channel on which every order-service instance hears how many sagas the user-service's answers
 * finished, whichever instance applied them: the saga's throughput, for the backlog bound
 * (backpressure.ts). Payload: the count of one batch.
 */
export const SAGAS_FINISHED_CHANNEL = "sagas_finished";

// Every order the batch moves out of PENDING, in one statement (one row per order: the plan keeps the
// last change of each). `status = 'PENDING'` re-states the state machine's precondition, so a plan
// built on a stale read could never move an order twice. It is written as a clause of the join, `or
// c.id is null`, which is never true (a row joined by `o.id = c.id` has an id), so that it is not a
// filter of orders alone: as one, it matches orders_pending_created_at_idx's predicate, and the
// (generic) plan read every PENDING order through that index and hash-joined the batch against them,
// dead index entries included, instead of probing orders_pkey once per order (550 buffers and 1.5 ms a
// batch with 100,000 dead entries). COMMIT travels with the statement
// (`queryThenCommit`), so it checks itself that it changed every order planned ($4): a count that
// differs fails the cast in the ELSE branch (evaluated only then), and the COMMIT behind it rolls the
// batch back. One row whatever the count, so that the check runs also when nothing matched; `changed`
// gives how long each saga took, for its histogram. `pg_notify` tells every instance how many sagas
// the batch finished, on commit only, and in the statement: no round trip more, and the transaction
// already notifies (the trigger of db/migrations/order/0002), so its commit takes no lock it did not. One
// such statement per transaction: PostgreSQL folds identical payloads of one transaction into one.
// https://www.postgresql.org/docs/current/sql-notify.html
export const WRITE_CHANGES = `
with changed as (
  update orders as o set status = c.status, cancel_reason = c.reason, updated_at = now()
  from unnest($1::uuid[], $2::text[], $3::text[]) as c(id, status, reason)
  where o.id = c.id and (o.status = 'PENDING' or c.id is null)
  returning o.id, extract(epoch from o.updated_at - o.created_at)::float8 as saga_seconds
)
select case
  when (select count(*) from changed) = $4::int
    then (select coalesce(json_agg(json_build_array(id, saga_seconds)), '[]') from changed)
  else ('credit batch changed ' || (select count(*) from changed) || ' orders, planned ' || $4::int)::int::text::json
end as changed,
pg_notify('${SAGAS_FINISHED_CHANNEL}', (select count(*) from changed)::text) as notified`;

export type AppliedCredit = CreditPlan & {
  /** Seconds from each changed order's creation to its change. */
  sagaSeconds: Map<string, number>;
};

/** The status of each order that exists; sends its statement at once (see `BatchHandler.read`). */
export async function readOrderStatuses(
  tx: SqlClient,
  orderIds: readonly string[],
): Promise<Map<string, OrderStatus>> {
  const { rows } = await tx.query<{ id: string; status: OrderStatus }>({
    name: "order-read-statuses",
    text: READ_STATUSES,
    values: [[...new Set(orderIds)]],
  });
  return new Map(rows.map((r) => [r.id, r.status]));
}

/**
 * Applies a batch of `user.credit-reserved` and `user.credit-reservation-failed` events (already
 * claimed in the inbox, their orders locked, their statuses read by `readOrderStatuses`): PENDING
 * orders become CONFIRMED or CANCELED; a decided order ignores them. Emits nothing.
 *
 * An answer for an order that does not exist throws, before anything is written, and the transaction
 * (its inbox rows included) rolls back: the answer can only come from the order's own `order.created`,
 * so the order's transaction committed, and it may just not be visible here yet (a relay that sent the
 * event a moment before the commit became visible). The consumer's failure contract retries it with
 * back-off (an unexpected failure) and, if the order never shows up, dead-letters it to
 * `<topic>.dlq`, where it is seen, instead of committing it as ignored for good.
 */
export async function applyCreditBatch(
  tx: TxClient,
  events: readonly CreditEvent[],
  statuses: ReadonlyMap<string, OrderStatus>,
): Promise<AppliedCredit> {
  const plan = planCreditEvents(events, statuses);
  if (plan.absent.length > 0)
    throw new Error(
      `credit answer for an order that does not exist (yet): ${plan.absent.join(", ")}; retried, then dead-lettered`,
    );
  const sagaSeconds = new Map<string, number>();
  if (plan.changes.length === 0) return { ...plan, sagaSeconds };
  const { rows } = await tx.queryThenCommit<{ changed: [string, number][] }>({
    name: "order-write-credit-changes",
    text: WRITE_CHANGES,
    values: [
      plan.changes.map((c) => c.orderId),
      plan.changes.map((c) => c.status),
      plan.changes.map((c) => c.reason),
      plan.changes.length,
    ],
  });
  for (const [id, seconds] of rows[0]?.changed ?? []) sagaSeconds.set(id, seconds);
  return { ...plan, sagaSeconds };
}
