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
 * Applies the pending migrations of one service database. Safe when several instances start at
 * once: a session-level advisory lock lets one migrate while the others wait, then find nothing to do.
 */
export async function migrateDatabase(url: string, which: ServiceDatabase): Promise<void> {
  const sql = postgres(url, { max: 1, onnotice: () => {} });
  try {
    await sql`select pg_advisory_lock(${MIGRATION_LOCK_KEY})`;
    try {
      await migrate(drizzle(sql), { migrationsFolder: MIGRATIONS_FOLDER[which] });
    } finally {
      await sql`select pg_advisory_unlock(${MIGRATION_LOCK_KEY})`;
    }
  } finally {
    await sql.end();
  }
}
