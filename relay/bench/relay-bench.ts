/**
 * Relay benchmark (not a test):
 * `npm run bench -w relay [-- --rows 50000 --batch 100,500 --rate 2000,20 --seconds 20 --client platformatic,kafkajs --retention 3600 --ids v7]`.
 *
 * In one run, against the same PostgreSQL and Kafka, for each Kafka client of `--client` in turn (a client
 * may be named twice, A,B,A, to see the drift of the machine between back-to-back measurements):
 * 1. a raw @saga/kafka producer sending `rows` relay-shaped messages in sequential batches of `batch`:
 *    the ceiling for the relay at that batch size;
 * 2. the relay (`src/main.ts` as a child process, RELAY_BATCH_SIZE = `batch`) draining a backlog of
 *    `rows` rows: its throughput;
 * 3. the relay at each offered `rate` rows/s for `seconds` s, written by paced concurrent transactions of
 *    2 rows: its lag, `published_at - created_at` per row on the database's clock (created_at is the
 *    writing transaction's start, published_at Kafka's acknowledgement, recorded by the mark);
 * 4. the relay owning an outbox that nobody writes to, for `idle` s: the CPU of the relay process and of
 *    its PostgreSQL sessions (lock, reads and marks, the replication wake-ups' WAL sender).
 *
 * Uses POSTGRES_URL and KAFKA_BROKERS when both are set, otherwise starts its own servers (tools/src/infra).
 * Prints a markdown table.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes, randomUUID } from "node:crypto";
import { cpus } from "node:os";
import { fileURLToPath } from "node:url";
import { HEADERS, TOPICS } from "@saga/contracts";
import { migrateDatabase, postgresJsOptions, sessionParameters } from "@saga/db";
import { createKafka, KAFKA_CLIENTS, type KafkaClientName, type OutgoingMessage } from "@saga/kafka";
import { newRowId } from "@saga/messaging";
import { choiceOption, defineCli, numberListOption, numberOption, UsageError } from "@saga/tools/cli";
import { createDatabase, createTopics, dropDatabase, startInfra } from "@saga/tools/infra";
import { cpuSeconds, nodeFlags } from "@saga/tools/process";
import postgres from "postgres";
import { percentile } from "./support.ts";

const benchCli = defineCli({
  name: "relay-bench",
  command: "npm run bench -w relay --",
  about:
    "The relay alone, for each Kafka client in turn: a raw producer's ceiling, the relay draining a backlog,\n" +
    "its lag at offered rates and its CPU idle. Uses POSTGRES_URL and KAFKA_BROKERS when both are set,\n" +
    "otherwise starts its own servers. Prints a markdown table.",
  options: {
    rows: {
      type: "string",
      value: "N",
      default: "50000",
      description: "rows of the backlog drained, and sent raw",
    },
    batch: {
      type: "string",
      value: "N,N,…",
      default: "100,500",
      description: "RELAY_BATCH_SIZE, and the raw producer's batch, of each drain",
    },
    rate: {
      type: "string",
      value: "R,R,…",
      default: "2000,20",
      description: 'offered rows/s of the lag phases; "" for none',
    },
    seconds: { type: "string", value: "SECONDS", default: "20", description: "each lag phase's length" },
    client: {
      type: "string",
      value: "C,C,…",
      default: KAFKA_CLIENTS.join(","),
      description: "the Kafka clients measured, in turn; A,B,A shows the machine's drift",
    },
    idle: { type: "string", value: "SECONDS", default: "30", description: "the idle window; 0 for none" },
    mode: {
      type: "string",
      value: "M,M,…",
      default: "table",
      description:
        "RELAY_MODE of each measured relay, in turn, table or cdc; table,cdc,table shows the drift",
    },
    retention: {
      type: "string",
      value: "SECONDS",
      default: "3600",
      description: 'OUTBOX_RETENTION_SECONDS of the measured relays; 0 measures drains only, with --rate ""',
    },
    ids: {
      type: "string",
      value: "v7|v4",
      default: "v7",
      description: "the outbox rows' ids: uuidv7, time-ordered, as the services make them, or v4, random",
    },
  },
});

const RELAY_MODES = ["table", "cdc"] as const;

const { CLIENTS, MODES, ROWS, BATCHES, RATES, SECONDS, IDLE_SECONDS, RETENTION, IDS } = benchCli.parseOrExit(
  process.argv.slice(2),
  ({ values }) => {
    const listOf = <C extends string>(option: string, raw: string, choices: readonly C[]) =>
      raw
        .split(",")
        .filter(Boolean)
        .map((item) => choiceOption(option, item, choices));
    /**
     * OUTBOX_RETENTION_SECONDS of the measured relays. 0: rows are deleted at publication, so there is no
     * `published_at` to measure by: a drain is timed from the relay's ownership to an empty outbox, and the
     * rate phases, whose lag is `published_at - created_at`, cannot run.
     */
    const retention = numberOption("retention", values.retention, { integer: true, min: 0 });
    if (retention === 0 && values.rate !== "")
      throw new UsageError(
        '--retention 0 measures drains only (no published_at to take lag from): add --rate ""',
      );
    /**
     * The version of the outbox rows' ids: 7, time-ordered, as the services make them (packages/messaging,
     * `newRowId`), or 4, random, as they made them before: the mark's new index entries land next to each
     * other or all over the primary key.
     */
    const ids = {
      v7: { sql: "uuidv7()", make: newRowId },
      v4: { sql: "gen_random_uuid()", make: randomUUID },
    }[choiceOption("ids", values.ids, ["v7", "v4"])];
    return {
      CLIENTS: listOf("client", values.client, KAFKA_CLIENTS),
      /** RELAY_MODE of each measured relay, in turn (`table,cdc,table` to see the drift between them). */
      MODES: listOf("mode", values.mode, RELAY_MODES),
      ROWS: numberOption("rows", values.rows, { integer: true, min: 1 }),
      BATCHES: numberListOption("batch", values.batch, { integer: true, min: 1 }),
      RATES: numberListOption("rate", values.rate, { above: 0 }),
      SECONDS: numberOption("seconds", values.seconds, { above: 0 }),
      IDLE_SECONDS: numberOption("idle", values.idle, { min: 0 }),
      RETENTION: String(retention),
      IDS: ids,
    };
  },
);
const ROWS_PER_TX = 2;
const AGGREGATES = 1000;
const PARTITIONS = 6;

