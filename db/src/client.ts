import { drizzle, type PostgresJsDatabase } from "drizzle-orm/postgres-js";
import postgres from "postgres";
import { postgresJsOptions } from "./connection.ts";
import { sessionParameters } from "./session.ts";
import { DEFAULT_SESSION_TIMEOUTS, type SessionTimeouts } from "./timeouts.ts";

export type DatabaseOptions = {
  /** Pool size. */
  max?: number;
  /** Name shown in pg_stat_activity. */
  applicationName?: string;
  /** Server-side bounds of every session of the pool; `DEFAULT_SESSION_TIMEOUTS` when not given. */
  timeouts?: SessionTimeouts;
};

/** A postgres.js pool and its drizzle wrapper; `close()` drains the pool. */
export function createDatabase<TSchema extends Record<string, unknown>>(
  url: string,
  schema: TSchema,
  { max = 10, applicationName = "outbox-saga", timeouts = DEFAULT_SESSION_TIMEOUTS }: DatabaseOptions = {},
) {
  const sql = postgres({
    ...postgresJsOptions(url),
    max,
    onnotice: () => {},
    connection: sessionParameters({
      application_name: applicationName,
      statement_timeout: timeouts.statementTimeoutMs,
      idle_in_transaction_session_timeout: timeouts.idleInTransactionTimeoutMs,
    }),
  });
  const db: PostgresJsDatabase<TSchema> = drizzle(sql, { schema });
  return { sql, db, close: () => sql.end({ timeout: 5 }) };
}
