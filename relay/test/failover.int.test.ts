import { TOPICS } from "@saga/contracts";
import { kafkaBrokers } from "@saga/tools/test/harness";
import type postgres from "postgres";
import { describe, expect, it, onTestFinished } from "vitest";
import { RELAY_LOCK } from "../src/lease.ts";
import {
  allPublished,
  eventually,
  expectEveryRowInOrder,
  freshOutbox,
  freshTopicPrefix,
  metricValue,
  ownPostgresServer,
  type RelayProcess,
  readAll,
  row,
  spawnRelay,
  type TestRow,
  writeRows,
} from "./support.ts";

// The frozen owners' tests run on a server of this file's own (see ownPostgresServer): the CDC one for the
// slot; the table one because its takeover waits for the server to end the frozen lock session, which took
// over 30 s once on the run's shared server under every package's tests (about 12 s alone).
const ownServerUrl = ownPostgresServer();

const isActive = async (relay: RelayProcess) =>
  metricValue(await relay.metrics(), "saga_relay_active", { outbox: "order" }) === 1;

const published = async (relay: RelayProcess) =>
  metricValue(await relay.metrics(), "saga_relay_rows_published_total", { outbox: "order" }) ?? 0;

/**
 * Waits for the standby to take over from a frozen owner. On a timeout the error says who holds the lock
 * and in what state its session is, with the tail of each relay's log: what a flaky CI run needs.
 */
async function standbyTakesOver(sql: postgres.Sql, owner: RelayProcess, standby: RelayProcess) {
  const frozenAt = Date.now();
  try {
    // About 10 s (the server's idle_session_timeout) plus a try of the standby's; once over 30 s in a CI
    // run with every package's tests at once, so the bound is generous and a timeout says why.
    await eventually("the standby to take over from the frozen owner", () => isActive(standby), 60_000, 200);
    console.log(`takeover from the frozen owner after ${Date.now() - frozenAt} ms`);
  } catch (err) {
    const sessions = await sql`
      select a.application_name, a.state, a.backend_start, a.state_change, a.wait_event, l.granted, now() as now
      from pg_stat_activity a left join pg_locks l on l.pid = a.pid and l.locktype = 'advisory'
        and l.classid = ${RELAY_LOCK[0]} and l.objid = ${RELAY_LOCK[1]}
      where a.datname = current_database() and a.application_name like 'relay/%'`.catch((e) => e);
    const tail = (r: RelayProcess) => r.output().split("\n").slice(-15).join("\n");
    throw new Error(
      `${(err as Error).message}\nsessions: ${JSON.stringify(sessions, null, 1)}\n` +
        `frozen owner logged:\n${tail(owner)}\nstandby logged:\n${tail(standby)}`,
      { cause: err },
    );
  }
}

/** A fresh outbox and topic prefix, and two relays on them with `env` besides. */
async function pairOnFreshOutbox(env: Record<string, string>, server?: string) {
  const { url, sql } = await freshOutbox("order", server);
  const prefix = await freshTopicPrefix();
  const pair = await startPair({
    ORDER_DB_URL: url,
    KAFKA_BROKERS: kafkaBrokers().join(","),
    KAFKA_TOPIC_PREFIX: prefix,
    ...env,
  });
  return { sql, prefix, ...pair };
}

/** Two relay processes on the test's outbox; resolves once exactly one of them owns it. */
async function startPair(env: Record<string, string>) {
  const relays = [spawnRelay({ ...env, RELAY_ID: "a" }), spawnRelay({ ...env, RELAY_ID: "b" })];
  const owner = await eventually("one relay to own the outbox", async () => {
    const active = await Promise.all(relays.map(isActive));
    return active.filter(Boolean).length === 1 ? relays[active.indexOf(true)] : undefined;
  });
  return { owner, standby: relays.find((r) => r !== owner) as RelayProcess };
}

/**
 * Writes all along: 20 orders, 1-3 events per transaction, both topics; `stop(atLeast)` stops once it has
 * written that many rows (however slow the machine) and returns what it wrote.
 */
function startWriter(sql: postgres.Sql) {
  const written: TestRow[] = [];
  let writing = true;
  let seq = 0;
  const done = (async () => {
    while (writing) {
      const order = `order-${seq % 20}`;
      const n = 1 + (seq % 3);
      const rows = Array.from({ length: n }, (_, i) =>
        row(order, seq + i, (seq + i) % 4 === 0 ? TOPICS.orderCanceled : TOPICS.orderCreated),
      );
      seq += n;
      written.push(...(await writeRows(sql, rows)));
      await new Promise((r) => setTimeout(r, 5));
    }
  })();
  // A test that failed midway never calls stop(): end the writes before its pool ends (hooks run last
  // registered first), or they would fail unhandled after the test.
  const settled = done.catch(() => {});
  onTestFinished(async () => {
    writing = false;
    await settled;
  });
  return {
    async stop(atLeast = 0): Promise<TestRow[]> {
      while (written.length < atLeast) await new Promise((r) => setTimeout(r, 20));
      writing = false;
      await done;
      return written;
    },
  };
}

