import { type ChildProcess, spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import { chmod, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { HEADERS, TOPICS } from "@saga/contracts";
import { DEFAULT_SESSION_TIMEOUTS, migrateDatabase } from "@saga/db";
import { createKafka, DEFAULT_KAFKA_CLIENT, type IncomingMessage } from "@saga/kafka";
import { createLogger } from "@saga/observability";
import { type FaultProxy, proxiedUrl } from "@saga/tools/fault-proxy";
import {
  createDatabase,
  dropDatabase,
  freePort,
  type PostgresServer,
  startPostgres,
} from "@saga/tools/infra";
import { freshDatabase, freshTopics, kafkaBrokers, uniqueName } from "@saga/tools/test/harness";
import postgres from "postgres";
import { afterAll, beforeAll, expect, onTestFinished } from "vitest";
import type { Env } from "../src/env.ts";
import { createRelayService } from "../src/service.ts";

/** The two topics the tests write to: a key's order is checked per topic. */
const TEST_TOPICS = [TOPICS.orderCreated, TOPICS.orderCanceled] as const;

export type Outbox = {
  url: string;
  sql: postgres.Sql;
};

/**
 * A PostgreSQL server of the calling file's own, started before its tests and removed after them; the
 * getter gives its URL. For the CDC mode: the relay streams only once every transaction that was running
 * on the server when its stream came up has ended (creating a slot waits for them, and pg_snapshot_xmin
 * is server-wide), so on the run's shared server a long transaction of another package's test would keep
 * it reading the table, and the test waiting.
 */
export function ownPostgresServer(): () => string {
  let server: PostgresServer | undefined;
  let dir: string | undefined;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "relay-pg-"));
    // PostgreSQL refuses to run as root, so as root it runs as another account that must reach the directory.
    await chmod(dir, 0o755);
    server = await startPostgres({ dataDir: join(dir, "pg"), port: await freePort(), durable: false });
  }, 120_000);
  afterAll(async () => {
    await server?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });
  return () => {
    if (!server) throw new Error("the file's own PostgreSQL server is not started (call from a test)");
    return server.url;
  };
}

/**
 * A migrated database of the test's own (on `server`, a URL that may CREATE DATABASE, or the run's
 * PostgreSQL), with a pool for the test's writes; both go when it ends.
 */
export async function freshOutbox(schema: "order" | "user" = "order", server?: string): Promise<Outbox> {
  let url: string;
  if (server) {
    const name = uniqueName("relay", "_");
    url = await createDatabase(server, name);
    onTestFinished(() => dropDatabase(server, name));
  } else url = await freshDatabase("relay");
  await migrateDatabase(url, schema);
  const sql = postgres(url, { max: 8, onnotice: () => {} });
  // Registered after freshDatabase's drop, so it runs first: the pool is gone before the database.
  onTestFinished(() => sql.end({ timeout: 1 }));
  return { url, sql };
}

/** A topic prefix of the test's own with TEST_TOPICS created under it (on `brokers`, default the run's). */
export async function freshTopicPrefix(brokers?: string[]): Promise<string> {
  if (brokers) {
    const prefix = `relay-${randomUUID().slice(0, 8)}.`;
    const kafka = createKafka({ brokers, clientId: "relay-test-admin" });
    try {
      await kafka.createTopics(
        TEST_TOPICS.map((t) => `${prefix}${t}`),
        3,
      );
    } finally {
      await kafka.close();
    }
    return prefix;
  }
  // kafkajs' createTopics with waitForLeaders can fail with UNKNOWN_TOPIC_OR_PARTITION (retriable) when
  // several files create topics at once; a new random prefix on the next try is as good.
  for (let attempt = 1; ; attempt++) {
    try {
      const topics = await freshTopics(TEST_TOPICS);
      return topics[TOPICS.orderCreated].slice(0, -TOPICS.orderCreated.length);
    } catch (err) {
      if (attempt === 3 || (err as { retriable?: boolean }).retriable !== true) throw err;
      await new Promise((r) => setTimeout(r, 500));
    }
  }
}

export type TestRow = { id: string; aggregateId: string; topic: string; position?: string };

/** An outbox row like the services write, with a payload that names its aggregate and sequence number. */
export function row(
  aggregateId: string,
  seq: number,
  topic: string = TOPICS.orderCreated,
  extra: Record<string, string> = {},
) {
  return {
    id: randomUUID(),
    aggregate_id: aggregateId,
    topic,
    event_type: topic === TOPICS.orderCreated ? "OrderCreated" : "OrderCanceled",
    schema_version: "1",
    payload: JSON.stringify({ orderId: aggregateId, seq }),
    headers: extra,
  };
}

type OutboxInsert = ReturnType<typeof row>;

