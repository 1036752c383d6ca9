import { sql } from "drizzle-orm";
import type { NodePgQueryResultHKT } from "drizzle-orm/node-postgres";
import type { PgDatabase } from "drizzle-orm/pg-core";

/**
 * Anything that runs queries on a service database: the pool or an open transaction, of either
 * service's schema. The shared helpers only touch the common tables, so the schema does not matter.
 */
// biome-ignore lint/suspicious/noExplicitAny: both services' schemas must fit.
export type Executor = PgDatabase<NodePgQueryResultHKT, any, any>;

/** A service database (`createPgDatabase`): the pool for reads, and transactions. */
export type Database = {
  db: Executor;
  transaction<T>(work: (tx: Executor) => Promise<T>): Promise<T>;
};

// Aggregates already locked by a transaction (lockAggregates), so lockAggregate costs no round trip.
const held = new WeakMap<Executor, Set<string>>();

/**
 * Serialises all work on one aggregate (an order) until the transaction ends. Taken before reading the
 * aggregate's state, it keeps concurrent consumers and requests from racing, and makes the outbox
 * positions of one aggregate follow commit order. A lock, not a row, because the first event of an
 * order may find no row to lock yet.
 */
export async function lockAggregate(tx: Executor, aggregateId: string): Promise<void> {
  if (held.get(tx)?.has(aggregateId)) return;
  await tx.execute(sql`select pg_advisory_xact_lock(hashtextextended(${aggregateId}, 0))`);
}

/**
 * Locks several aggregates in one round trip, in a fixed order (by lock key) so that two transactions
 * locking overlapping sets cannot deadlock. A transaction that takes more than one aggregate's lock must
 * take them all here, before any other lock.
 */
export async function lockAggregates(tx: Executor, aggregateIds: readonly string[]): Promise<void> {
  const ids = [...new Set(aggregateIds)];
  if (ids.length === 0) return;
  // The ordered subquery makes the locks be taken in key order, one row at a time.
  await tx.execute(sql`
    select pg_advisory_xact_lock(k)
    from (select distinct hashtextextended(id, 0) as k from unnest(${sql.param(ids)}::text[]) as id order by k) as keys`);
  held.set(tx, new Set([...(held.get(tx) ?? []), ...ids]));
}
