import { readFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { drizzle } from "drizzle-orm/postgres-js";
import { migrate } from "drizzle-orm/postgres-js/migrator";
import postgres from "postgres";
import { postgresJsOptions } from "./connection.ts";
import { sessionParameters } from "./session.ts";

export type ServiceDatabase = "user" | "order";

export const MIGRATIONS_FOLDER: Record<ServiceDatabase, string> = {
  user: fileURLToPath(new URL("../migrations/user", import.meta.url)),
  order: fileURLToPath(new URL("../migrations/order", import.meta.url)),
};

// Any constant works; it only has to be the same for every instance migrating one database.
const MIGRATION_LOCK_KEY = 7_340_001;

/**
 * The constraints our migrations add NOT VALID, by database, which `migrateDatabase` validates once they
 * have committed. Only these: a constraint an operator added NOT VALID on purpose, or a foreign key left
 * unchecked, is theirs to validate, and rows that break it must not keep a service from starting. A
 * migration that adds one NOT VALID names it here (a test holds this list to the migrations).
 */
export const ADDED_NOT_VALID: Record<ServiceDatabase, readonly { table: string; name: string }[]> = {
  user: [
    // 0007_money_checks.sql
    { table: "reservations", name: "reservations_amount_positive" },
    { table: "users", name: "users_balance_at_most_initial" },
  ],
  order: [],
};

/**
 * The oldest PostgreSQL each service database runs on (its `server_version_num`), and what of it the
 * service needs. The order-service's cancels (a DELETE, the saga deadline) write their `order.canceled`
 * with `uuidv7()` and read the status they replaced with `RETURNING OLD`, both new in PostgreSQL 18: on an
 * older server it would start, report ready and take orders, and fail every cancel. The user-service
 * needs nothing as recent (the relay, which runs no migrations, needs 14; relay/README.md).
 */
const MIN_SERVER_VERSION: Record<ServiceDatabase, { num: number; needs: string } | undefined> = {
  user: undefined,
  order: { num: 180_000, needs: "its cancels use uuidv7() and RETURNING OLD" },
};

/**
 * Why a server of `server_version_num` `serverVersionNum` cannot hold the database `which`, in one line,
 * or undefined when it can.
 */
export function serverVersionRefusal(which: ServiceDatabase, serverVersionNum: number): string | undefined {
  const min = MIN_SERVER_VERSION[which];
  if (min === undefined || serverVersionNum >= min.num) return undefined;
  // From PostgreSQL 10 on, server_version_num is major × 10000 + minor (170005 is 17.5).
  const major = (num: number) => Math.floor(num / 10_000);
  return `the ${which} database needs PostgreSQL ${major(min.num)} or later (${min.needs}); this server is ${major(serverVersionNum)} (server_version_num ${serverVersionNum})`;
}

/** What `migrateDatabase` found beside what it applied. */
export type MigrationReport = {
  /**
   * Migrations recorded in the database after the last one this code knows: a newer version migrated it.
   * drizzle applies only migrations newer than the database's last and says nothing of these, so an
   * older instance starts on a schema it was not written for (docs/design.md, "Upgrading").
   */
  unknownMigrations: number;
};

/**
 * Applies the pending migrations of one service database, then validates the constraints they added
 * NOT VALID (`ADDED_NOT_VALID`). Safe when several instances start at once: a session-level advisory
 * lock lets one migrate while the others wait, then find nothing to do. Rejects, before applying
 * anything, a server older than the database needs (`MIN_SERVER_VERSION`); and, naming the constraint,
 * while rows written before a constraint break it; the constraint holds for new rows meanwhile. Reports
 * migrations of a newer version already applied (`MigrationReport`), which it leaves alone.
 */
export async function migrateDatabase(url: string, which: ServiceDatabase): Promise<MigrationReport> {
  const sql = postgres({
    ...postgresJsOptions(url),
    max: 1,
    onnotice: () => {},
    connection: sessionParameters(),
  });
  try {
    // Before anything is applied: a server too old for the service's statements is refused at start.
    const [version] = await sql<{ num: number }[]>`select current_setting('server_version_num')::int as num`;
    const refusal = serverVersionRefusal(which, version?.num ?? 0);
    if (refusal !== undefined) throw new Error(refusal);
    await sql`select pg_advisory_lock(${MIGRATION_LOCK_KEY})`;
    try {
      await migrate(drizzle(sql), { migrationsFolder: MIGRATIONS_FOLDER[which] });
      await validateConstraints(sql, ADDED_NOT_VALID[which]);
      // drizzle's own bookkeeping: each applied migration's row carries its journal entry's `when`.
      const [row] = await sql<{ unknown: number }[]>`
        select count(*)::int as unknown from drizzle.__drizzle_migrations
        where created_at > ${lastKnownMigration(which)}`;
      return { unknownMigrations: row?.unknown ?? 0 };
    } finally {
      await sql`select pg_advisory_unlock(${MIGRATION_LOCK_KEY})`;
    }
  } finally {
    await sql.end();
  }
}

/** The `when` of the last migration in the journal of `which`: what drizzle records as its `created_at`. */
export function lastKnownMigration(which: ServiceDatabase): number {
  const journal = JSON.parse(
    readFileSync(join(MIGRATIONS_FOLDER[which], "meta", "_journal.json"), "utf8"),
  ) as { entries: { when: number }[] };
  return Math.max(...journal.entries.map((e) => e.when));
}

/**
 * Checks the rows of each of `constraints` still NOT VALID against it. Not in a migration: drizzle runs
 * the pending migrations in one transaction, so the ACCESS EXCLUSIVE lock that ADD CONSTRAINT took would
 * be held through the scan; VALIDATE CONSTRAINT in a transaction of its own takes SHARE UPDATE EXCLUSIVE,
 * which lets reads and writes go on (https://www.postgresql.org/docs/current/sql-altertable.html).
 */
export async function validateConstraints(
  sql: postgres.Sql,
  constraints: readonly { table: string; name: string }[],
): Promise<void> {
  if (constraints.length === 0) return;
  const unchecked = await sql<{ table: string; name: string }[]>`
    select t.relname as table, c.conname as name
    from pg_constraint c join pg_class t on t.oid = c.conrelid
    where not c.convalidated and t.relnamespace = current_schema()::regnamespace`;
  const isUnchecked = (c: { table: string; name: string }) =>
    unchecked.some(({ table, name }) => table === c.table && name === c.name);
  for (const { table, name } of constraints.filter(isUnchecked)) {
    try {
      await sql`alter table ${sql(table)} validate constraint ${sql(name)}`;
    } catch (err) {
      const code = (err as { code?: string }).code;
      if (code !== "23514" && code !== "23503") throw err; // check_violation, foreign_key_violation
      throw new Error(`rows of ${table} written before its constraint ${name} break it; correct them`, {
        cause: err,
      });
    }
  }
}