/**
 * Writes rows as the services do: in one transaction that first locks each aggregate it touches,
 * so per aggregate position order is commit order. Returns the rows with their positions.
 */
export async function writeRows(sql: postgres.Sql, rows: OutboxInsert[]): Promise<TestRow[]> {
  return sql.begin(async (tx) => {
    for (const aggregate of [...new Set(rows.map((r) => r.aggregate_id))].sort()) {
      await tx`select pg_advisory_xact_lock(hashtextextended(${aggregate}, 0))`;
    }
    const written = await tx<{ id: string; aggregateId: string; topic: string; position: string }[]>`
      insert into outbox ${tx(rows)}
      returning id, aggregate_id as "aggregateId", topic, position::text as position`;
    return [...written];
  });
}

/** Unpublished rows right now. */
export async function backlog(sql: postgres.Sql): Promise<number> {
  const [r] = await sql<{ n: number }[]>`select count(*)::int as n from outbox where published_at is null`;
  return r?.n ?? 0;
}

/** Polls `check` until it returns a value other than undefined/false, or fails after `timeoutMs`. */
export async function eventually<T>(
  what: string,
  check: () => Promise<T | undefined | false>,
  timeoutMs = 30_000,
  everyMs = 50,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value !== undefined && value !== false) return value;
    } catch (err) {
      lastError = err;
    }
    if (Date.now() > deadline)
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`, { cause: lastError });
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/** Waits until every row of the outbox is marked published. */
export function allPublished(sql: postgres.Sql, timeoutMs = 30_000): Promise<true> {
  return eventually("an empty backlog", async () => (await backlog(sql)) === 0, timeoutMs);
}

/** Every message on the prefixed test topics, sorted by topic, partition and offset. */
export async function readAll(prefix: string, brokers = kafkaBrokers()): Promise<IncomingMessage[]> {
  const kafka = createKafka({ brokers, clientId: "relay-test-reader" });
  try {
    // A broker busy with the other files' topics can answer a metadata request for a fresh topic with
    // UNKNOWN_TOPIC_OR_PARTITION for a moment; the reader does not retry that itself.
    for (let attempt = 1; ; attempt++) {
      try {
        const messages = await kafka.readToEnd(TEST_TOPICS.map((t) => `${prefix}${t}`));
        return messages.sort(
          (a, b) =>
            a.topic.localeCompare(b.topic) ||
            a.partition - b.partition ||
            Number(a.offset) - Number(b.offset),
        );
      } catch (err) {
        if (attempt === 5) throw new Error(`readAll(${prefix}) failed ${attempt} times`, { cause: err });
        await new Promise((r) => setTimeout(r, 500 * attempt));
      }
    }
  } finally {
    await kafka.close();
  }
}

/**
 * At-least-once and per-key order: every written row is on Kafka, nothing else is, and per topic and key
 * the first occurrences of the event ids follow the rows' positions. Returns the number of duplicates.
 */
export function expectEveryRowInOrder(
  written: TestRow[],
  messages: IncomingMessage[],
  prefix: string,
): number {
  const expected = new Map<string, string[]>();
  for (const r of [...written].sort((a, b) =>
    Number(BigInt(a.position ?? "0") - BigInt(b.position ?? "0")),
  )) {
    const k = `${prefix}${r.topic}|${r.aggregateId}`;
    expected.set(k, [...(expected.get(k) ?? []), r.id]);
  }
  const firstSeen = new Map<string, string[]>();
  const seen = new Set<string>();
  let duplicates = 0;
  for (const m of messages) {
    const id = m.headers[HEADERS.eventId] ?? "";
    if (seen.has(id)) {
      duplicates++;
      continue;
    }
    seen.add(id);
    const k = `${m.topic}|${m.key}`;
    firstSeen.set(k, [...(firstSeen.get(k) ?? []), id]);
  }
  expect(seen.size, "distinct events on Kafka").toBe(written.length);
  expect(firstSeen).toEqual(expected);
  return duplicates;
}

/** A relay in this process, stopped when the test ends. */
export function startRelayInProcess(env: Env) {
  const relay = createRelayService(env, {
    logger: createLogger("relay", process.env.TEST_LOG_LEVEL ?? env.LOG_LEVEL),
  });
  relay.start();
  onTestFinished(() => relay.stop());
  return relay;
}

/**
 * The relay mode the tests run in: the default (`table`); TEST_RELAY_MODE=cdc runs the whole suite in
 * the CDC mode. Tests of one mode's behaviour name their mode.
 */
const TEST_RELAY_MODE: Env["RELAY_MODE"] = process.env.TEST_RELAY_MODE === "cdc" ? "cdc" : "table";

/** The environment of a relay on the test's outbox. */
export function relayEnv(url: string, prefix: string, overrides: Partial<Env> = {}): Env {
  return {
    PORT: 0,
    HOST: "127.0.0.1",
    ORDER_DB_URL: url,
    KAFKA_BROKERS: kafkaBrokers(),
    KAFKA_TOPIC_PREFIX: prefix,
    KAFKA_CLIENT: DEFAULT_KAFKA_CLIENT,
    KAFKA_SSL: false,
    RELAY_ID: "test",
    RELAY_MODE: TEST_RELAY_MODE,
    RELAY_BATCH_SIZE: 500,
    RELAY_MARK_CHUNK_SIZE: 250,
    RELAY_MARK_INTERVAL_MS: 250,
    RELAY_LINGER_MS: 10,
    RELAY_LINGER_ROWS: 16,
    RELAY_SLOT_HOLD_MS: 30_000,
    RELAY_SEND_STALL_MS: 30_000,
    RELAY_POLL_INTERVAL_MS: 1000,
    OUTBOX_RETENTION_SECONDS: 3600,
    RELAY_CLEANUP_INTERVAL_MS: 60_000,
    DB_STATEMENT_TIMEOUT_MS: DEFAULT_SESSION_TIMEOUTS.statementTimeoutMs,
    DB_IDLE_IN_TRANSACTION_TIMEOUT_MS: DEFAULT_SESSION_TIMEOUTS.idleInTransactionTimeoutMs,
    // Expected trouble (a lost lease, a broker away) logs warnings and errors; TEST_LOG_LEVEL shows them.
    LOG_LEVEL: "fatal",
    ...overrides,
  };
}

/** One series' value in Prometheus text, or undefined when it is absent. */
export function metricValue(
  text: string,
  name: string,
  labels: Record<string, string> = {},
): number | undefined {
  for (const line of text.split("\n")) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    if (!Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`))) continue;
    return Number(line.slice(line.lastIndexOf(" ") + 1));
  }
  return undefined;
}

