import { fileURLToPath } from "node:url";
import { drizzle } from "drizzle-orm/postgres-js";
import { migrate } from "drizzle-orm/postgres-js/migrator";
import postgres from "postgres";

export type ServiceDatabase = "user" | "order";

export const MIGRATIONS_FOLDER: Record<ServiceDatabase, string> = {
  user: fileURLToPath(new URL("../migrations/user", import.meta.url)),
  order: fileURLToPath(new URL("../migrations/order", import.meta.url)),
};

// Any constant works; it only has to be the same for every instance migrating one database.
const MIGRATION_LOCK_KEY = 7_340_001;

/**
 * Applies the pending migrations of one service database, then validates the constraints they added
 * NOT VALID. Safe when several instances start at once: a session-level advisory lock lets one migrate
 * while the others wait, then find nothing to do. Rejects, naming the constraint, while rows written
 * before a constraint break it; the constraint holds for new rows meanwhile.
 */
export async function migrateDatabase(url: string, which: ServiceDatabase): Promise<void> {
  const sql = postgres(url, { max: 1, onnotice: () => {} });
  try {
    await sql`select pg_advisory_lock(${MIGRATION_LOCK_KEY})`;
    try {
      await migrate(drizzle(sql), { migrationsFolder: MIGRATIONS_FOLDER[which] });
      await validateConstraints(sql);
    } finally {
      await sql`select pg_advisory_unlock(${MIGRATION_LOCK_KEY})`;
    }
  } finally {
    await sql.end();
  }
}

/**
 * Checks the rows of each constraint left NOT VALID against it. Not in a migration: drizzle runs the
 * pending migrations in one transaction, so the ACCESS EXCLUSIVE lock that ADD CONSTRAINT took would be
 * held through the scan; VALIDATE CONSTRAINT in a transaction of its own takes SHARE UPDATE EXCLUSIVE,
 * which lets reads and writes go on (https://www.postgresql.org/docs/current/sql-altertable.html).
 */
async function validateConstraints(sql: postgres.Sql): Promise<void> {
  const pending = await sql<{ table: string; name: string }[]>`
    select t.relname as table, c.conname as name
    from pg_constraint c join pg_class t on t.oid = c.conrelid
    where not c.convalidated and t.relnamespace = current_schema()::regnamespace
    order by 1, 2`;
  for (const { table, name } of pending) {
    try {
      await sql`alter table ${sql(table)} validate constraint ${sql(name)}`;
    } catch (err) {
      if ((err as { code?: string }).code !== "23514") throw err; // check_violation
      throw new Error(`rows of ${table} written before its constraint ${name} break it; correct them`, {
        cause: err,
      });
    }
  }
}
