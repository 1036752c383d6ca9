import pg from "pg";
import { describe, expect, test } from "vitest";
import { freshDatabase, postgresUrl, useFreshDatabase } from "../test/harness.ts";
import { createDatabase, databaseUrl, dropDatabase } from "./admin.ts";

async function query<R extends pg.QueryResultRow>(
  url: string,
  sql: string,
  params: unknown[] = [],
): Promise<R[]> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return (await client.query<R>(sql, params)).rows;
  } finally {
    await client.end();
  }
}

describe("the test PostgreSQL server", () => {
  let dropped = "";

  test("freshDatabase gives an empty database of its own that keeps what is written", async () => {
    const url = await freshDatabase("infra");
    dropped = new URL(url).pathname.slice(1);

    expect(dropped).toMatch(/^infra_[0-9a-f]{10}$/);
    expect(await query(url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")).toEqual([]);
    await query(url, "CREATE TABLE t (id int PRIMARY KEY, note text)");
    await query(url, "INSERT INTO t VALUES (1, 'kept')");
    expect(await query(url, "SELECT id, note FROM t")).toEqual([{ id: 1, note: "kept" }]);
  });

  test("the database of a finished test is dropped", async () => {
    expect(dropped).not.toBe("");
    expect(
      await query(postgresUrl(), "SELECT datname FROM pg_database WHERE datname = $1", [dropped]),
    ).toEqual([]);
  });

  test("the server has the settings the services rely on", async () => {
    const [settings] = await query<{ max_connections: string; wal_level: string }>(
      postgresUrl(),
      "SELECT current_setting('max_connections') AS max_connections, current_setting('wal_level') AS wal_level",
    );
    expect(Number(settings?.max_connections)).toBeGreaterThanOrEqual(300);
    expect(settings?.wal_level).toBe("logical");
  });
});

describe("useFreshDatabase", () => {
  let name = "";

  describe("a suite with a database of its own", () => {
    const databaseUrl = useFreshDatabase("suite");

    test("has it from beforeAll on", async () => {
      name = new URL(databaseUrl()).pathname.slice(1);
      expect(name).toMatch(/^suite_[0-9a-f]{10}$/);
      await query(databaseUrl(), "CREATE TABLE shared (id int)");
    });

    test("shares it between its tests", async () => {
      expect(await query(databaseUrl(), "SELECT count(*)::int AS n FROM shared")).toEqual([{ n: 0 }]);
    });
  });

  test("drops it after the suite", async () => {
    expect(await query(postgresUrl(), "SELECT datname FROM pg_database WHERE datname = $1", [name])).toEqual(
      [],
    );
  });

  test("dropDatabase ends a replication connection that holds a temporary slot (a relay's wake-ups)", async () => {
    const name = `infra_slot_${Date.now().toString(36)}`;
    await createDatabase(postgresUrl(), name);
    const url = new URL(databaseUrl(postgresUrl(), name));
    url.searchParams.set("replication", "database");
    const stream = new pg.Client({ connectionString: url.toString() });
    stream.on("error", () => {});
    await stream.connect();
    await stream.query("CREATE_REPLICATION_SLOT test_slot TEMPORARY LOGICAL pgoutput");

    await dropDatabase(postgresUrl(), name);

    expect(await query(postgresUrl(), "SELECT datname FROM pg_database WHERE datname = $1", [name])).toEqual(
      [],
    );
    await stream.end().catch(() => {});
  });
});