describe("two relays on one outbox", () => {
  it("never reorder a key, and the standby takes over within seconds when the owner is killed", async () => {
    const { sql, prefix, owner, standby } = await pairOnFreshOutbox({
      RELAY_BATCH_SIZE: "50",
    });
    const writer = startWriter(sql);

    // Both stay up for a while: the standby must not publish meanwhile.
    await new Promise((r) => setTimeout(r, 1500));
    expect(await isActive(standby)).toBe(false);
    expect(await published(standby)).toBe(0);

    await owner.kill("SIGKILL");
    const killedAt = Date.now();
    await eventually("the standby to take over", () => isActive(standby), 15_000, 100);
    console.log(`takeover after ${Date.now() - killedAt} ms`);

    await new Promise((r) => setTimeout(r, 1000));
    // Enough rows, written across the takeover, for the order of each key to say something (a fixed time
    // gave 27 rows instead of the hundreds expected on a slow CI host).
    const written = await writer.stop(101);
    await allPublished(sql);
    expectEveryRowInOrder(written, await readAll(prefix), prefix);
    // A graceful stop: the batch in hand is finished, the lock given up, exit code 0.
    expect(await standby.kill("SIGTERM")).toBe(0);
  });

  it("an owner that froze loses the outbox to the standby and stops publishing when it wakes up", async () => {
    const { sql, prefix, owner, standby } = await pairOnFreshOutbox({}, ownServerUrl());
    const before = startWriter(sql);
    await new Promise((r) => setTimeout(r, 500));
    // Frozen idle. A send in flight at the freeze began while it owned the outbox, and its acknowledgement,
    // read after the wake, counts as published then (in a CI run, 22 rows after it had stood down). With
    // nothing in flight, whatever its counter adds from here on it sent after the freeze.
    const writtenBefore = await before.stop();
    await allPublished(sql);
    const publishedBeforeFreeze = await published(owner);

    // Frozen, it can neither publish nor answer its heartbeat: the server ends its lock session after
    // idle_session_timeout (10 s), which releases the lock, and the standby takes over. Rows are written
    // all along: its wake-up stream holds them for it when it wakes.
    owner.child.kill("SIGSTOP");
    const during = startWriter(sql);
    await standbyTakesOver(sql, owner, standby);
    owner.child.kill("SIGCONT");
    await eventually("the old owner to stand down", async () => !(await isActive(owner)), 10_000, 100);
    await new Promise((r) => setTimeout(r, 1500));
    expect(await published(owner), "rows published by the old owner after the freeze").toBe(
      publishedBeforeFreeze,
    );

    const written = [...writtenBefore, ...(await during.stop())];
    await allPublished(sql);
    expectEveryRowInOrder(written, await readAll(prefix), prefix);
  }, 150_000);

  it("an owner frozen with streamed rows in its socket sends none of them when it wakes (cdc)", async () => {
    const { sql, prefix, owner, standby } = await pairOnFreshOutbox(
      {
        RELAY_MODE: "cdc",
        // Woken by nothing but the stream. Resumed from SIGSTOP, the process runs its due timers before it
        // reads its sockets (Linux fails the pending epoll_wait with EINTR, and libuv, past its timeout,
        // goes to the timers): a due poll would read the table first, and the lock session's end would be
        // read during that round trip, by luck rather than by design.
        RELAY_POLL_INTERVAL_MS: "600000",
      },
      ownServerUrl(),
    );
    // Publishing from the stream: a streamed row is sent with no statement of the owner's before it.
    await eventually(
      "the owner to publish from the stream",
      async () => metricValue(await owner.metrics(), "saga_relay_streaming", { outbox: "order" }) === 1,
      60_000,
    );
    const written = await writeRows(sql, [row("order-0", 0), row("order-1", 1)]);
    await allPublished(sql);
    // Idle, nothing in flight: from here on, anything it publishes it publishes after the freeze.
    const publishedBeforeFreeze = await published(owner);
    expect(publishedBeforeFreeze).toBe(written.length);
    const [holder] = await sql<{ name: string }[]>`
      select a.application_name as name from pg_locks l join pg_stat_activity a on a.pid = l.pid
      where l.locktype = 'advisory' and l.granted and l.classid = ${RELAY_LOCK[0]} and l.objid = ${RELAY_LOCK[1]}
        and l.database = (select oid from pg_database where datname = current_database())`;
    expect(holder?.name).toMatch(/^relay\/[ab]\/order$/);

    owner.child.kill("SIGSTOP");
    // Committed while it is frozen: its WAL sender streams them into the frozen process's socket, ahead of
    // the end of its lock session, so they are the first thing it reads when it wakes.
    for (let seq = 2; seq < 12; seq++)
      written.push(...(await writeRows(sql, [row(`order-${seq % 4}`, seq)])));
    const [wal] = await sql<{ lsn: string }[]>`select pg_current_wal_lsn()::text as lsn`;
    await eventually("the frozen owner's WAL sender to have sent them", async () => {
      const [r] = await sql<{ sent: boolean }[]>`
        select r.sent_lsn >= ${wal?.lsn ?? ""}::pg_lsn as sent
        from pg_stat_replication r join pg_stat_activity a on a.pid = r.pid
        where a.datname = current_database() and r.application_name = ${`${holder?.name}/wakeups`}`;
      return r?.sent === true;
    });
    // The server ends its lock session after idle_session_timeout (10 s); the standby takes over and
    // publishes them.
    await standbyTakesOver(sql, owner, standby);
    await allPublished(sql);

    owner.child.kill("SIGCONT");
    await eventually("the old owner to stand down", async () => !(await isActive(owner)), 10_000, 100);
    // Its send, had it made one, is acknowledged well within this.
    await new Promise((r) => setTimeout(r, 1500));
    expect(await published(owner), "rows the old owner published after the takeover").toBe(
      publishedBeforeFreeze,
    );
    expect(expectEveryRowInOrder(written, await readAll(prefix), prefix), "copies on Kafka").toBe(0);
  }, 150_000);
});
