import { chmod, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freePort, startPostgres } from "@saga/tools/infra";
import { freshDatabase } from "@saga/tools/test/harness";
import { describe, expect, it, onTestFinished } from "vitest";
import { createPgDatabase, DEFAULT_POOL_MAX_LIFETIME_S } from "./pg-client.ts";
import { isClientQueryTimeout } from "./timeouts.ts";

describe("createPgDatabase", () => {
  it("bounds every session: the server cancels a long statement and ends an idle transaction", async () => {
    const url = await freshDatabase("pg_client");
    const lost: Error[] = [];
    const db = createPgDatabase(
      url,
      {},
      {
        max: 2,
        timeouts: { statementTimeoutMs: 300, idleInTransactionTimeoutMs: 400 },
        onConnectionError: (err) => lost.push(err),
      },
    );
    onTestFinished(() => db.close());

    const settings = await db.pool.query(
      "select current_setting('statement_timeout') as s, current_setting('idle_in_transaction_session_timeout') as i",
    );
    expect(settings.rows[0]).toEqual({ s: "300ms", i: "400ms" });
    await expect(db.pool.query("select pg_sleep(5)")).rejects.toMatchObject({ code: "57014" });

    const client = await db.pool.connect();
    await client.query("begin");
    await client.query("select 1");
    await expect
      .poll(() => lost.map((e) => (e as { code?: string }).code), { timeout: 10_000 })
      .toContain("25P03");
    client.release(true);
    // The pool replaces what the server ended.
    expect((await db.pool.query("select 1 as one")).rows).toEqual([{ one: 1 }]);
  });

  it("gives up on a server that does not answer at all, destroys that connection and goes on", async () => {
    // A server of this test's own, one of whose backends is frozen with SIGSTOP: it keeps its socket
    // open and answers nothing, as a server behind a lost connection does.
    const dir = await mkdtemp(join(tmpdir(), "pg-client-"));
    // PostgreSQL refuses to run as root, so as root it runs as another account that must reach the directory.
    await chmod(dir, 0o755);
    onTestFinished(() => rm(dir, { recursive: true, force: true }));
    const server = await startPostgres({ dataDir: join(dir, "pg"), port: await freePort(), durable: false });
    onTestFinished(() => server.stop());
    const db = createPgDatabase(
      server.url,
      {},
      { max: 1, timeouts: { statementTimeoutMs: 500, idleInTransactionTimeoutMs: 500 } },
    );
    onTestFinished(() => db.close());

    const backend: number = (await db.pool.query("select pg_backend_pid() as pid")).rows[0].pid;
    process.kill(backend, "SIGSTOP");
    onTestFinished(() => {
      process.kill(backend, "SIGCONT");
    });
    const failure = await db
      .transaction((tx) => tx.execute("select 1"))
      .then(
        () => undefined,
        (err: unknown) => err,
      );
    expect(isClientQueryTimeout(failure), String(failure)).toBe(true);
    // The pool's only client was destroyed, not given back with a statement still pending on it.
    expect((await db.pool.query("select 1 as one")).rows).toEqual([{ one: 1 }]);
  });

  it("plans a named statement once for the session, not again on every execution", async () => {
    const url = await freshDatabase("pg_client_plans");
    const db = createPgDatabase(url, {}, { max: 1 });
    onTestFinished(() => db.close());
    await db.pool.query("create table items (id int primary key, label text)");
    await db.pool.query("insert into items select n, 'item ' || n from generate_series(1, 5000) as n");
    await db.pool.query("analyze items");

    // The shape of the consumers' reads: a few ids out of many, as an array. With the default
    // plan_cache_mode PostgreSQL plans this again on every execution (a custom plan for so short an array
    // is estimated cheaper than the generic one), and planning cost more than running it.
    const byIds = { name: "items-by-ids", text: "select id, label from items where id = any($1::int[])" };
    for (let i = 1; i <= 12; i++) {
      const { rows } = await db.pool.query({ ...byIds, values: [[i, i + 1]] });
      expect(rows.map((r) => r.id)).toEqual([i, i + 1]);
    }
    const { rows } = await db.pool.query(
      "select generic_plans, custom_plans from pg_prepared_statements where name = 'items-by-ids'",
    );
    expect(rows).toEqual([{ generic_plans: "12", custom_plans: "0" }]);
  });

  it("replaces a connection older than its lifetime, so that one made before a failover is not kept for ever", async () => {
    const url = await freshDatabase("pg_client_lifetime");
    const byDefault = createPgDatabase(url, {});
    onTestFinished(() => byDefault.close());
    expect(byDefault.pool.options.maxLifetimeSeconds).toBeLessThanOrEqual(DEFAULT_POOL_MAX_LIFETIME_S);

    const db = createPgDatabase(url, {}, { max: 1, maxLifetimeSeconds: 1 });
    onTestFinished(() => db.close());
    const backend = async (): Promise<number> =>
      (await db.pool.query("select pg_backend_pid() as pid")).rows[0].pid;
    const first = await backend();
    // In use all along, as under steady traffic, which keeps any idle timeout from firing.
    await expect.poll(backend, { timeout: 10_000, interval: 100 }).not.toBe(first);
  });

  it("gives each connection a lifetime of its own, so that those opened together are not all replaced at once", async () => {
    const url = await freshDatabase("pg_client_lifetimes");
    const lifetimeS = 3;
    const db = createPgDatabase(url, {}, { max: 10, maxLifetimeSeconds: lifetimeS });
    onTestFinished(() => db.close());
    // How long each connection lived, from its connect to its removal by the pool, in ms.
    const connectedAt = new Map<unknown, number>();
    const lived: number[] = [];
    db.pool.on("connect", (client) => connectedAt.set(client, performance.now()));
    db.pool.on("remove", (client) => lived.push(performance.now() - (connectedAt.get(client) ?? Number.NaN)));

    // Ten connections opened at once, as at a start, after a failover or in a burst.
    const clients = await Promise.all(Array.from({ length: 10 }, () => db.pool.connect()));
    const backends = await Promise.all(
      clients.map(async (c) => (await c.query("select pg_backend_pid() as pid")).rows[0].pid as number),
    );
    expect(new Set(backends).size).toBe(10);
    for (const client of clients) client.release();

    await expect.poll(() => lived.length, { timeout: 15_000, interval: 50 }).toBe(10);
    // None outlives the bound, and they are spread below it (over its last fifth) rather than all
    // expiring within the same few milliseconds, the whole pool reconnecting at once.
    for (const ms of lived) {
      expect(ms).toBeGreaterThanOrEqual(0.8 * lifetimeS * 1000 - 1);
      expect(ms).toBeLessThan(lifetimeS * 1000 + 1000);
    }
    expect(Math.max(...lived) - Math.min(...lived)).toBeGreaterThan(0.05 * lifetimeS * 1000);
    const { rows } = await db.pool.query<{ n: number }>(
      "select count(*)::int as n from pg_stat_activity where pid = any($1::int[])",
      [backends],
    );
    expect(rows).toEqual([{ n: 0 }]);
  });
});
