/**
 * The LISTEN connection behind `Prefer: wait`, on its own: its lifetime. The held reads over HTTP, on
 * several instances, are in wait.int.test.ts.
 */
import { randomUUID } from "node:crypto";
import { createPgDatabase, DEFAULT_SESSION_TIMEOUTS, migrateDatabase, orderSchema } from "@saga/db";
import { createLogger } from "@saga/observability";
import { freshDatabase } from "@saga/tools/test/harness";
import { describe, expect, it, onTestFinished } from "vitest";
import { SAGAS_FINISHED_CHANNEL } from "../src/domain/apply-credit-batch.ts";
import { readOrders } from "../src/domain/order-hot-path.ts";
import { createOrderWaits } from "../src/order-waits.ts";

/**
 * Held reads' waits on a fresh order database, listening as `name` (its LISTEN connection's
 * application_name is `<name>/waits`) with a lifetime of `lifetimeMs`; `finished()` is the sum of the
 * finished sagas it has heard.
 */
async function listening(name: string, lifetimeMs: number) {
  const url = await freshDatabase(name.replace("-", "_"));
  await migrateDatabase(url, "order");
  const db = createPgDatabase(url, orderSchema, { max: 2, applicationName: "test" });
  onTestFinished(() => db.close());
  let heard = 0;
  const waits = createOrderWaits({
    databaseUrl: url,
    applicationName: name,
    timeouts: DEFAULT_SESSION_TIMEOUTS,
    readOrders: (ids) => readOrders(db.pool, ids),
    onSagasFinished: (n) => {
      heard += n;
    },
    logger: createLogger("order-service", process.env.TEST_LOG_LEVEL ?? "error"),
    listenLifetimeMs: lifetimeMs,
  });
  await waits.start();
  onTestFinished(() => waits.stop());
  return { db, waits, finished: () => heard };
}

describe("the LISTEN connection of the held reads", () => {
  it("is replaced once it has lived its lifetime, so that a server a failover left up does not keep it, and hears on the new one", async () => {
    const { db, waits, finished } = await listening("waits-lifetime", 1000);
    const listeners = async (): Promise<number[]> =>
      (
        await db.pool.query<{ pid: number }>(
          "select pid from pg_stat_activity where application_name = 'waits-lifetime/waits'",
        )
      ).rows.map((row) => row.pid);
    const [first] = await listeners();
    expect(first).toBeDefined();

    const id = randomUUID();
    await db.pool.query("insert into orders (id, user_id, amount, status) values ($1, $2, 7, 'PENDING')", [
      id,
      randomUUID(),
    ]);
    const answer = waits.awaitDecision(id, 20, async () => (await readOrders(db.pool, [id]))[0]);
    // Held on the first connection; another one, alone, listens in its place.
    await expect
      .poll(
        async () => {
          const pids = await listeners();
          return pids.length === 1 && pids[0] !== first;
        },
        { timeout: 10_000, interval: 50 },
      )
      .toBe(true);
    expect(waits.waiting()).toBe(1);

    await db.pool.query("update orders set status = 'CONFIRMED' where id = $1", [id]);
    expect(await answer).toMatchObject({ order: { id, status: "CONFIRMED" }, applied: true });
    await db.pool.query("select pg_notify($1, '5')", [SAGAS_FINISHED_CHANNEL]);
    await expect.poll(finished, { timeout: 5000 }).toBe(5);
  });

  it("through replacements of its connection, hears every decision and counts no batch of finished sagas twice", async () => {
    const { db, waits, finished } = await listening("waits-churn", 300);

    const ids = Array.from({ length: 20 }, () => randomUUID());
    await db.pool.query(
      "insert into orders (id, user_id, amount, status) select id, gen_random_uuid(), 7, 'PENDING' from unnest($1::uuid[]) as id",
      [ids],
    );
    const answers = ids.map((id) =>
      waits.awaitDecision(id, 20, async () => (await readOrders(db.pool, [id]))[0]),
    );
    await expect.poll(() => waits.waiting()).toBe(20);

    // One decision and one finished saga every 100 ms, for two seconds: the connection is replaced
    // several times meanwhile.
    const backends = new Set<number>();
    for (const id of ids) {
      await db.pool.query("update orders set status = 'CONFIRMED' where id = $1", [id]);
      await db.pool.query("select pg_notify($1, '1')", [SAGAS_FINISHED_CHANNEL]);
      const { rows } = await db.pool.query<{ pid: number }>(
        "select pid from pg_stat_activity where application_name = 'waits-churn/waits'",
      );
      for (const row of rows) backends.add(row.pid);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    expect(backends.size).toBeGreaterThan(2);
    // Each held read was answered with its decision, none at its deadline.
    for (const [i, answer] of (await Promise.all(answers)).entries())
      expect(answer, `order ${i}`).toMatchObject({
        order: { id: ids[i], status: "CONFIRMED" },
        applied: true,
      });

    // A count of 1000, sent until it is heard (one sent while the connection is being replaced may not be),
    // says that every count sent before it has been delivered: none was counted twice.
    let markers = 0;
    await expect
      .poll(
        async () => {
          await db.pool.query("select pg_notify($1, '1000')", [SAGAS_FINISHED_CHANNEL]);
          markers++;
          return finished() >= 1000;
        },
        { timeout: 5000, interval: 100 },
      )
      .toBe(true);
    expect(finished() % 1000).toBeLessThanOrEqual(ids.length);
    expect(Math.floor(finished() / 1000)).toBeLessThanOrEqual(markers);
  });
});