const relayDir = fileURLToPath(new URL("..", import.meta.url));
const log = (line: string) => console.error(line);

type Line = {
  what: string;
  rows: number;
  seconds: number;
  lagP50?: number;
  lagP99?: number;
  lagMax?: number;
  /** CPU seconds the relay process used over the measurement. */
  relayCpuS?: number;
  /** Mean rows per send: rows over distinct marking times (exact while batches stay within one marking chunk). */
  rowsPerSend?: number;
  /** CPU seconds of the process that holds the Kafka client (the bench itself, or the relay) over the measurement. */
  clientCpuS?: number;
  /** Statements (transactions) the relay ran on the outbox's database over the measurement. */
  relayStatements?: number;
};

async function run(): Promise<void> {
  const infra = await startInfra({ log });
  const suffix = randomBytes(4).toString("hex");
  const dbName = `relay_bench_${suffix}`;
  const prefix = `bench-${suffix}.`;
  const topic = `${prefix}${TOPICS.orderCreated}`;
  const url = await createDatabase(infra.postgresUrl, dbName);
  // Writers commit with synchronous_commit=on, as the services do by default, even when the server's
  // default is off (the throwaway test servers): logical decoding only sends what is flushed, so with
  // asynchronous commit a wake-up would wait for the WAL writer (wal_writer_delay, 200 ms).
  const sql = postgres({
    ...postgresJsOptions(url),
    max: 20,
    onnotice: () => {},
    connection: sessionParameters({ synchronous_commit: "on" }),
  });
  const kafkaOf = new Map(
    KAFKA_CLIENTS.map((client) => [
      client,
      createKafka({ brokers: infra.kafkaBrokers, clientId: "relay-bench", client }),
    ]),
  );
  const kafkaFor = (client: KafkaClientName) => {
    const kafka = kafkaOf.get(client);
    if (!kafka) throw new Error(`no ${client} client`);
    return kafka;
  };
  const lines: Line[] = [];
  const idle: { client: string; relay: number; postgres: number; sessions: number }[] = [];
  let relay: ChildProcess | undefined;
  try {
    await migrateDatabase(url, "order");
    await createTopics(infra.kafkaBrokers, [topic], PARTITIONS);
    const [settings] = await sql<{ version: string; fsync: string; sync: string }[]>`
      select current_setting('server_version') as version, current_setting('fsync') as fsync,
             current_setting('synchronous_commit') as sync`;

    for (const client of CLIENTS) {
      const kafka = kafkaFor(client);
      for (const batch of BATCHES) {
        log(`bench: ${client}: raw producer, ${ROWS} messages in batches of ${batch}`);
        lines.push(await rawProducer(kafka, client, topic, batch));

        for (const mode of MODES) {
          log(`bench: ${client}: ${mode} relay draining ${ROWS} rows with RELAY_BATCH_SIZE=${batch}`);
          await sql`truncate outbox`;
          await fillOutbox(sql, ROWS);
          const statementsBefore = await transactions(sql);
          relay = spawnRelay(url, infra.kafkaBrokers, prefix, batch, client, mode);
          await waitForOwner(sql);
          const relayPid = relay.pid ?? 0;
          const relayCpu = async () => (await cpuSeconds({ relay: relayPid })).relay ?? 0;
          const cpuBefore = await relayCpu();
          const drain = await drained(sql, ROWS);
          const cpuS = (await relayCpu()) - cpuBefore;
          await stop(relay);
          relay = undefined;
          lines.push({
            what: `${client}: ${mode} relay draining a backlog, batches of ${batch}${RETENTION === "0" ? ", rows deleted at publication" : ""}`,
            ...drain,
            relayCpuS: cpuS,
            clientCpuS: cpuS,
            relayStatements: (await transactions(sql)) - statementsBefore - drain.polls - 1,
          });
        }
      }
    }

    // The offered rates: the first keeps the relay busy; a trickle (20 rows/s) leaves it idle between
    // rows, so each row's lag is the wake-up path: commit → replication message → read → send → mark.
    const batch = Math.max(...BATCHES);
    for (const client of CLIENTS) {
      const kafka = kafkaFor(client);
      for (const rate of RATES) {
        log(`bench: ${client}: raw producer fed at ${rate} rows/s for ${SECONDS} s, beside the writers`);
        await sql`truncate outbox`;
        lines.push(await rawProducerLag(kafka, client, topic, sql, rate, batch));
        for (const mode of MODES) {
          log(
            `bench: ${client}: ${mode} relay at an offered ${rate} rows/s for ${SECONDS} s (RELAY_BATCH_SIZE=${batch})`,
          );
          await sql`truncate outbox`;
          const statementsBefore = await transactions(sql);
          relay = spawnRelay(url, infra.kafkaBrokers, prefix, batch, client, mode);
          await waitForOwner(sql);
          const relayCpu = async () => (await cpuSeconds({ relay: relay?.pid ?? 0 })).relay ?? 0;
          const cpuBefore = await relayCpu();
          const offered = await offerLoad(sql, rate, SECONDS);
          const { polls } = await drained(sql, offered.rows);
          const relayCpuS = (await relayCpu()) - cpuBefore;
          await stop(relay);
          relay = undefined;
          // Every statement of the relay is a transaction of its own; the writers' are one per ROWS_PER_TX rows.
          const relayStatements =
            (await transactions(sql)) - statementsBefore - offered.rows / ROWS_PER_TX - polls - 1;
          const lags = (
            await sql<{ lag: number }[]>`
            select extract(epoch from published_at - created_at)::float8 * 1000 as lag from outbox order by 1`
          ).map((r) => r.lag);
          const [marks] = await sql<
            { n: number }[]
          >`select count(distinct published_at)::int as n from outbox`;
          lines.push({
            what: `${client}: ${mode} relay at an offered ${rate} rows/s (${ROWS_PER_TX} rows per transaction), batches up to ${batch}`,
            rows: offered.rows,
            seconds: offered.seconds,
            lagP50: percentile(lags, 0.5),
            lagP99: percentile(lags, 0.99),
            lagMax: lags.at(-1),
            relayCpuS,
            clientCpuS: relayCpuS,
            rowsPerSend: marks?.n ? offered.rows / marks.n : undefined,
            relayStatements,
          });
        }
      }
    }

    for (const [client, mode] of CLIENTS.flatMap((c) => MODES.map((m) => [c, m] as const))) {
      if (IDLE_SECONDS <= 0) break;
      log(`bench: ${client}: ${mode} relay idle for ${IDLE_SECONDS} s`);
      await sql`truncate outbox`;
      relay = spawnRelay(url, infra.kafkaBrokers, prefix, batch, client, mode);
      await waitForOwner(sql);
      // Past start-up (module loading, the first connections), before measuring.
      await new Promise((resolve) => setTimeout(resolve, 5000));
      const pids = async () => ({
        relay: relay?.pid ?? 0,
        ...Object.fromEntries(
          (
            await sql<{ pid: number }[]>`
              select pid from pg_stat_activity where application_name like 'relay/bench/%'`
          ).map((r) => [`pg-${r.pid}`, r.pid]),
        ),
      });
      const roots = await pids();
      const sum = (cpu: Record<string, number>, which: (name: string) => boolean) =>
        Object.entries(cpu).reduce((n, [name, v]) => (which(name) ? n + v : n), 0);
      const before = await cpuSeconds(roots, Object.keys(roots));
      await new Promise((resolve) => setTimeout(resolve, IDLE_SECONDS * 1000));
      const after = await cpuSeconds(roots, Object.keys(roots));
      idle.push({
        client: `${client} ${mode}`,
        relay: (sum(after, (n) => n === "relay") - sum(before, (n) => n === "relay")) / IDLE_SECONDS,
        postgres: (sum(after, (n) => n !== "relay") - sum(before, (n) => n !== "relay")) / IDLE_SECONDS,
        sessions: Object.keys(roots).length - 1,
      });
      await stop(relay);
      relay = undefined;
    }

    console.log(
      `\nRelay benchmark: PostgreSQL ${settings?.version} (fsync=${settings?.fsync}, synchronous_commit=${settings?.sync}), ` +
        `Kafka at ${infra.kafkaBrokers.join(",")} (${infra.kind}), topic with ${PARTITIONS} partitions, ${AGGREGATES} keys, ` +
        `${cpus().length} CPUs shared by everything\n`,
    );
    console.log(
      "| measurement | rows | seconds | rows/s | lag p50 (ms) | lag p99 (ms) | lag max (ms) | relay CPU (cores) | client process CPU (µs/row) | rows per send | relay statements per row |",
    );
    console.log("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    const ms = (v: number | undefined) => (v === undefined ? "" : v.toFixed(1));
    for (const l of lines) {
      console.log(
        `| ${l.what} | ${l.rows} | ${l.seconds.toFixed(2)} | ${Math.round(l.rows / l.seconds)} | ${ms(l.lagP50)} | ${ms(l.lagP99)} | ${ms(l.lagMax)} | ${l.relayCpuS === undefined ? "" : (l.relayCpuS / l.seconds).toFixed(3)} | ${l.clientCpuS === undefined ? "" : ((l.clientCpuS * 1e6) / l.rows).toFixed(1)} | ${l.rowsPerSend === undefined ? "" : l.rowsPerSend.toFixed(1)} | ${l.relayStatements === undefined ? "" : (l.relayStatements / l.rows).toFixed(3)} |`,
      );
    }
    if (idle.length > 0) {
      console.log(
        `\nIdle relay (one outbox, nothing written, ${IDLE_SECONDS} s: the safety-net poll and the lease check every second, the wake-up stream):\n`,
      );
      console.log("| client and mode | relay process (cores) | its PostgreSQL sessions (cores) | sessions |");
      console.log("|---|---:|---:|---:|");
      for (const i of idle) {
        console.log(`| ${i.client} | ${i.relay.toFixed(4)} | ${i.postgres.toFixed(4)} | ${i.sessions} |`);
      }
    }
  } finally {
    if (relay) await stop(relay);
    await sql.end({ timeout: 2 });
    await Promise.all([...kafkaOf.values()].map((k) => k.close()));
    await dropDatabase(infra.postgresUrl, dbName).catch(() => {});
    await infra.stop();
  }
}

function payload(orderId: string): string {
  return JSON.stringify({ orderId, userId: randomUUID(), amount: 1 + Math.floor(Math.random() * 10_000) });
}

const TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

/** A message as the relay would send for an outbox row of this bench. */
function message(topic: string, orderId: string): OutgoingMessage {
  return {
    topic,
    key: orderId,
    value: payload(orderId),
    headers: {
      [HEADERS.traceparent]: TRACEPARENT,
      [HEADERS.eventId]: randomUUID(),
      [HEADERS.eventType]: "OrderCreated",
      [HEADERS.schemaVersion]: "1",
      [HEADERS.occurredAt]: new Date().toISOString(),
      [HEADERS.aggregateId]: orderId,
    },
  };
}

async function rawProducer(
  kafka: ReturnType<typeof createKafka>,
  client: KafkaClientName,
  topic: string,
  batch: number,
): Promise<Line> {
  const producer = await kafka.createProducer();
  const orders = Array.from({ length: AGGREGATES }, () => randomUUID());
  const messages = Array.from({ length: ROWS }, (_, i) => message(topic, orders[i % AGGREGATES] as string));
  try {
    const started = performance.now();
    const cpuBefore = process.cpuUsage();
    for (let i = 0; i < messages.length; i += batch) await producer.send(messages.slice(i, i + batch));
    const cpu = process.cpuUsage(cpuBefore);
    return {
      what: `${client}: raw @saga/kafka producer, batches of ${batch}`,
      rows: ROWS,
      seconds: (performance.now() - started) / 1000,
      // The bench process does nothing else meanwhile: its CPU is the client's.
      clientCpuS: (cpu.user + cpu.system) / 1e6,
    };
  } finally {
    await producer.close();
  }
}

/**
 * The lag floor of any relay on this machine: rows are handed to one producer the moment they are
 * due at `rate` (no read, no mark), sent in batches with one send in flight as the relay sends, while
 * the same writer load as in the relay's measurement commits into the outbox. Lag is due → acknowledged.
 */
async function rawProducerLag(
  kafka: ReturnType<typeof createKafka>,
  client: KafkaClientName,
  topic: string,
  sql: postgres.Sql,
  rate: number,
  batch: number,
): Promise<Line> {
  const producer = await kafka.createProducer();
  const orders = Array.from({ length: AGGREGATES }, () => randomUUID());
  const queue: { due: number; message: OutgoingMessage }[] = [];
  const lags: number[] = [];
  let due = 0;
  let running = true;
  const started = performance.now();
  const sender = (async () => {
    while (running || queue.length > 0) {
      if (queue.length === 0) {
        await new Promise((resolve) => setTimeout(resolve, 1));
        continue;
      }
      const sending = queue.splice(0, batch);
      await producer.send(sending.map((q) => q.message));
      const acknowledged = performance.now();
      for (const q of sending) lags.push(acknowledged - q.due);
    }
  })();
  try {
    const writers = offerLoad(sql, rate, SECONDS);
    while (performance.now() - started < SECONDS * 1000) {
      const now = performance.now();
      for (const total = Math.floor((rate * (now - started)) / 1000); due < total; due++) {
        const orderId = orders[Math.floor(due / ROWS_PER_TX) % AGGREGATES] as string;
        // Row `due` (0-based) is the (due + 1)-th of the rate: it falls due then, not a period earlier.
        const at = started + ((due + 1) * 1000) / rate;
        queue.push({ due: at, message: message(topic, orderId) });
      }
      await new Promise((resolve) => setTimeout(resolve, 1));
    }
    running = false;
    await Promise.all([sender, writers]);
    lags.sort((a, b) => a - b);
    return {
      what: `${client}: raw @saga/kafka producer fed at ${rate} rows/s, one send in flight, beside the same writers (lag floor)`,
      rows: lags.length,
      seconds: (performance.now() - started) / 1000,
      lagP50: percentile(lags, 0.5),
      lagP99: percentile(lags, 0.99),
      lagMax: lags.at(-1),
    };
  } finally {
    running = false;
    await producer.close();
  }
}

/** Writes `rows` unpublished rows in one statement, spread over AGGREGATES orders. */
async function fillOutbox(sql: postgres.Sql, rows: number): Promise<void> {
  await sql`
    insert into outbox (id, aggregate_id, topic, event_type, schema_version, payload, headers)
    select ${sql.unsafe(IDS.sql)}, o.id::text, ${TOPICS.orderCreated}, 'OrderCreated', '1',
           json_build_object('orderId', o.id, 'userId', gen_random_uuid(), 'amount', 1 + (random() * 10000)::int)::text,
           jsonb_build_object('traceparent', ${TRACEPARENT}::text)
    from generate_series(1, ${rows}) g
    join (select gen_random_uuid() as id, row_number() over () - 1 as n from generate_series(1, ${AGGREGATES})) o
      on o.n = g % ${AGGREGATES}
    order by g`;
}

function spawnRelay(
  url: string,
  brokers: string[],
  prefix: string,
  batch: number,
  client: KafkaClientName,
  mode: string,
): ChildProcess {
  const child = spawn(process.execPath, [...nodeFlags(), "src/main.ts"], {
    cwd: relayDir,
    env: {
      // The relay's own settings given to the bench (RELAY_LINGER_MS=0 …) reach it, but for those set below.
      ...Object.fromEntries(Object.entries(process.env).filter(([key]) => key.startsWith("RELAY_"))),
      PATH: process.env.PATH,
      PORT: "0",
      ORDER_DB_URL: url,
      KAFKA_BROKERS: brokers.join(","),
      KAFKA_TOPIC_PREFIX: prefix,
      KAFKA_CLIENT: client,
      RELAY_ID: "bench",
      RELAY_BATCH_SIZE: String(batch),
      RELAY_MODE: mode,
      OUTBOX_RETENTION_SECONDS: RETENTION,
      LOG_LEVEL: process.env.BENCH_RELAY_LOG_LEVEL ?? "warn",
    },
    stdio: ["ignore", process.env.BENCH_RELAY_LOG_LEVEL ? "inherit" : "ignore", "inherit"],
  });
  return child;
}

async function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once("exit", resolve));
  child.kill("SIGTERM");
  await exited;
}

