import { TOPICS } from "@saga/contracts";
import { createLogger } from "@saga/observability";
import { kafkaBrokers } from "@saga/tools/test/harness";
import postgres from "postgres";
import { describe, expect, it, onTestFinished } from "vitest";
import type { CrashPoint, Env } from "../src/env.ts";
import { createOutboxStore } from "../src/outbox-store.ts";
import { createRelayService } from "../src/service.ts";
import { endedBefore } from "../src/visibility.ts";
import {
  allPublished,
  backlog,
  eventually,
  expectEveryRowInOrder,
  freshOutbox,
  freshTopicPrefix,
  holdSynchronousCommits,
  metricValue,
  ownPostgresServer,
  readAll,
  relayEnv,
  releaseSynchronousCommits,
  row,
  spawnRelay,
  type TestRow,
  writeHeld,
  writeRows,
} from "./support.ts";

// RELAY_MODE=cdc: rows are sent as the replication stream delivers them, the table is read only to catch up.

// A server of this file's own (see ownPostgresServer).
const ownServerUrl = ownPostgresServer();
const ownOutbox = () => freshOutbox("order", ownServerUrl());

/**
 * A CDC relay in this process whose reads of the table and marking statements are counted, and its
 * catch-up checks: a read that follows a stream's catch-up boundary (its snapshot is taken in between).
 */
function startCountingRelay(url: string, prefix: string, overrides: Partial<Env> = {}) {
  let reads = 0;
  let marks = 0;
  let catchUpChecks = 0;
  let boundaryTaken = false;
  const relay = createRelayService(
    // A ten-minute poll: nothing but the stream (or a catch-up after a reconnection) publishes a row.
    relayEnv(url, prefix, { RELAY_MODE: "cdc", RELAY_POLL_INTERVAL_MS: 600_000, ...overrides }),
    {
      logger: createLogger("relay", process.env.TEST_LOG_LEVEL ?? "fatal"),
      createStore: (sql, options) => {
        const store = createOutboxStore(sql, options);
        return {
          ...store,
          catchUpBoundary: (signal) => {
            boundaryTaken = true;
            return store.catchUpBoundary(signal);
          },
          readBatch: (limit, signal) => {
            reads++;
            if (boundaryTaken) catchUpChecks++;
            boundaryTaken = false;
            return store.readBatch(limit, signal);
          },
          markPublished: (ids, sinceAck, signal) => {
            marks++;
            return store.markPublished(ids, sinceAck, signal);
          },
        };
      },
    },
  );
  relay.start();
  onTestFinished(() => relay.stop());
  const metric = async (name: string) =>
    metricValue(await (await relay.app.request("/metrics")).text(), name, { outbox: "order" });
  return { relay, reads: () => reads, marks: () => marks, catchUpChecks: () => catchUpChecks, metric };
}

/** Waits until the relay publishes from the stream (connected, and the table read once since). */
function streaming(metric: (name: string) => Promise<number | undefined>) {
  // Creating the slot waits for every transaction open on the server, which other test files may hold.
  return eventually(
    "the relay to publish from the stream",
    async () => (await metric("saga_relay_streaming")) === 1,
    60_000,
  );
}

/** Transactions as the services write them: each locks its aggregates; several commit at once. */
async function writeConcurrently(sql: postgres.Sql, transactions: number, aggregates: number) {
  const written: TestRow[] = [];
  await Promise.all(
    Array.from({ length: transactions }, async (_, tx) => {
      const rows = Array.from({ length: 1 + (tx % 3) }, (_, i) =>
        row(
          `order-${(tx + i) % aggregates}`,
          tx * 10 + i,
          i % 2 ? TOPICS.orderCanceled : TOPICS.orderCreated,
        ),
      );
      written.push(...(await writeRows(sql, rows)));
    }),
  );
  return written;
}

