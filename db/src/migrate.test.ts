import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { freshDatabase } from "@saga/tools/test/harness";
import postgres from "postgres";
import { describe, expect, it, onTestFinished } from "vitest";
import {
  ADDED_NOT_VALID,
  lastKnownMigration,
  MIGRATIONS_FOLDER,
  migrateDatabase,
  serverVersionRefusal,
  validateConstraints,
} from "./migrate.ts";

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

  it("reports the migrations a newer version applied, which it leaves alone", async () => {
    const url = await freshDatabase("order_db");
    expect(await migrateDatabase(url, "order")).toEqual({ unknownMigrations: 0 });
    // A newer order-service migrated the database, and this version starts on it (a rollback, or an
    // older instance restarted during an upgrade): drizzle applies nothing and says nothing.
    const sql = postgres(url, { max: 1, onnotice: () => {} });
    onTestFinished(() => sql.end());
    await sql`insert into drizzle.__drizzle_migrations (hash, created_at)
              values ('a newer version', ${lastKnownMigration("order") + 1})`;
    expect(await migrateDatabase(url, "order")).toEqual({ unknownMigrations: 1 });
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

  // Every index of reservations is written by each saga's reservation, at a random page for a random key.
  it("gives reservations only its primary key, the one index the user-service reads it by", async () => {
    const url = await freshDatabase("user_db");
    await migrateDatabase(url, "user");
    const sql = postgres(url, { max: 1, onnotice: () => {} });
    onTestFinished(() => sql.end());
    const rows = await sql<{ indexname: string }[]>`
      select indexname from pg_indexes where schemaname = 'public' and tablename = 'reservations' order by indexname`;
    expect(rows.map((r) => r.indexname)).toEqual(["reservations_pkey"]);
  });

  it("stores money as bigint and refuses a negative balance, a balance above the initial one and a reservation of less than 1", async () => {
    const url = await freshDatabase("user_db");
    await migrateDatabase(url, "user");
    const sql = postgres(url, { max: 1, onnotice: () => {} });
    onTestFinished(() => sql.end());
    const [column] =
      await sql`select data_type from information_schema.columns where table_name = 'users' and column_name = 'balance'`;
    expect(column?.data_type).toBe("bigint");
    const [rich] = await sql`
      insert into users (username, initial_balance, balance) values ('rich', 9007199254740991, 9007199254740991)
      returning id`;
    await expect(
      sql`update users set balance = balance - 9007199254740992 where username = 'rich'`,
    ).rejects.toThrow(/users_balance_non_negative/);

    await expect(sql`update users set balance = balance + 1 where username = 'rich'`).rejects.toThrow(
      /users_balance_at_most_initial/,
    );
    await expect(
      sql`insert into users (username, initial_balance, balance) values ('poor', -1, 0)`,
    ).rejects.toThrow(/users_balance_at_most_initial/);
    for (const amount of [0, -100]) {
      await expect(sql`
        insert into reservations (order_id, user_id, amount, status)
        values (gen_random_uuid(), ${rich?.id}, ${amount}, 'RESERVED')`).rejects.toThrow(
        /reservations_amount_positive/,
      );
    }
    expect(await sql`select username, initial_balance, balance from users`).toEqual([
      { username: "rich", initial_balance: "9007199254740991", balance: "9007199254740991" },
    ]);
    expect(await sql`select * from reservations`).toHaveLength(0);
  });

  // A constraint a migration adds NOT VALID is checked against the rows before it after the migrations
  // commit, in a transaction that lets writers go on: here one holds a reservation it has not committed.
  it("validates the constraints on the rows written before them, beside an open write, and names one they break", async () => {
    const url = await freshDatabase("user_db");
    await migrateDatabase(url, "user");
    const sql = postgres(url, { max: 2, onnotice: () => {} });
    onTestFinished(() => sql.end());
    const unchecked = () =>
      sql`select conname from pg_constraint where not convalidated and connamespace = 'public'::regnamespace`;
    expect(await unchecked()).toEqual([]);

    // A row from before the constraint, as an upgrade finds it.
    const [user] = await sql`
      insert into users (username, initial_balance, balance) values ('ada', 10, 10) returning id`;
    await sql`alter table reservations drop constraint reservations_amount_positive`;
    await sql`
      insert into reservations (order_id, user_id, amount, status) values (gen_random_uuid(), ${user?.id}, 0, 'REJECTED')`;
    await sql`alter table reservations add constraint reservations_amount_positive check (amount >= 1) not valid`;
    await expect(migrateDatabase(url, "user")).rejects.toThrow(
      /rows of reservations written before its constraint reservations_amount_positive break it/,
    );
    expect(await unchecked()).toEqual([{ conname: "reservations_amount_positive" }]);
    await expect(sql`
      insert into reservations (order_id, user_id, amount, status) values (gen_random_uuid(), ${user?.id}, -1, 'RESERVED')`).rejects.toThrow(
      /reservations_amount_positive/,
    );

    await sql`delete from reservations where amount < 1`;
    const writer = await sql.reserve();
    onTestFinished(() => writer.release());
    await writer`begin`;
    await writer`
      insert into reservations (order_id, user_id, amount, status) values (gen_random_uuid(), ${user?.id}, 5, 'REJECTED')`;
    await migrateDatabase(url, "user");
    expect(await unchecked()).toEqual([]);
    await writer`commit`;
    expect(await sql`select amount from reservations`).toEqual([{ amount: "5" }]);
  });

  // An operator's constraint is theirs to validate: rows that break it must not keep a service from starting.
  it("leaves alone a constraint an operator added NOT VALID, which rows before it break", async () => {
    const url = await freshDatabase("user_db");
    await migrateDatabase(url, "user");
    const sql = postgres(url, { max: 1, onnotice: () => {} });
    onTestFinished(() => sql.end());
    await sql`insert into users (username, initial_balance, balance) values ('ada', 10, 10)`;
    await sql`alter table users add constraint users_username_long check (length(username) > 5) not valid`;

    await migrateDatabase(url, "user");
    expect(
      await sql`select conname, convalidated from pg_constraint where conname = 'users_username_long'`,
    ).toEqual([{ conname: "users_username_long", convalidated: false }]);
    expect(await sql`select username from users`).toEqual([{ username: "ada" }]);
  });

  it("names a foreign key that rows written before it break, as it does a check", async () => {
    const url = await freshDatabase("user_db");
    await migrateDatabase(url, "user");
    const sql = postgres(url, { max: 1, onnotice: () => {} });
    onTestFinished(() => sql.end());
    const [user] = await sql`
      insert into users (username, initial_balance, balance) values ('ada', 10, 10) returning id`;
    await sql`
      insert into reservations (order_id, user_id, amount, status) values (gen_random_uuid(), ${user?.id}, 5, 'REJECTED')`;
    await sql`create table known_orders (id uuid primary key)`;
    await sql`
      alter table reservations add constraint reservations_order_known
      foreign key (order_id) references known_orders (id) not valid`;
    await expect(
      validateConstraints(sql, [{ table: "reservations", name: "reservations_order_known" }]),
    ).rejects.toThrow(/rows of reservations written before its constraint reservations_order_known break it/);
  });

  // A constraint a migration adds NOT VALID and does not name would stay unchecked for ever.
  it.each(["user", "order"] as const)(
    "names every constraint the %s migrations add NOT VALID",
    async (service) => {
      const folder = MIGRATIONS_FOLDER[service];
      const added: { table: string; name: string }[] = [];
      for (const file of (await readdir(folder)).filter((f) => f.endsWith(".sql")).sort()) {
        const text = await readFile(join(folder, file), "utf8");
        for (const m of text.matchAll(/^ALTER TABLE "(\w+)" ADD CONSTRAINT "(\w+)"[^;]*\bNOT VALID\b/gim))
          added.push({ table: m[1] ?? "", name: m[2] ?? "" });
      }
      expect(ADDED_NOT_VALID[service]).toEqual(added);
    },
  );
});

