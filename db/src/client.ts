import { drizzle, type PostgresJsDatabase } from "drizzle-orm/postgres-js";
import postgres from "postgres";

export type DatabaseOptions = {
  /** Pool size. */
  max?: number;
  /** Name shown in pg_stat_activity. */
  applicationName?: string;
};

/** A postgres.js pool and its drizzle wrapper; `close()` drains the pool. */
export function createDatabase<TSchema extends Record<string, unknown>>(
  url: string,
  schema: TSchema,
  { max = 10, applicationName = "outbox-saga" }: DatabaseOptions = {},
) {
  const sql = postgres(url, {
    max,
    onnotice: () => {},
    connection: { application_name: applicationName },
  });
  const db: PostgresJsDatabase<TSchema> = drizzle(sql, { schema });
  return { sql, db, close: () => sql.end({ timeout: 5 }) };
}
