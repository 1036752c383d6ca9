import type { ExtractTablesWithRelations } from "drizzle-orm";
import { drizzle, type NodePgDatabase, type NodePgTransaction } from "drizzle-orm/node-postgres";
import pg from "pg";
import type { DatabaseOptions } from "./client.ts";
import { connectionOptions } from "./connection.ts";
import { connectionLifetime } from "./lifetime.ts";
import { sessionOptions } from "./session.ts";
import { clientQueryTimeoutMs, DEFAULT_SESSION_TIMEOUTS, isClientQueryTimeout } from "./timeouts.ts";

/** Connections of a service's pool unless its `DB_POOL_MAX` says otherwise. */
export const DEFAULT_POOL_MAX = 10;

/**
 * How long a pooled connection lives at most before the pool replaces it, in seconds (once idle, or when
 * given back); each connection's own lifetime lies between 0.8 and 1 times this (`connectionLifetime`). A
 * connection stays with the server it reached, and steady traffic keeps every connection from idling out:
 * after a failover that left the old primary up (demoted to a standby, or read-only), the pool would use
 * it for ever, failing its writes (`mustDiscardClient` drops such a client at its first refused write)
 * and serving its reads from a server that no longer takes the new primary's commits. A new connection
 * looks the host name up again and reaches whatever it names now.
 */
export const DEFAULT_POOL_MAX_LIFETIME_S = 300;

export type PgDatabaseOptions = DatabaseOptions & {
  /** How long a query waits for a connection, in ms, before failing (retriably). */
  connectionTimeoutMillis?: number;
  /** Told about connection errors that no query was waiting for; they are otherwise harmless. */
  onConnectionError?: (err: Error) => void;
  /**
   * How long a connection lives at most before it is replaced (`DEFAULT_POOL_MAX_LIFETIME_S`), each its
   * own lifetime down to 0.8 times this; 0 for ever.
   */
  maxLifetimeSeconds?: number;
};

/**
 * Whether a pooled client whose work failed with `err` must be destroyed rather than given back: its
 * statement timed out on the client's side (`isClientQueryTimeout`: its connection still waits for that
 * answer), or the server refused a write as read only (25006 read_only_sql_transaction). After a failover
 * the old primary, demoted but up, keeps the connections made to it, and each would fail the writes of
 * every transaction that got it; a new connection reaches the server the host name names now. (pg-pool's
 * own `pool.query` destroys a client after any error.)
 */
export function mustDiscardClient(err: unknown): boolean {
  return isClientQueryTimeout(err) || isReadOnlyRefusal(err);
}

function isReadOnlyRefusal(err: unknown): boolean {
  for (let e = err, depth = 0; e instanceof Error && depth < 5; e = e.cause, depth++) {
    if ((e as { code?: unknown }).code === "25006") return true;
  }
  return false;
}

/**
 * A node-postgres pool and its drizzle wrapper, for code that runs transactions through PostgreSQL
 * restarts: a client whose connection dies is dropped from the pool and replaced. (postgres.js 3.4.10,
 * behind `createDatabase`, can keep a pooled connection that a restart killed mid-transaction unusable
 * for good: https://github.com/porsager/postgres/issues/1208.) `close()` drains the pool.
 */