/** A transaction with an id, left open until `end()`; `pid` is its session's. */
async function openTransaction(sql: postgres.Sql): Promise<{ pid: number; end: () => Promise<void> }> {
  let end: () => void = () => {};
  const ending = new Promise<void>((resolve) => {
    end = resolve;
  });
  let started: (pid: number) => void = () => {};
  const pid = new Promise<number>((resolve) => {
    started = resolve;
  });
  const done = sql.begin(async (tx) => {
    const [session] = await tx<{ pid: number }[]>`select pg_backend_pid() as pid, pg_current_xact_id()`;
    started(session?.pid ?? 0);
    await ending;
  });
  onTestFinished(() => {
    end();
    return done.then(() => {});
  });
  return {
    pid: await Promise.race([pid, done.then(() => 0)]),
    end: async () => {
      end();
      await done;
    },
  };
}

/** Ends the WAL sender of the relay's stream: its temporary slot goes with it, and the relay makes another. */
async function endStream(sql: postgres.Sql): Promise<void> {
  const [ended] = await sql<{ n: number }[]>`
    select count(pg_terminate_backend(active_pid))::int as n from pg_replication_slots
    where database = current_database() and active_pid is not null`;
  expect(ended?.n).toBe(1);
}

/** Waits until the WAL sender creating a slot waits for the transaction of session `pid` to end. */
function slotWaitsFor(sql: postgres.Sql, pid: number) {
  return eventually("the new slot to wait for the open transaction", async () => {
    const [r] = await sql<{ n: number }[]>`
      select count(*)::int as n from pg_stat_activity
      where backend_type = 'walsender' and datname = current_database()
        and ${pid}::int = any(pg_blocking_pids(pid))`;
    return r?.n === 1;
  });
}

/** A row of aggregate `steady` every ~200 ms until the test ends, except between `pause()` and `resume()`. */
function writeSteadily(sql: postgres.Sql) {
  const written: TestRow[] = [];
  let paused = false;
  let stopped = false;
  let writing: Promise<unknown> = Promise.resolve();
  const loop = (async () => {
    for (let seq = 0; !stopped; seq++) {
      if (!paused) {
        writing = writeRows(sql, [row("steady", seq)]).then((rows) => written.push(...rows));
        await writing;
      }
      await new Promise((r) => setTimeout(r, 200));
    }
  })();
  const stop = () => {
    stopped = true;
    return loop;
  };
  onTestFinished(stop);
  return {
    written,
    /** Resolves once the write in flight, if any, has committed. */
    pause: () => {
      paused = true;
      return writing;
    },
    resume: () => {
      paused = false;
    },
    stop,
  };
}

