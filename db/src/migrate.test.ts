import { freshDatabase } from "@saga/tools/test/harness";
import postgres from "postgres";
import { describe, expect, it, onTestFinished } from "vitest";
import { migrateDatabase } from "./migrate.ts";

async function tables(url: string): Promise<string[]> {
  const sql = postgres(url, { max: 1, onnotice: () => {} });
  onTestFinished(() => sql.end());
  const rows = await sql<{ table_name: string }[]>`
    select table_name from information_schema.tables where table_schema = 'public' order by table_name`;
  return rows.map((r) => r.table_name);
}

describe("migrateDatabase", () => {
  it("creates the user_db tables, and is safe when several instances start at once", async () => {
    const url = await freshDatabase("user_db");
    await Promise.all([
      migrateDatabase(url, "user"),
      migrateDatabase(url, "user"),
      migrateDatabase(url, "user"),
    ]);
    await migrateDatabase(url, "user");
    expect(await tables(url)).toEqual([
      "dead_letters",
      "idempotency_keys",
      "inbox",
      "outbox",
      "reservations",
      "users",
    ]);
  });

  it("creates the order_db tables", async () => {
    const url = await freshDatabase("order_db");
    await migrateDatabase(url, "order");
    expect(await tables(url)).toEqual(["dead_letters", "idempotency_keys", "inbox", "orders", "outbox"]);
  });

  // Every index of the outbox is written by every insert and every mark: only those the relay reads by.
  it.each(["user", "order"] as const)(
    "gives the %s outbox only the indexes the relay reads by",
    async (service) => {
      const url = await freshDatabase(`${service}_db`);
      await migrateDatabase(url, service);
      const sql = postgres(url, { max: 1, onnotice: () => {} });
      onTestFinished(() => sql.end());
      const rows = await sql<{ indexname: string }[]>`
      select indexname from pg_indexes where schemaname = 'public' and tablename = 'outbox' order by indexname`;
      expect(rows.map((r) => r.indexname)).toEqual([
        "outbox_pkey",
        "outbox_published_at_idx",
        "outbox_unpublished_idx",
      ]);
    },
  );

  it("stores money as bigint and refuses a negative balance", async () => {
    const url = await freshDatabase("user_db");
    await migrateDatabase(url, "user");
    const sql = postgres(url, { max: 1, onnotice: () => {} });
    onTestFinished(() => sql.end());
    const [column] =
      await sql`select data_type from information_schema.columns where table_name = 'users' and column_name = 'balance'`;
    expect(column?.data_type).toBe("bigint");
    await sql`insert into users (username, initial_balance, balance) values ('rich', 9007199254740991, 9007199254740991)`;
    await expect(
      sql`update users set balance = balance - 9007199254740992 where username = 'rich'`,
    ).rejects.toThrow(/users_balance_non_negative/);
  });
});