async function waitForOwner(sql: postgres.Sql): Promise<void> {
  for (;;) {
    const [r] = await sql<
      { n: number }[]
    >`select count(*)::int as n from pg_locks where locktype = 'advisory' and classid = 7340002`;
    if (r?.n) return;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/**
 * Committed transactions of this database so far, once every session has reported them (a session
 * flushes its statistics at most once a second). Each relay statement is one. Rolled-back ones are
 * left out: the WAL sender counts one for every transaction it decodes (it reads the catalogs in a
 * transaction it then aborts), in both modes.
 */
async function transactions(sql: postgres.Sql): Promise<number> {
  await new Promise((resolve) => setTimeout(resolve, 2500));
  const [r] = await sql<{ n: string }[]>`
    select xact_commit::text as n from pg_stat_database where datname = current_database()`;
  return Number(r?.n ?? 0);
}

/**
 * Waits for an empty backlog; the throughput is the span of the marking times (with a retention of 0,
 * the time from this call, once the relay owns the outbox, until it is empty); `polls` its own statements.
 */
async function drained(
  sql: postgres.Sql,
  rows: number,
): Promise<{ rows: number; seconds: number; polls: number }> {
  if (RETENTION === "0") return emptied(sql, rows);
  for (let polls = 1; ; polls++) {
    const [r] = await sql<{ unpublished: number; published: number; span: number | null }[]>`
      select count(*) filter (where published_at is null)::int as unpublished,
             count(*) filter (where published_at is not null)::int as published,
             extract(epoch from max(published_at) - min(published_at))::float8 as span
      from outbox`;
    if (r && r.unpublished === 0 && r.published >= rows)
      return { rows: r.published, seconds: r.span ?? 0, polls };
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** With a retention of 0: waits for an empty outbox, timed from the call (polled every 20 ms). */
async function emptied(
  sql: postgres.Sql,
  rows: number,
): Promise<{ rows: number; seconds: number; polls: number }> {
  const started = performance.now();
  for (let polls = 1; ; polls++) {
    const [r] = await sql<{ n: number }[]>`select count(*)::int as n from outbox`;
    if (r?.n === 0) return { rows, seconds: (performance.now() - started) / 1000, polls };
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** Writes `rate` rows/s for `seconds` s in transactions of ROWS_PER_TX rows, as many in flight as needed. */
async function offerLoad(
  sql: postgres.Sql,
  rate: number,
  seconds: number,
): Promise<{ rows: number; seconds: number }> {
  const orders = Array.from({ length: AGGREGATES }, () => randomUUID());
  const started = performance.now();
  let rows = 0;
  let inFlight = 0;
  const pending = new Set<Promise<void>>();
  while (performance.now() - started < seconds * 1000) {
    const due = Math.floor((rate * (performance.now() - started)) / 1000);
    while (rows < due && inFlight < 32) {
      const orderId = orders[Math.floor(rows / ROWS_PER_TX) % AGGREGATES] as string;
      rows += ROWS_PER_TX;
      inFlight++;
      const tx = sql
        .begin(async (t) => {
          await t`select pg_advisory_xact_lock(hashtextextended(${orderId}, 0))`;
          await t`insert into outbox ${t(
            Array.from({ length: ROWS_PER_TX }, () => ({
              id: IDS.make(),
              aggregate_id: orderId,
              topic: TOPICS.orderCreated,
              event_type: "OrderCreated",
              schema_version: "1",
              payload: payload(orderId),
              headers: { traceparent: TRACEPARENT },
            })),
          )}`;
        })
        .then(() => {
          inFlight--;
        });
      pending.add(tx);
      void tx.finally(() => pending.delete(tx));
    }
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
  await Promise.all(pending);
  return { rows, seconds: (performance.now() - started) / 1000 };
}

run().catch((err) => {
  console.error(err);
  process.exit(1);
});
