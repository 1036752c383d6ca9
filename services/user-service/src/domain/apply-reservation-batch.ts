import type { ReservationStatus } from "@saga/db/user";
import { outboxArrays, outboxRow, type SqlClient, type TxClient } from "@saga/messaging";
import {
  type LedgerRow,
  type OrderEvent,
  planReservations,
  type ReservationPlan,
} from "./reservation-plan.ts";

/*
 * The user-service's consuming hot path in two statements, whatever the size of the batch. They run
 * inside the inbox's transaction, after `claimEvents` took the advisory lock of every order of the
 * batch and wrote its inbox rows; so the state read here is the committed state (a new statement, a new
 * snapshot, taken after the locks) and no other transaction changes these orders' rows until COMMIT.
 * The read travels with BEGIN and the claim in one round trip (see `BatchHandler`). Between the two,
 * `planReservations` (pure) decides every event in the batch's order.
 */

// Reads the state the batch's events depend on:
// - `ledger`: the reservation row of every order of the batch;
// - `balances`: the balance of every user the batch may debit (the events' users) or credit back (the
//   ledger's users), locked FOR UPDATE so that nobody else debits them before COMMIT and the plan's
//   balance checks stay true. The locks are taken in user id order (the ORDER BY under FOR UPDATE), so
//   two batches of overlapping users, on two instances, take them in one order and cannot deadlock.
//   One `= any(array)` over both sets of ids, not `id = any(...) or id in (...)`: PostgreSQL cannot
//   answer that OR from the primary key and scanned every user (31-37 ms a batch with 100,000 users,
//   against 0.1 ms now).
// Both as JSON arrays: one row, one round trip.
const READ_STATE = `
select
  (select coalesce(json_agg(json_build_object(
      'orderId', order_id, 'userId', user_id, 'amount', amount, 'status', status, 'reason', reason)), '[]')
   from reservations where order_id = any($1::uuid[])) as ledger,
  (select coalesce(json_agg(json_build_object('id', id, 'balance', balance)), '[]')
   from (select id, balance from users
         where id = any($2::uuid[] || array(select user_id from reservations where order_id = any($1::uuid[])))
         order by id for update) as locked) as balances`;

// Writes the plan in one statement:
// - `debits`: every balance change of the batch at once (one row per user, the sum of the batch's
//   debits and releases); `balance + change >= 0` keeps the balance from going negative whatever the
//   plan says (with the rows locked it always holds; a row it filters out fails the transaction below).
// - `ledger`: each order's row as the batch leaves it; a new order inserts, a known one (cancel before
//   create, a release) updates status and reason, never who or how much. Only a row still in the status
//   the plan read ($17, null: no row), the state machines' precondition re-stated as the order-service's
//   WRITE_CHANGES does: a plan built on a stale read (a "record-cancel" of an order that has since been
//   RESERVED) would otherwise overwrite a debit with a status that never gives it back. Skipped, the row
//   fails the count check below, and the batch is tried again with a fresh read.
// - `events`: every event the batch emits, `position` drawn in the batch's order (see claimEvents'
//   locks: for one order, position order is commit order).
// All three in one statement of the inbox's transaction: state, ledger, outbox and inbox rows commit
// together or not at all. COMMIT travels with it (`queryThenCommit`), so the check that it wrote what
// the plan says is its own: a count that differs fails the cast in the ELSE branch (evaluated only
// then), the statement fails, and the COMMIT behind it rolls the batch back.
const WRITE_PLAN = `
with debits as (
  update users as u set balance = u.balance + c.change
  from unnest($1::uuid[], $2::bigint[]) as c(id, change)
  where u.id = c.id and u.balance + c.change >= 0
  returning u.id
), ledger as (
  insert into reservations (order_id, user_id, amount, status, reason)
  select * from unnest($3::uuid[], $4::uuid[], $5::bigint[], $6::text[], $7::text[])
  on conflict (order_id) do update set status = excluded.status, reason = excluded.reason, updated_at = now()
  where reservations.status is not distinct from ($17::text[])[array_position($3::uuid[], excluded.order_id)]
  returning order_id
), events as (
  insert into outbox (id, aggregate_id, topic, event_type, schema_version, payload, headers)
  select id, aggregate_id, topic, event_type, schema_version, payload, headers::jsonb
  from unnest($8::uuid[], $9::text[], $10::text[], $11::text[], $12::text[], $13::text[], $14::text[])
    with ordinality as r(id, aggregate_id, topic, event_type, schema_version, payload, headers, n)
  order by n
  returning id
)
select case
  when (select count(*) from debits) = $15::int and (select count(*) from ledger) = $16::int
    then (select count(*) from events)::int
  else ('reservation batch wrote ' || (select count(*) from debits) || ' balances and '
        || (select count(*) from ledger) || ' ledger rows, planned ' || $15::int || ' and ' || $16::int)::int
end as events`;

type StoredLedgerRow = Omit<LedgerRow, "status"> & { status: ReservationStatus };

/** What a batch of order events depends on: the ledger row of each order, the balance of each user. */
export type ReservationState = {
  ledger: Map<string, LedgerRow>;
  balances: Map<string, number>;
};

/**
 * Reads (and locks, see READ_STATE) the ledger rows and balances a batch of order events depends on;
 * sends its statement at once (see `BatchHandler.read`).
 */
export async function readReservationState(
  tx: SqlClient,
  events: readonly OrderEvent[],
): Promise<ReservationState> {
  const orderIds = [...new Set(events.map((e) => e.payload.orderId))];
  const userIds = [...new Set(events.map((e) => e.payload.userId))];
  const { rows } = await tx.query<{ ledger: StoredLedgerRow[]; balances: { id: string; balance: number }[] }>(
    {
      name: "user-read-reservation-state",
      text: READ_STATE,
      values: [orderIds, userIds],
    },
  );
  const state = rows[0];
  return {
    ledger: new Map((state?.ledger ?? []).map((r) => [r.orderId, r])),
    balances: new Map((state?.balances ?? []).map((b) => [b.id, Number(b.balance)])),
  };
}

/**
 * Applies a batch of `order.created` and `order.canceled` events (already claimed in the inbox, their
 * orders locked, their state read by `readReservationState`): plans every event in order, and writes
 * balances, ledger and emitted events in one statement, COMMIT with it. Returns the plan, for the metrics.
 */
export async function applyReservationBatch(
  tx: TxClient,
  events: readonly OrderEvent[],
  state: ReservationState,
): Promise<ReservationPlan> {
  const plan = planReservations(events, state.ledger, state.balances);

  const changes = [...plan.balanceChanges];
  const outbox = plan.emitted.map(outboxRow);
  if (changes.length === 0 && plan.ledger.length === 0 && outbox.length === 0) return plan;
  await tx.queryThenCommit({
    name: "user-write-reservation-plan",
    text: WRITE_PLAN,
    values: [
      changes.map(([id]) => id),
      changes.map(([, change]) => change),
      plan.ledger.map((r) => r.orderId),
      plan.ledger.map((r) => r.userId),
      plan.ledger.map((r) => r.amount),
      plan.ledger.map((r) => r.status),
      plan.ledger.map((r) => r.reason),
      ...outboxArrays(outbox),
      changes.length,
      plan.ledger.length,
      plan.ledger.map((r) => state.ledger.get(r.orderId)?.status ?? null),
    ],
  });
  return plan;
}