/** How many times an in-process relay was woken on the order outbox by `source` (its metric). */
export async function orderWakeups(
  relay: { app: { request: (path: string) => Response | Promise<Response> } },
  source: "poll" | "replication" | "visibility",
): Promise<number> {
  const text = await (await relay.app.request("/metrics")).text();
  return metricValue(text, "saga_relay_wakeups_total", { outbox: "order", source }) ?? 0;
}

const relayDir = fileURLToPath(new URL("..", import.meta.url));

export type RelayProcess = {
  readonly child: ChildProcess;
  /** Resolves with the HTTP port once the relay listens. */
  readonly port: Promise<number>;
  /** Settles with the exit code, or the signal's name, when the process ends. */
  readonly exited: Promise<number | string>;
  /** Everything it logged, for failure messages. */
  output(): string;
  metrics(): Promise<string>;
  kill(signal?: NodeJS.Signals): Promise<number | string>;
};

/**
 * `src/main.ts` (or another entry point, such as a fixture) as a child process, run by node itself (no
 * wrapper CLI), so that the pid we SIGKILL is the relay itself and not a wrapper that would leave it orphaned.
 */
export function spawnRelay(env: Record<string, string>, script = "src/main.ts"): RelayProcess {
  const child = spawn(process.execPath, [script], {
    cwd: relayDir,
    env: { PATH: process.env.PATH, PORT: "0", LOG_LEVEL: "info", RELAY_MODE: TEST_RELAY_MODE, ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  let resolvePort: (port: number) => void = () => {};
  const port = new Promise<number>((resolve) => {
    resolvePort = resolve;
  });
  const onData = (chunk: Buffer) => {
    output += chunk.toString();
    const listening = /"port":(\d+),"msg":"listening"/.exec(output);
    if (listening?.[1]) resolvePort(Number(listening[1]));
  };
  child.stdout?.on("data", onData);
  child.stderr?.on("data", onData);
  const exited = new Promise<number | string>((resolve) =>
    child.once("exit", (code, signal) => resolve(code ?? signal ?? -1)),
  );
  const proc: RelayProcess = {
    child,
    port: Promise.race([
      port,
      exited.then((how) => {
        throw new Error(`relay exited (${how}) before listening:\n${output}`);
      }),
    ]),
    exited,
    output: () => output,
    async metrics() {
      const res = await fetch(`http://127.0.0.1:${await proc.port}/metrics`);
      return res.text();
    },
    async kill(signal = "SIGKILL") {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      return exited;
    },
  };
  onTestFinished(async () => {
    await proc.kill("SIGKILL");
  });
  return proc;
}

/**
 * A fault proxy between a client and the test's database (`url`), and the URL that goes through it: the
 * link a test slows, cuts or stops listening while the client runs.
 */
export async function linkTo(url: string, name: string): Promise<{ link: FaultProxy; url: string }> {
  const { proxy: link, url: viaLink } = await proxiedUrl(url, name);
  onTestFinished(() => link.close());
  return { link, url: viaLink };
}

/**
 * Makes commits that ask for `synchronous_commit = on` wait for a synchronous standby that never
 * connects: their WAL is flushed and streamed, and they are not visible until the setting is removed.
 * Everything else on this server commits with `synchronous_commit = off` (a throwaway server), which
 * never waits. Resolves once a commit does wait (the checkpointer applies the setting a moment after
 * the reload): a probe transaction is seen in the `SyncRep` wait, then cancelled, which completes it.
 */
export async function holdSynchronousCommits(serverUrl: string): Promise<void> {
  const admin = postgres(serverUrl, { max: 2, onnotice: () => {} });
  try {
    await admin`alter system set synchronous_standby_names = 'nobody'`;
    await admin`select pg_reload_conf()`;
    await eventually(
      "commits to wait for the synchronous standby",
      async () => {
        const probe = postgres(serverUrl, { max: 1, onnotice: () => {} });
        try {
          const [session] = await probe<{ pid: number }[]>`select pg_backend_pid() as pid`;
          const pid = session?.pid ?? 0;
          const commit = probe.begin(async (tx) => {
            await tx`set local synchronous_commit = on`;
            // A commit waits only if its transaction wrote WAL besides its commit record.
            await tx`select pg_logical_emit_message(true, 'probe', '')`;
          });
          const waiting = await eventually(
            "the probe to wait",
            async () => {
              const [r] = await admin<{ event: string | null }[]>`
                select wait_event as event from pg_stat_activity where pid = ${pid}`;
              return r?.event === "SyncRep";
            },
            300,
            20,
          ).catch(() => false);
          await admin`select pg_cancel_backend(${pid})`;
          await commit.catch(() => {});
          return waiting;
        } finally {
          await probe.end({ timeout: 1 });
        }
      },
      10_000,
    );
  } finally {
    await admin.end({ timeout: 1 });
  }
}

/** Removes the synchronous standby again: the commits waiting for it complete. */
export async function releaseSynchronousCommits(serverUrl: string): Promise<void> {
  const admin = postgres(serverUrl, { max: 1, onnotice: () => {} });
  try {
    await admin`alter system reset synchronous_standby_names`;
    await admin`select pg_reload_conf()`;
  } finally {
    await admin.end({ timeout: 1 });
  }
}

/**
 * A writer held between its WAL flush and its visibility, on a server whose commits
 * `holdSynchronousCommits` holds: the commit record is flushed (so the replication stream carries it)
 * and the commit then waits for a synchronous standby that does not exist, which PostgreSQL does before
 * it takes the transaction out of the running ones (RecordTransactionCommit, then
 * ProcArrayEndTransaction). Resolves once the writer waits in `SyncRep` and the WAL sender of the
 * database has sent the commit (unless `streamed` is false: no stream is up to send it, as while a slot
 * is being created); `committed` settles with the row once the commits are released.
 */
export async function writeHeld(
  sql: postgres.Sql,
  insert: OutboxInsert,
  { streamed = true }: { streamed?: boolean } = {},
): Promise<{ committed: Promise<TestRow> }> {
  let pid: number | undefined;
  const committed = sql.begin(async (tx) => {
    await tx`set local synchronous_commit = on`;
    const [session] = await tx<{ pid: number }[]>`select pg_backend_pid() as pid`;
    pid = session?.pid;
    await tx`select pg_advisory_xact_lock(hashtextextended(${insert.aggregate_id}, 0))`;
    const [r] = await tx<TestRow[]>`
      insert into outbox ${tx(insert)}
      returning id, aggregate_id as "aggregateId", topic, position::text as position`;
    return r as TestRow;
  });
  // Settled by the test (or the pool's end); a failure is seen there.
  committed.catch(() => {});
  await eventually("the writer to wait for its synchronous standby", async () => {
    const [r] = await sql<{ event: string | null }[]>`
      select wait_event as event from pg_stat_activity where pid = ${pid ?? 0}`;
    return r?.event === "SyncRep";
  });
  if (!streamed) return { committed };
  // Flushed and streamed, not visible to anyone else.
  const [flushed] = await sql<{ lsn: string }[]>`select pg_current_wal_flush_lsn()::text as lsn`;
  await eventually("the WAL sender to send the held commit", async () => {
    const [r] = await sql<{ sent: boolean }[]>`
      select r.sent_lsn >= ${flushed?.lsn ?? ""}::pg_lsn as sent
      from pg_replication_slots s join pg_stat_replication r on r.pid = s.active_pid
      where s.database = current_database()`;
    return r?.sent === true;
  });
  return { committed };
}