describe("relay in the CDC mode", () => {
  it("publishes what the stream carries in commit order per aggregate, without reading the table", async () => {
    const { url, sql } = await ownOutbox();
    const prefix = await freshTopicPrefix();
    const { reads, metric } = startCountingRelay(url, prefix);
    await streaming(metric);
    const readsBefore = reads();

    const written = await writeConcurrently(sql, 60, 7);
    // T1 takes the lower position and commits last: the stream, in commit order, sends it after T2.
    let commitT1: () => void = () => {};
    const t1 = sql.begin(async (tx) => {
      await tx`select pg_advisory_xact_lock(hashtextextended('late', 0))`;
      const [r] = await tx<TestRow[]>`
        insert into outbox ${tx(row("late", 1))} returning id, aggregate_id as "aggregateId", topic, position::text as position`;
      await new Promise<void>((resolve) => {
        commitT1 = resolve;
      });
      return r as TestRow;
    });
    onTestFinished(() => commitT1());
    written.push(...(await writeRows(sql, [row("early", 1), row("early", 2)])));
    await eventually("T2's rows to be published", async () => {
      const [r] = await sql<{ n: number }[]>`
        select count(*)::int as n from outbox where aggregate_id = 'early' and published_at is not null`;
      return r?.n === 2;
    });
    // T1's row is not committed, so not in the backlog either.
    expect(await backlog(sql)).toBe(0);
    commitT1();
    written.push(await t1, ...(await writeRows(sql, [row("late", 2)])));
    await allPublished(sql);

    expect(expectEveryRowInOrder(written, await readAll(prefix), prefix)).toBe(0);
    expect(reads(), "reads of the table while streaming").toBe(readsBefore);
    expect(await metric("saga_relay_rows_published_total")).toBe(written.length);
    expect(await metric("saga_relay_outbox_backlog")).toBe(0);
    // Every row is marked, with the moment its send was acknowledged: one per send.
    const [marks] = await sql<{ rows: number; marks: number }[]>`
      select count(*)::int as rows, count(distinct published_at)::int as marks from outbox where published_at is not null`;
    expect(marks?.rows).toBe(written.length);
    expect(marks?.marks).toBe(await metric("saga_relay_batch_size_count"));
  });

  it("marks the rows of several sends with one statement, each with the time of its acknowledgement", async () => {
    const { url, sql } = await ownOutbox();
    const prefix = await freshTopicPrefix();
    const { marks, metric } = startCountingRelay(url, prefix, { RELAY_MARK_INTERVAL_MS: 5000 });
    await streaming(metric);
    const marksBefore = marks();

    const written: TestRow[] = [];
    for (let seq = 0; seq < 5; seq++) {
      written.push(...(await writeRows(sql, [row(`order-${seq % 2}`, seq)])));
      // On Kafka before the next is written: a send of its own.
      await eventually(
        "the row to be acknowledged",
        async () => (await metric("saga_relay_rows_published_total")) === written.length,
      );
    }
    expect(await metric("saga_relay_batch_size_count")).toBe(5);
    // On Kafka, not marked yet (the first waits 5 s from its acknowledgement): unpublished in the table,
    // while the backlog gauge counts only what is not on Kafka. (A scrape reuses a backlog read for
    // 250 ms: past that, a read of its own.)
    await new Promise((r) => setTimeout(r, 300));
    expect(await metric("saga_relay_outbox_backlog")).toBe(0);
    expect(await metric("saga_relay_outbox_lag_seconds")).toBe(0);
    expect(await backlog(sql), "still unmarked after the gauges were read").toBe(5);
    await allPublished(sql);
    expect(marks() - marksBefore, "marking statements").toBe(1);

    // Each row says when Kafka acknowledged it, not when it was marked. Each was written after the one
    // before it was acknowledged, so the first and last acknowledgements lie further apart than the
    // second and last writes. Compared as spans: the whole mark is stamped late by as long as its
    // statement waited to start (20 s once, in a starved CI run).
    const stamps = await sql<{ id: string; createdAt: Date; publishedAt: Date }[]>`
      select id::text, created_at as "createdAt", published_at as "publishedAt" from outbox order by position`;
    const span = (from: Date | undefined, to: Date | undefined) =>
      (to?.getTime() ?? 0) - (from?.getTime() ?? 0);
    expect(span(stamps[0]?.publishedAt, stamps.at(-1)?.publishedAt)).toBeGreaterThan(
      span(stamps[1]?.createdAt, stamps.at(-1)?.createdAt),
    );
    expect(new Set(stamps.map((s) => s.publishedAt.getTime())).size, "distinct marking times").toBe(5);
    expect(expectEveryRowInOrder(written, await readAll(prefix), prefix)).toBe(0);
  });

  it("under load, lets the rows about to arrive share a send, each aggregate's in order", async () => {
    const { url, sql } = await ownOutbox();
    const prefix = await freshTopicPrefix();
    const { metric } = startCountingRelay(url, prefix, { RELAY_LINGER_MS: 1000 });
    await streaming(metric);

    // One row a transaction, 50 ms apart for 3 s: without the linger, a send carries a row or two.
    const written: TestRow[] = [];
    for (let seq = 0; seq < 60; seq++) {
      written.push(...(await writeRows(sql, [row(`order-${seq % 4}`, seq)])));
      await new Promise((r) => setTimeout(r, 50));
    }
    await allPublished(sql);
    expect(await metric("saga_relay_rows_published_total")).toBe(60);
    // A second's linger: a send or four, where 20 carried them without it.
    expect(await metric("saga_relay_batch_size_count"), "sends").toBeLessThanOrEqual(10);
    expect(expectEveryRowInOrder(written, await readAll(prefix), prefix)).toBe(0);
  });

  it("sends a lingering batch as soon as RELAY_LINGER_ROWS rows wait, not at the linger's end", async () => {
    const { url, sql } = await ownOutbox();
    const prefix = await freshTopicPrefix();
    // A linger longer than the wait for the backlog: only the row count ends it, and the marks falling
    // due (the last sends' rows count as published only once marked).
    const { metric } = startCountingRelay(url, prefix, { RELAY_LINGER_MS: 120_000, RELAY_LINGER_ROWS: 5 });
    await streaming(metric);

    const written: TestRow[] = [];
    for (let seq = 0; seq < 30; seq += 5) {
      const rows = [0, 1, 2, 3, 4].map((i) => row(`order-${(seq + i) % 3}`, seq + i));
      written.push(...(await writeRows(sql, rows)));
      await new Promise((r) => setTimeout(r, 100));
    }
    await allPublished(sql);
    expect(await metric("saga_relay_rows_published_total")).toBe(30);
    expect(expectEveryRowInOrder(written, await readAll(prefix), prefix)).toBe(0);
  });

  it("falls back to the table when its slot is lost, then streams again", async () => {
    const { url, sql } = await ownOutbox();
    const prefix = await freshTopicPrefix();
    const { relay, reads, metric } = startCountingRelay(url, prefix);
    await streaming(metric);
    const before = await writeConcurrently(sql, 10, 3);
    await allPublished(sql);

    // The rows written until a new slot is streaming are in no stream at all.
    await endStream(sql);
    const during = await writeConcurrently(sql, 10, 3);
    await allPublished(sql);
    await streaming(metric);
    const readsAfterReconnect = reads();
    const after = await writeConcurrently(sql, 10, 3);
    await allPublished(sql);

    const written = [...before, ...during, ...after];
    expectEveryRowInOrder(written, await readAll(prefix), prefix);
    expect(readsAfterReconnect, "the table was read to catch up").toBeGreaterThan(0);
    expect(reads(), "no reads once streaming again").toBe(readsAfterReconnect);
    const text = await (await relay.app.request("/metrics")).text();
    for (const stage of ["read", "send", "mark"])
      expect(metricValue(text, "saga_relay_errors_total", { outbox: "order", stage }), stage).toBe(0);
  });

  it("does not send a streamed transaction before it is visible to other sessions", async () => {
    const { url, sql } = await ownOutbox();
    const prefix = await freshTopicPrefix();
    const { reads, metric } = startCountingRelay(url, prefix);
    await streaming(metric);
    const wakeupsBefore = (await metric("saga_relay_wakeups_total")) ?? 0;

    // A writer held between its WAL flush and its visibility (see writeHeld).
    await holdSynchronousCommits(ownServerUrl());
    onTestFinished(() => releaseSynchronousCommits(ownServerUrl()));
    const { committed: held } = await writeHeld(sql, row("held", 1));
    await eventually(
      "the relay to receive the held transaction",
      async () => ((await metric("saga_relay_wakeups_total")) ?? 0) > wakeupsBefore,
    );
    expect(await backlog(sql), "the held row, invisible").toBe(0);

    // A transaction committed after the held one, on another aggregate: it is published meanwhile (from
    // the table, once the relay gives up waiting on the stream), and the held row is not on Kafka then.
    const [other] = await writeRows(sql, [row("other", 1)]);
    await allPublished(sql);
    expect(
      (await readAll(prefix)).map((m) => m.key),
      "on Kafka while the writer is held",
    ).toEqual(["other"]);

    expect(await metric("saga_relay_visibility_waits_total")).toBeGreaterThanOrEqual(1);

    // Released: the held row is published (from the table: the next stream's slot waited for its
    // commit), and once a new stream is up the relay publishes from it again.
    await releaseSynchronousCommits(ownServerUrl());
    const heldRow = await held;
    await allPublished(sql);
    await streaming(metric);
    const readsAfter = reads();
    const later = await writeRows(sql, [row("held", 2), row("other", 2)]);
    await allPublished(sql);
    expect(reads(), "reads of the table once streaming again").toBe(readsAfter);
    const written = [heldRow, other as TestRow, ...later];
    expect(expectEveryRowInOrder(written, await readAll(prefix), prefix), "duplicates").toBe(0);
  });

  it("does not count a read as caught up while the newest transaction still runs", async () => {
    const { sql } = await ownOutbox();
    const store = createOutboxStore(sql);
    // The newest transaction id handed out, still running: as a commit flushed (so possibly before a
    // new slot's starting point) and not yet visible is, while it waits for a synchronous standby.
    const newest = await openTransaction(sql);
    const boundary = await store.catchUpBoundary();
    expect(endedBefore(boundary, await store.currentSnapshot()), "while it runs").toBe(false);
    await newest.end();
    expect(endedBefore(boundary, await store.currentSnapshot()), "once it ended").toBe(true);
  });

  it("publishes a commit that preceded a new stream's starting point and became visible after it", async () => {
    const { url, sql } = await ownOutbox();
    const prefix = await freshTopicPrefix();
    // Nothing reads the table for ten minutes once the relay streams (see startCountingRelay).
    const { metric, catchUpChecks } = startCountingRelay(url, prefix);
    await streaming(metric);
    await holdSynchronousCommits(ownServerUrl());
    onTestFinished(() => releaseSynchronousCommits(ownServerUrl()));
    const steady = writeSteadily(sql);

    // A new stream whose slot becomes consistent while T is held. Creating a slot waits for the
    // transactions running when it starts (X1), then for those running once they ended (X2), and for
    // none started after that: T, whose commit record then precedes the slot's starting point, so the
    // stream never carries it; only a read of the table can, once T is visible.
    const x1 = await openTransaction(sql);
    await endStream(sql);
    await slotWaitsFor(sql, x1.pid);
    const x2 = await openTransaction(sql);
    await x1.end();
    await slotWaitsFor(sql, x2.pid);
    // T is the newest transaction while the relay checks its catch-up: nothing else writes meanwhile.
    await steady.pause();
    await allPublished(sql);
    const { committed: held } = await writeHeld(sql, row("held", 1), { streamed: false });
    const checksBefore = catchUpChecks();
    await x2.end();
    await eventually("the relay to check its catch-up", async () => catchUpChecks() > checksBefore);

    // The other aggregate goes on writing, published while T is held.
    steady.resume();
    const resumedAt = steady.written.length;
    await eventually("more rows of the other aggregate", async () => steady.written.length >= resumedAt + 3);
    await allPublished(sql);
    expect((await readAll(prefix)).map((m) => m.key)).not.toContain("held");

    await releaseSynchronousCommits(ownServerUrl());
    const heldRow = await held;
    await eventually("the held row to be published", async () => {
      const [r] = await sql<{ published: boolean }[]>`
        select published_at is not null as published from outbox where id = ${heldRow.id}`;
      return r?.published === true;
    });
    await steady.stop();
    await allPublished(sql);
    expectEveryRowInOrder([...steady.written, heldRow], await readAll(prefix), prefix);
    // Caught up once T ended: publishing from the stream again.
    await streaming(metric);
  });

  it("publishes a transaction larger than the stream may hold from the table, in batches of RELAY_BATCH_SIZE, each row once and in order", async () => {
    const { url, sql } = await ownOutbox();
    const prefix = await freshTopicPrefix();
    // The stream holds at most 10 × RELAY_BATCH_SIZE rows (500), a transaction at most half of them.
    const { relay, reads, metric } = startCountingRelay(url, prefix, { RELAY_BATCH_SIZE: 50 });
    await streaming(metric);
    const readsBefore = reads();

    const written = await writeRows(sql, [row("order-1", 0)]);
    // A bulk insert: one transaction of 5,000 rows, between rows streamed before and after it.
    const bulk = Array.from({ length: 5000 }, (_, i) => row(`order-${i % 7}`, i + 1));
    written.push(...(await writeRows(sql, bulk)));
    written.push(...(await writeRows(sql, [row("order-1", 5001), row("order-2", 5002)])));
    await allPublished(sql, 60_000);

    expect(expectEveryRowInOrder(written, await readAll(prefix), prefix), "copies on Kafka").toBe(0);
    const metrics = await (await relay.app.request("/metrics")).text();
    const value = (name: string, labels: Record<string, string> = {}) =>
      metricValue(metrics, name, { outbox: "order", ...labels });
    // Never all 5,000 at once: from the table, RELAY_BATCH_SIZE at a time.
    expect(value("saga_relay_batch_size_bucket", { le: "50" }), "batches of at most 50 rows").toBe(
      value("saga_relay_batch_size_count"),
    );
    expect(reads() - readsBefore, "reads of the table").toBeGreaterThanOrEqual(bulk.length / 50);
    expect(value("saga_relay_errors_total", { stage: "send" }), "send errors").toBe(0);
    // Then from the stream again.
    await streaming(metric);
  });

  const crashes: { point: CrashPoint; resent: boolean }[] = [
    { point: "before-send", resent: false },
    // Acknowledged by Kafka, neither marked nor confirmed: sent again.
    { point: "after-send", resent: true },
  ];
  it.each(crashes)(
    "killed with SIGKILL $point a streamed batch, loses nothing and keeps each key's order",
    async ({ point, resent }) => {
      const { url, sql } = await ownOutbox();
      const prefix = await freshTopicPrefix();
      const env = {
        ORDER_DB_URL: url,
        KAFKA_BROKERS: kafkaBrokers().join(","),
        KAFKA_TOPIC_PREFIX: prefix,
        RELAY_MODE: "cdc",
        RELAY_POLL_INTERVAL_MS: "600000",
      };
      const doomed = spawnRelay({ ...env, RELAY_ID: "doomed", RELAY_TEST_CRASH_AT: point });
      await eventually(
        "the doomed relay to stream",
        async () => metricValue(await doomed.metrics(), "saga_relay_streaming", { outbox: "order" }) === 1,
        60_000,
      );
      const written = await writeConcurrently(sql, 40, 6);
      expect(await doomed.exited, doomed.output()).toBe("SIGKILL");
      // Nothing was marked; what Kafka has is the batch sent before the kill, or nothing.
      expect(await backlog(sql)).toBe(written.length);
      const onKafkaAtCrash = (await readAll(prefix)).length;
      if (resent) expect(onKafkaAtCrash).toBeGreaterThan(0);
      else expect(onKafkaAtCrash).toBe(0);
      // Its slot was temporary: a dead relay holds back no WAL.
      await eventually("the slot to be dropped", async () => {
        const [r] = await sql<{ n: number }[]>`
          select count(*)::int as n from pg_replication_slots where database = current_database()`;
        return r?.n === 0;
      });

      const survivor = spawnRelay({ ...env, RELAY_ID: "survivor", LOG_LEVEL: "debug" });
      await allPublished(sql).catch((err: Error) => {
        throw new Error(`${err.message}; the survivor logged:\n${survivor.output()}`, { cause: err });
      });
      const duplicates = expectEveryRowInOrder(written, await readAll(prefix), prefix);
      expect(duplicates).toBe(onKafkaAtCrash);
      expect(await survivor.kill("SIGTERM")).toBe(0);
    },
  );
});