// The order-service's cancels use uuidv7() and RETURNING OLD (PostgreSQL 18): on an older server it would
// take orders and fail every DELETE and every deadline sweep, so it must not start there.
describe("serverVersionRefusal", () => {
  it("refuses the order database on a server before PostgreSQL 18, in one line that says why", () => {
    const refusal = serverVersionRefusal("order", 170_005);
    expect(refusal).toBe(
      "the order database needs PostgreSQL 18 or later (its cancels use uuidv7() and RETURNING OLD); this server is 17 (server_version_num 170005)",
    );
    expect(serverVersionRefusal("order", 140_000)).toMatch(/PostgreSQL 18 or later.*this server is 14 /);
  });

  it("accepts the order database on PostgreSQL 18 and later, and the user database on an older one", () => {
    expect(serverVersionRefusal("order", 180_000)).toBeUndefined();
    expect(serverVersionRefusal("order", 190_002)).toBeUndefined();
    expect(serverVersionRefusal("user", 140_000)).toBeUndefined();
  });

  it("passes the test server, which migrates the order database", async () => {
    const url = await freshDatabase("order_db");
    const sql = postgres(url, { max: 1, onnotice: () => {} });
    onTestFinished(() => sql.end());
    const [row] = await sql<{ num: number }[]>`select current_setting('server_version_num')::int as num`;
    expect(serverVersionRefusal("order", row?.num ?? 0)).toBeUndefined();
    await expect(migrateDatabase(url, "order")).resolves.toEqual({ unknownMigrations: 0 });
  });
});
