import { sql } from "drizzle-orm";
import type { NodePgQueryResultHKT } from "drizzle-orm/node-postgres";
import type { PgDatabase } from "drizzle-orm/pg-core";
import type { SqlPool } from "./batch-sql.ts";

/**
 * Anything that runs queries on a service database: the pool or an open transaction, of either
 * service's schema. The shared helpers only touch the common tables, so the schema does not matter.
 */
// `any`: both services' schemas must fit.
export type Executor = PgDatabase<NodePgQueryResultHKT, any, any>;

/**
 * A service database (`createPgDatabase`): drizzle over the pool for reads, drizzle transactions, and
 * the node-postgres pool itself for the consumers' hand-written statements (`batch-sql.ts`).
 */
export type Database = {
  db: Executor;
  transaction<T>(work: (tx: Executor) => Promise<T>): Promise<T>;
  pool: SqlPool;
};

/**
 * Serialises all work on one aggregate (an order) until the transaction ends. Taken before reading the
 * aggregate's state, it keeps concurrent consumers and requests from racing, and makes the outbox
 * positions of one aggregate follow commit order. A lock, not a row, because the first event of an
 * order may find no row to lock yet. Of the id in lower case, as the other writers of an order lock it
 * (the inbox's claim locks the decoded payload's `orderId`, the services' statements the uuid as
 * PostgreSQL writes it): a dead letter gets its id from the message's key as sent, which another
 * producer may spell in upper case.
 */
export async function lockAggregate(tx: Executor, aggregateId: string): Promise<void> {
  await tx.execute(sql`select pg_advisory_xact_lock(hashtextextended(${aggregateId.toLowerCase()}, 0))`);
}
