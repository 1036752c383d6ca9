import { spawn } from "node:child_process";
import { existsSync, realpathSync } from "node:fs";
import { mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pg from "pg";
import { describe, expect, onTestFinished, test } from "vitest";
import { freshDatabase, postgresUrl, useFreshDatabase } from "../test/harness.ts";
import { createDatabase, databaseUrl, dropDatabase } from "./admin.ts";
import { freePort } from "./ports.ts";
import { postgresAccount, REPLICATION_SETTINGS, removeDataDir, startPostgres } from "./postgres.ts";

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

  // Whichever way it was started (locally, in Docker): the settings compose.yaml is held to.
  test("the server has the relay's replication settings", async () => {
    for (const [name, value] of Object.entries(REPLICATION_SETTINGS)) {
      const [row] = await query<{ value: string }>(postgresUrl(), "SELECT current_setting($1) AS value", [
        name,
      ]);
      expect(row?.value, name).toBe(String(value));
    }
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

// `npm start` and `npm test` cloned into a directory only root can enter (root's home, a fresh mktemp -d):
// PostgreSQL refuses to run as root, and the account it runs as cannot enter the repo.
describe.runIf(process.getuid?.() === 0)("a data directory inside a directory only root can enter", () => {
  test("the server starts, keeps its data across a restart, and the clean-up removes it", async () => {
    const privateDir = await mkdtemp(join(tmpdir(), "saga-private-"));
    onTestFinished(() => rm(privateDir, { recursive: true, force: true }));
    expect((await stat(privateDir)).mode & 0o777).toBe(0o700);
    const dataDir = join(privateDir, "postgres");
    const port = await freePort();
    const first = await startPostgres({ dataDir, port, durable: false, logFile: join(privateDir, "pg.log") });
    try {
      await query(first.url, "CREATE DATABASE kept_here");
    } finally {
      await first.stop();
    }
    const second = await startPostgres({
      dataDir,
      port,
      durable: false,
      logFile: join(privateDir, "pg.log"),
    });
    try {
      const rows = await query<{ datname: string }>(
        second.url,
        "SELECT datname FROM pg_database WHERE datname = 'kept_here'",
      );
      expect(rows).toEqual([{ datname: "kept_here" }]);
    } finally {
      await second.stop();
    }
    const moved = realpathSync(dataDir);
    expect(moved).not.toBe(dataDir);
    await removeDataDir(dataDir);
    expect(existsSync(moved)).toBe(false);
    expect(existsSync(dataDir)).toBe(false);
  });
});

// After a host crash or an OOM kill, postmaster.pid is left behind, and its PID may by now be another process
// of PostgreSQL's account (PIDs are reused after a reboot): PostgreSQL refused to start, for good.
test("a postmaster.pid left by an unclean end, naming a live process that is not PostgreSQL, does not stop a start", async () => {
  const dir = await mkdtemp(join(tmpdir(), "saga-stale-pid-"));
  onTestFinished(() =>
    removeDataDir(join(dir, "postgres")).then(() => rm(dir, { recursive: true, force: true })),
  );
  const dataDir = join(dir, "postgres");
  const port = await freePort();
  await (await startPostgres({ dataDir, port, durable: false, logFile: join(dir, "pg.log") })).stop();

  // Alive, and PostgreSQL's account may signal it: PostgreSQL takes it for a server still running.
  const other = spawn("sleep", ["600"], { stdio: "ignore", ...postgresAccount() });
  onTestFinished(() => void other.kill("SIGKILL"));
  const pidFile = join(realpathSync(dataDir), "postmaster.pid");
  await writeFile(
    pidFile,
    `${other.pid}\n${realpathSync(dataDir)}\n1700000000\n${port}\n\n127.0.0.1\n  0 0\nready   \n`,
  );

  const lines: string[] = [];
  const server = await startPostgres({
    dataDir,
    port,
    durable: false,
    logFile: join(dir, "pg.log"),
    log: (line) => lines.push(line),
  });
  try {
    expect(await query(server.url, "SELECT 1 AS one")).toEqual([{ one: 1 }]);
    expect(lines.join("\n")).toContain(`stale postmaster.pid (PID ${other.pid}`);
    // The file is the new server's now.
    expect((await readFile(pidFile, "utf8")).split("\n")[0]).toBe(String(server.pid));
  } finally {
    await server.stop();
  }
  expect(other.exitCode).toBeNull();
});

test("a second server on a data directory in use is still refused", async () => {
  const dir = await mkdtemp(join(tmpdir(), "saga-in-use-"));
  onTestFinished(() =>
    removeDataDir(join(dir, "postgres")).then(() => rm(dir, { recursive: true, force: true })),
  );
  const dataDir = join(dir, "postgres");
  const running = await startPostgres({
    dataDir,
    port: await freePort(),
    durable: false,
    logFile: join(dir, "pg.log"),
  });
  try {
    await expect(
      startPostgres({ dataDir, port: await freePort(), durable: false, logFile: join(dir, "pg.log") }),
    ).rejects.toThrow(/lock file "postmaster.pid" already exists/);
    expect(await query(running.url, "SELECT 1 AS one")).toEqual([{ one: 1 }]);
  } finally {
    await running.stop();
  }
});