export function createPgDatabase<TSchema extends Record<string, unknown>>(
  url: string,
  schema: TSchema,
  {
    max = DEFAULT_POOL_MAX,
    applicationName = "outbox-saga",
    connectionTimeoutMillis = 5000,
    timeouts = DEFAULT_SESSION_TIMEOUTS,
    onConnectionError = () => {},
    maxLifetimeSeconds = DEFAULT_POOL_MAX_LIFETIME_S,
  }: PgDatabaseOptions = {},
) {
  const pool = new pg.Pool({
    ...connectionOptions(url),
    max,
    application_name: applicationName,
    connectionTimeoutMillis,
    // Sent in the startup message, so they hold for every statement of every session, BEGIN included.
    statement_timeout: timeouts.statementTimeoutMs,
    idle_in_transaction_session_timeout: timeouts.idleInTransactionTimeoutMs,
    query_timeout: clientQueryTimeoutMs(timeouts),
    // Plan a named statement once per session. The hot path's statements take their ids as arrays
    // (`id = any($1)`, `unnest($1, …)`), and for an array of one or two ids the planner estimates a
    // fresh custom plan cheaper than the generic one, so by default it planned them again on every
    // execution: in the bench at 100 sagas/s planning took longer than running the user-service's state
    // read, and 8% of PostgreSQL's CPU went to it (bench/JOURNAL.md, "Session 26"). The generic
    // plans are the same index scans. The price: a statement whose best plan depends on its parameter's
    // value (a partial index, a skewed column) must state that value as a literal (see the
    // order-service's backlog count). With them, the date settings every session of ours pins.
    options: sessionOptions({ plan_cache_mode: "force_generic_plan" }),
    idleTimeoutMillis: 30_000,
    maxLifetimeSeconds,
    keepAlive: true,
    // Statements issued on a checked-out client without awaiting the one before go out at once and are
    // answered in order (https://node-postgres.com/features/pipelining): a consumer's BEGIN, inbox claim
    // and state read share one round trip (`inTransaction`, `createInbox`). Awaited statements behave as
    // without it.
    pipeline: true,
  });
  if (maxLifetimeSeconds > 0) spreadLifetimes(pool, maxLifetimeSeconds);
  // node-postgres emits 'error' for a connection lost while idle in the pool or checked out between
  // queries; unheard, that event would end the process. The query in flight, if any, fails on its own.
  pool.on("error", onConnectionError);
  pool.on("connect", (client) => client.on("error", onConnectionError));
  const db: NodePgDatabase<TSchema> = drizzle(pool, { schema });
  // One drizzle instance per pooled client, made once: making one walks the whole schema, which
  // showed in the services' CPU profiles when it was done for every transaction.
  const onClient = new WeakMap<pg.PoolClient, NodePgDatabase<TSchema>>();

  /**
   * Runs `work` in a transaction on a client of its own. Unlike `db.transaction`, it gives the client
   * back also when BEGIN itself fails (drizzle 0.45 leaks it then, so the pool shrinks and `close()`
   * waits for ever); the pool drops a client whose connection is gone instead of reusing it, and one
   * that `mustDiscardClient` rejects (a client-side timeout, a server that refused a write as read only).
   */
  async function transaction<T>(
    work: (tx: NodePgTransaction<TSchema, ExtractTablesWithRelations<TSchema>>) => Promise<T>,
  ): Promise<T> {
    const client = await pool.connect();
    let failure: unknown;
    try {
      let clientDb = onClient.get(client);
      if (!clientDb) {
        clientDb = drizzle(client, { schema });
        onClient.set(client, clientDb);
      }
      return await clientDb.transaction(work);
    } catch (err) {
      failure = err;
      throw err;
    } finally {
      client.release(mustDiscardClient(failure) ? (failure as Error) : undefined);
    }
  }

  let closed: Promise<void> | undefined;
  return { pool, db, transaction, close: () => (closed ??= pool.end()) };
}

/**
 * Gives each connection of `pool` a lifetime of its own under `maxLifetimeSeconds` (`connectionLifetime`).
 * pg-pool (3.14) has one lifetime for the pool, and its hooks (`onConnect`, the
 * `connect`, `acquire` and `release` events) see a connection but cannot retire one. It reads
 * `options.maxLifetimeSeconds` each time a connection is made, once connected (`_afterConnect`), and arms
 * that connection's timer with it, which expires the connection as the option always does: at once when
 * idle, when given back otherwise. A getter answers each read anew. That read is pg-pool's internals,
 * not its API: pg-client.test.ts ("a lifetime of its own") fails if a version reads the option once, or
 * elsewhere.
 */
function spreadLifetimes(pool: pg.Pool, maxLifetimeSeconds: number): void {
  Object.defineProperty(pool.options, "maxLifetimeSeconds", {
    get: () => connectionLifetime(maxLifetimeSeconds),
    enumerable: true,
    configurable: true,
  });
}

export type PgDatabase<TSchema extends Record<string, unknown>> = ReturnType<
  typeof createPgDatabase<TSchema>
>;
