import { mkdir, rm, writeFile } from "node:fs/promises";
import { cpus, totalmem } from "node:os";
import { join } from "node:path";
import { postgresJsOptions, sessionParameters } from "@saga/db";
import { createKafka, type KafkaClient } from "@saga/kafka";
import { choiceOption, defineCli, type NumberRule, numberListOption, numberOption } from "@saga/tools/cli";
import { cacheDir, createDatabase, haproxyTool, nginxTool, repoRoot } from "@saga/tools/infra";
import { cpuSeconds, wakeups, wakeupsBetween } from "@saga/tools/process";
import postgres from "postgres";
import { checkInvariants } from "../chaos/checker.ts";
import { table } from "../chaos/report.ts";
import { totalConsumerLag, waitQuiet } from "../stack/quiet.ts";
import { freePorts, type System, startSystem } from "../stack/system.ts";
import { type KafkaCeiling, kafkaCeiling, type PostgresCeiling, postgresCeiling } from "./ceilings.ts";
import { lineChart } from "./chart.ts";
import { closeLoad, createBenchUsers, envArgs, type PhaseResult, runPhase, UNLIMITED_RATES } from "./load.ts";
import { formatOverload, runOverload, writeOverloadSection } from "./overload.ts";
import { type FinishedOrder, phaseSagas } from "./sagas.ts";
import { type Summary, summarize } from "./stats.ts";
import { brokenInvariants, exitCodeFor, verdictLine } from "./verdict.ts";
import { describeWarmUp, type WarmUpReport, warmUp } from "./warm-up.ts";

type PhaseReport = {
  label: string;
  offered: number | null;
  durationS: number;
  sagasPerS: number;
  completed: number;
  pending: number;
  failedRequests: number;
  /** Failed POST /orders by HTTP status or error code. */
  failures: Record<string, number>;
  post: Summary;
  saga: Summary;
  relayLag: Summary;
  relayRowsPerS: number;
  consumerLagMax: number;
  /** Write transactions committed in both databases per finished saga, relay marks included. */
  writeTransactionsPerSaga: number;
  /** Transactions of both databases per saga, read-only ones (a lone SELECT) included (pg_stat_database). */
  transactionsPerSaga: number;
  /** Statements the system's processes ran on both databases per saga, BEGIN and COMMIT included (pg_stat_statements). */
  statementsPerSaga: number;
  /**
   * WAL the server wrote per saga (pg_stat_wal): bytes, and the full-page images among its records (a page's
   * first change after a checkpoint logs the whole 8 KiB page).
   */
  walPerSaga: { bytes: number; fullPageImages: number };
  /** The statements that ran most often, per saga. */
  topStatements: { perSaga: number; query: string }[];
  /** Clients followed each order to its final state by GET /orders/:id. */
  follow: boolean;
  /** Client-side: POST sent → final state read, ms (follow phases only). */
  followed?: Summary;
  getsPerSaga?: number;
  /** Share of the GETs the server held (`Prefer: wait` honoured). */
  heldGetShare?: number;
  cpu: Record<string, number>;
  /** Wake-ups per second of wall time (voluntary context switches of every thread), per process. */
  wakeups: Record<string, number>;
};

export type BenchReport = {
  at: string;
  machine: string;
  quick: boolean;
  /** The command line's options, to run it again. */
  args: string;
  warmUp: WarmUpReport;
  phases: PhaseReport[];
  /** The system with no load at all: cores per process. */
  idle: {
    seconds: number;
    settleS: number;
    cpu: Record<string, number>;
    /** Per second, per process: what still wakes a system with nothing to do. */
    wakeups: Record<string, number>;
    statementsPerS: number;
  };
  ceilings: { kafka: KafkaCeiling; postgres: PostgresCeiling };
  ratios: { sagasVsCommitCeiling: number; relayVsRawProducer: number };
  relayRowsPerS: number;
  invariantsPassed: boolean;
  invariantFailures: string[];
};

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * How long after a start the processes treat queues and the saga backlog as warming up
 * (`ADMISSION_WARMUP_MS` and its easing, as long again; `SAGA_BACKLOG_WARMUP_MIN_MS`): the overload
 * phases, which measure a warm system, begin after it.
 */
const PROCESS_WARMUP_MS = 60_000;

/**
 * The warm-up's load (warm-up.ts): a rate the phases reach, in windows long enough that the broker's
 * compiler has done a window's worth of work between two of them.
 */
const WARM_UP_RATE = 100;
const WARM_UP_WINDOW_S = 15;

/** The system's cores: every process but the load client, which is measured beside it, not part of it. */
const systemCores = (cpu: Record<string, number>) =>
  Object.entries(cpu).reduce((sum, [n, c]) => (n === "bench client" ? sum : sum + c), 0);

const benchCli = defineCli({
  name: "bench",
  command: "npm run bench --",
  about:
    "The saga benchmark on a private copy of the system: a warm-up, fixed offered rates, phases whose clients\n" +
    "follow their orders, saturation, overload and a fresh start, beside this machine's PostgreSQL and Kafka\n" +
    "ceilings. A full run (about 16 minutes) writes bench/RESULTS.md and bench/latency.svg; any other run,\n" +
    "an experiment, writes bench/out/. Exits 1 when a saga did not finish or the money does not add up.",
  options: {
    quick: {
      type: "boolean",
      default: false,
      description: "shorter phases, about three minutes: an experiment",
    },
    rates: {
      type: "string",
      value: "R,R,…",
      defaultText: "50,100,200,300,400; quick 50,150,300",
      description: "the fixed offered rates, sagas/s",
    },
    seconds: {
      type: "string",
      value: "SECONDS",
      defaultText: "30; quick 8",
      description: "each phase's length",
    },
    concurrency: {
      type: "string",
      value: "N",
      default: "64",
      description: "clients of the saturation phase, a closed loop",
    },
    "follow-rates": {
      type: "string",
      value: "R,R,…",
      defaultText: "100,200,300; quick 100,200",
      description: "rates whose clients follow each order to its final state; empty for none",
    },
    "idle-seconds": {
      type: "string",
      value: "SECONDS",
      defaultText: "30; quick 10",
      description: "the window that measures the system with no load",
    },
    // Quiet time before the idle window: what a burst leaves behind (the collectors of every process, the
    // broker's compiler, PostgreSQL's autovacuum of the warm-up's dead rows) is not what idling costs.
    "idle-settle": {
      type: "string",
      value: "SECONDS",
      defaultText: "30; quick 0",
      description: "quiet time before the idle window",
    },
    "overload-only": {
      type: "boolean",
      default: false,
      description: "only the overload phases; a full run replaces their section of RESULTS.md",
    },
    "overload-seconds": {
      type: "string",
      value: "SECONDS",
      defaultText: "60; quick 15",
      description: "each overload phase's length",
    },
    // The capacity the overload rates are taken from, instead of measuring it: two runs to be compared
    // on a machine whose speed wanders then offer the same loads.
    "overload-capacity": {
      type: "string",
      value: "R",
      defaultText: "measured",
      description: "the capacity, sagas/s, the overload loads are multiples of",
    },
    "overload-factors": {
      type: "string",
      value: "F,F,…",
      default: "2,5",
      description: "the multiples of the capacity offered; empty for none, the fresh start alone",
    },
    // Refusing orders past its bounds (stack/edge.ts); an experiment.
    edge: {
      type: "string",
      value: "nginx|haproxy",
      defaultText: "none",
      description: "a proxy in front of the gateway that refuses past its bounds: an experiment",
    },
    // To compare a setting against its default.
    env: {
      type: "string",
      value: "NAME=value",
      multiple: true,
      default: [],
      description: "added to every process's environment, once per setting: an experiment",
    },
  },
});

const EDGES = ["nginx", "haproxy"] as const;
const POSITIVE = { above: 0 };

function benchOptions(values: ReturnType<typeof benchCli.parse>["values"]) {
  const quick = values.quick ?? false;
  const edge = values.edge === undefined ? undefined : choiceOption("edge", values.edge, EDGES);
  // Their defaults depend on --quick.
  const seconds = (
    name: "seconds" | "idle-seconds" | "idle-settle" | "overload-seconds",
    fallback: number,
    rule: NumberRule = POSITIVE,
  ) => {
    const raw = values[name];
    return raw === undefined ? fallback : numberOption(name, raw, rule);
  };
  return {
    quick,
    rates: numberListOption("rates", values.rates ?? (quick ? "50,150,300" : "50,100,200,300,400"), POSITIVE),
    seconds: seconds("seconds", quick ? 8 : 30),
    followRates: numberListOption(
      "follow-rates",
      values["follow-rates"] ?? (quick ? "100,200" : "100,200,300"),
      POSITIVE,
    ),
    idleSeconds: seconds("idle-seconds", quick ? 10 : 30),
    idleSettleS: seconds("idle-settle", quick ? 0 : 30, { min: 0 }),
    concurrency: numberOption("concurrency", values.concurrency, { integer: true, min: 1 }),
    overloadOnly: values["overload-only"] ?? false,
    overloadSeconds: seconds("overload-seconds", quick ? 15 : 60),
    overloadFactors: numberListOption("overload-factors", values["overload-factors"], POSITIVE),
    overloadCapacity:
      values["overload-capacity"] === undefined
        ? undefined
        : numberOption("overload-capacity", values["overload-capacity"], POSITIVE),
    edge,
    env: envArgs(values.env ?? []),
    // A quick run, or one with the edge or a setting changed, is an experiment: its reports go to bench/out
    // and the console, and RESULTS.md stays the default system's.
    official: !quick && edge === undefined && (values.env ?? []).length === 0,
  };
}

/**
 * A phase's orders once they settled, read from order_db: those it was answered for, and those whose POST
 * timed out at the gateway (created meanwhile all the same: they cost the same).
 */
async function settle(
  orderDb: postgres.Sql,
  phase: PhaseResult,
  timeoutMs = 120_000,
): Promise<{ pending: number; finished: FinishedOrder[] }> {
  const ofPhase = orderDb`(id = any(${phase.orderIds}::uuid[]) or created_at between ${phase.startedAt} and ${phase.endedAt})`;
  const deadline = Date.now() + timeoutMs;
  let pending = 0;
  do {
    const [row] = await orderDb<
      { n: number }[]
    >`select count(*)::int as n from orders where ${ofPhase} and status = 'PENDING'`;
    pending = row?.n ?? 0;
    if (pending === 0) break;
    await sleep(250);
  } while (Date.now() < deadline);
  const rows = await orderDb<{ ms: number; done_at: Date; by_request: boolean }[]>`
    select extract(epoch from updated_at - created_at)::float8 * 1000 as ms, updated_at as done_at,
      coalesce(cancel_reason, '') = 'CANCELED_BY_REQUEST' as by_request
    from orders where ${ofPhase} and status <> 'PENDING'`;
  return {
    pending,
    finished: rows.map((r) => ({ ms: r.ms, doneAt: r.done_at, canceledByRequest: r.by_request })),
  };
}

async function relayLags(dbs: postgres.Sql[], from: Date, to: Date): Promise<number[]> {
  const lags = await Promise.all(
    dbs.map(
      (sql) => sql<{ ms: number }[]>`
        select extract(epoch from published_at - created_at)::float8 * 1000 as ms from outbox
        where created_at between ${from} and ${to} and published_at is not null`,
    ),
  );
  return lags.flat().map((r) => r.ms);
}

async function publishedBetween(dbs: postgres.Sql[], from: Date, to: Date): Promise<number> {
  const counts = await Promise.all(
    dbs.map(
      (sql) =>
        sql<
          { n: number }[]
        >`select count(*)::int as n from outbox where published_at between ${from} and ${to}`,
    ),
  );
  return counts.reduce((sum, [row]) => sum + (row?.n ?? 0), 0);
}

/**
 * The next transaction id of the whole server: only transactions that write take one, so the
 * difference over a phase counts the write transactions of both databases (nothing else runs there).
 */
async function nextTransactionId(sql: postgres.Sql): Promise<number> {
  const [row] = await sql<{ n: string }[]>`select pg_snapshot_xmax(pg_current_snapshot())::text as n`;
  return Number(row?.n ?? 0);
}

/** The bench's own connections log in as this role, so that its queries are not counted as the system's. */
const BENCH_ROLE = "bench";

type StatementCounts = Map<string, { calls: number; query: string }>;

/** Calls per statement (pg_stat_statements) of the system's processes on both databases. */
async function statementCounts(admin: postgres.Sql, databases: string[]): Promise<StatementCounts> {
  const rows = await admin<{ key: string; calls: string; query: string }[]>`
    select s.dbid || ':' || s.queryid as key, s.calls::text as calls, s.query
    from pg_stat_statements s join pg_database d on d.oid = s.dbid
    where d.datname = any(${databases}) and s.userid <> (select oid from pg_roles where rolname = ${BENCH_ROLE})`;
  return new Map(rows.map((r) => [r.key, { calls: Number(r.calls), query: r.query }]));
}

function statementDelta(before: StatementCounts, after: StatementCounts) {
  const deltas = [...after].map(([key, { calls, query }]) => ({
    calls: calls - (before.get(key)?.calls ?? 0),
    query: query.replace(/\s+/g, " ").trim(),
  }));
  return {
    total: deltas.reduce((sum, d) => sum + d.calls, 0),
    top: deltas.sort((a, b) => b.calls - a.calls).slice(0, 10),
  };
}

/** Committed and rolled-back transactions of both databases (pg_stat_database, flushed within a second). */
async function transactionCount(admin: postgres.Sql, databases: string[]): Promise<number> {
  const [row] = await admin<{ n: string }[]>`
    select sum(xact_commit + xact_rollback)::text as n from pg_stat_database where datname = any(${databases})`;
  return Number(row?.n ?? 0);
}

/** WAL written by the whole server (pg_stat_wal; backends flush their counts within a second). */
async function walWritten(admin: postgres.Sql): Promise<{ bytes: number; fullPageImages: number }> {
  const [row] = await admin<{ bytes: string; fpi: string }[]>`
    select wal_bytes::text as bytes, wal_fpi::text as fpi from pg_stat_wal`;
  return { bytes: Number(row?.bytes ?? 0), fullPageImages: Number(row?.fpi ?? 0) };
}

type Observer = { admin: postgres.Sql; databases: string[] };

async function sampleConsumerLag(kafka: KafkaClient, stop: () => boolean): Promise<number> {
  let max = 0;
  while (!stop()) {
    // A sample lost to a rebalance is no reason to fail the run.
    max = Math.max(max, await totalConsumerLag(kafka).catch(() => 0));
    await sleep(500);
  }
  return max;
}

/** So that a phase does not measure the backlog an overloaded one left behind. */
async function drain(
  dbs: { user: postgres.Sql; order: postgres.Sql },
  kafka: KafkaClient,
  log: (line: string) => void,
) {
  const quiet = await waitQuiet({
    userDb: dbs.user,
    orderDb: dbs.order,
    kafka,
    timeoutS: 180,
    log: (line) => log(`bench:   draining what the last phase left: ${line}`),
  });
  if (!quiet) log("bench:   still not quiet after 180 s; going on");
}

async function measurePhase(
  system: System,
  dbs: { user: postgres.Sql; order: postgres.Sql },
  kafka: KafkaClient,
  observer: Observer,
  run: () => Promise<PhaseResult>,
): Promise<PhaseReport> {
  const pids = { ...system.pids(), "bench client": process.pid };
  const measuredFrom = performance.now();
  const cpuBefore = await cpuSeconds(pids, ["bench client"]);
  const wakeupsBefore = await wakeups(pids, ["bench client"]);
  const xidBefore = await nextTransactionId(dbs.order);
  const statementsBefore = await statementCounts(observer.admin, observer.databases);
  const transactionsBefore = await transactionCount(observer.admin, observer.databases);
  const walBefore = await walWritten(observer.admin);
  let running = true;
  const lagSampler = sampleConsumerLag(kafka, () => !running);
  const phase = await run();
  const { pending, finished } = await settle(dbs.order, phase);
  running = false;
  const consumerLagMax = await lagSampler;
  const cpuAfter = await cpuSeconds(pids, ["bench client"]);
  const wakeupsAfter = await wakeups(pids, ["bench client"]);
  // CPU and wake-ups were counted over the load and the settling after it, not over the load alone.
  const measuredS = (performance.now() - measuredFrom) / 1000;
  // One denominator for throughput and every per-saga figure: each saga of the phase that finished.
  const { sagas: finishedSagas, sagasPerS, latency } = phaseSagas(finished, phase);
  const sagas = Math.max(1, finishedSagas);
  const writeTransactionsPerSaga = ((await nextTransactionId(dbs.order)) - xidBefore) / sagas;
  // Backends flush their transaction counts to pg_stat_database at most once a second.
  await sleep(1100);
  const statements = statementDelta(
    statementsBefore,
    await statementCounts(observer.admin, observer.databases),
  );
  const transactionsPerSaga =
    ((await transactionCount(observer.admin, observer.databases)) - transactionsBefore) / sagas;
  const walAfter = await walWritten(observer.admin);
  const follow = phase.followLatencies.length > 0;
  const durationS = (phase.endedAt.getTime() - phase.startedAt.getTime()) / 1000;
  return {
    label: phase.label,
    offered: phase.offered ?? null,
    durationS,
    sagasPerS,
    completed: finishedSagas,
    pending,
    failedRequests: phase.failed,
    failures: phase.failures,
    post: summarize(phase.postLatencies),
    saga: latency,
    relayLag: summarize(await relayLags([dbs.user, dbs.order], phase.startedAt, phase.endedAt)),
    relayRowsPerS:
      (await publishedBetween([dbs.user, dbs.order], phase.startedAt, phase.endedAt)) / durationS,
    consumerLagMax,
    writeTransactionsPerSaga,
    transactionsPerSaga,
    statementsPerSaga: statements.total / sagas,
    walPerSaga: {
      bytes: (walAfter.bytes - walBefore.bytes) / sagas,
      fullPageImages: (walAfter.fullPageImages - walBefore.fullPageImages) / sagas,
    },
    topStatements: statements.top.map((t) => ({ perSaga: t.calls / sagas, query: t.query.slice(0, 160) })),
    follow,
    ...(follow
      ? {
          followed: summarize(phase.followLatencies),
          getsPerSaga: phase.gets / phase.followLatencies.length,
          heldGetShare: phase.heldGets / Math.max(1, phase.gets),
        }
      : {}),
    // CPU seconds per second of wall time: 1.0 is one core kept busy.
    cpu: Object.fromEntries(
      Object.entries(cpuAfter).map(([k, v]) => [k, (v - (cpuBefore[k] ?? 0)) / measuredS]),
    ),
    wakeups: Object.fromEntries(
      Object.entries(wakeupsBetween(wakeupsBefore, wakeupsAfter)).map(([k, v]) => [k, v / measuredS]),
    ),
  };
}

/** CPU of every process, and the statements they run, with no load at all for `settleS` and then `seconds`. */
async function measureIdle(system: System, observer: Observer, seconds: number, settleS: number) {
  await sleep(settleS * 1000);
  const pids = system.pids();
  const cpuBefore = await cpuSeconds(pids);
  const wakeupsBefore = await wakeups(pids, ["bench client"]);
  const statementsBefore = await statementCounts(observer.admin, observer.databases);
  const started = performance.now();
  await sleep(seconds * 1000);
  const cpuAfter = await cpuSeconds(pids);
  const wakeupsAfter = await wakeups(pids, ["bench client"]);
  const wallS = (performance.now() - started) / 1000;
  const statements = statementDelta(
    statementsBefore,
    await statementCounts(observer.admin, observer.databases),
  );
  return {
    seconds,
    settleS,
    cpu: Object.fromEntries(Object.entries(cpuAfter).map(([k, v]) => [k, (v - (cpuBefore[k] ?? 0)) / wallS])),
    wakeups: Object.fromEntries(
      Object.entries(wakeupsBetween(wakeupsBefore, wakeupsAfter)).map(([k, v]) => [k, v / wallS]),
    ),
    statementsPerS: statements.total / wallS,
  };
}

/**
 * A phase's refused POSTs and why (`770 × 503`): at offered rates past what the system carries, the
 * gateway sheds with 503, which says nothing against the orders it accepted (`not final` does).
 */
const refusedText = (p: PhaseReport) =>
  p.failedRequests === 0
    ? "0"
    : Object.entries(p.failures)
        .map(([why, n]) => `${n} × ${why}`)
        .join(", ");

const failuresText = (p: PhaseReport) => (p.failedRequests === 0 ? "" : `; failed POSTs: ${refusedText(p)}`);

const fmt = (n: number, digits = 1) => (Number.isFinite(n) ? n.toFixed(digits) : "–");

function formatBench(r: BenchReport): string {
  const name = (p: PhaseReport) =>
    p.offered === null ? "saturation" : `${p.offered}${p.follow ? " followed" : ""}`;
  const rows = r.phases.map((p) => [
    name(p),
    fmt(p.sagasPerS),
    `${fmt(p.post.p50)} / ${fmt(p.post.p95)} / ${fmt(p.post.p99)}`,
    `${fmt(p.saga.p50)} / ${fmt(p.saga.p95)} / ${fmt(p.saga.p99)}`,
    `${fmt(p.relayLag.p50)} / ${fmt(p.relayLag.p99)}`,
    String(p.consumerLagMax),
    fmt(p.writeTransactionsPerSaga),
    fmt(p.transactionsPerSaga),
    fmt(p.statementsPerSaga),
    `${fmt(p.walPerSaga.bytes / 1024)} (${fmt(p.walPerSaga.fullPageImages, 2)})`,
    refusedText(p),
    String(p.pending),
  ]);
  const followed = r.phases.filter((p) => p.followed);
  const followRows = followed.map((p) => [
    name(p),
    fmt(p.sagasPerS),
    `${fmt(p.followed?.p50 ?? Number.NaN)} / ${fmt(p.followed?.p95 ?? Number.NaN)} / ${fmt(p.followed?.p99 ?? Number.NaN)}`,
    fmt(p.getsPerSaga ?? Number.NaN, 2),
    `${fmt((p.heldGetShare ?? 0) * 100, 0)} %`,
  ]);
  const cpuNames = Object.keys(r.phases[0]?.cpu ?? {});
  const idleRow = [
    "idle",
    ...cpuNames.map((n) => fmt(r.idle.cpu[n] ?? 0, 3)),
    fmt(systemCores(r.idle.cpu), 3),
  ];
  const cpuRows = r.phases.map((p) => [
    name(p),
    ...cpuNames.map((n) => fmt(p.cpu[n] ?? 0, 2)),
    fmt(systemCores(p.cpu), 2),
  ]);
  // What one saga costs each process: cores ÷ sagas/s.
  const msPerSaga = r.phases.map((p) => [
    name(p),
    ...cpuNames.map((n) => fmt(((p.cpu[n] ?? 0) / p.sagasPerS) * 1000, 1)),
    fmt((systemCores(p.cpu) / p.sagasPerS) * 1000, 1),
  ]);
  // How often a saga wakes each process (cores and wake-ups measured over the same phase), and the CPU
  // each wake-up costs it on average: at low rates most of a process's work is being woken.
  const wokenRow = (
    label: string,
    cpu: Record<string, number>,
    woken: Record<string, number>,
    per: number,
  ) => [
    label,
    ...cpuNames.map((n) => {
      const w = woken[n] ?? 0;
      return `${fmt(w / per, 1)} (${w > 0 ? fmt(((cpu[n] ?? 0) / w) * 1e6, 0) : "–"})`;
    }),
    fmt(systemCores(woken) / per, 1),
  ];
  const wakeupsPerSaga = [
    // Per second, not per saga: with no saga, what wakes the processes is what their idle CPU pays for.
    wokenRow("idle, a second", r.idle.cpu, r.idle.wakeups, 1),
    ...r.phases.map((p) => wokenRow(name(p), p.cpu, p.wakeups, p.sagasPerS)),
  ];
  const saturation = r.phases.at(-1);
  return [
    `## Saga benchmark (${r.quick ? "quick" : "full"}), ${r.at}`,
    "",
    `Machine: ${r.machine}. Everything (PostgreSQL, Kafka, 6 Node processes, the load client) on it.`,
    `Run: \`npm run bench -- ${r.args}\``,
    describeWarmUp(r.warmUp),
    "",
    table(
      [
        "offered sagas/s",
        "sagas/s",
        "POST /orders ms p50/p95/p99",
        "saga ms p50/p95/p99",
        "relay lag ms p50/p99",
        "max consumer lag",
        "write tx per saga",
        "tx per saga",
        "statements per saga",
        "WAL KiB per saga (full-page images)",
        "POSTs refused",
        "not final",
      ],
      rows,
    ),
    "",
    ...(followRows.length
      ? [
          "Clients following each order by GET /orders/:id (`Prefer: wait`), as the client sees the saga:",
          "",
          table(
            ["offered", "sagas/s", "POST sent → final state ms p50/p95/p99", "GETs per saga", "held"],
            followRows,
          ),
          "",
        ]
      : []),
    `CPU, in cores (CPU seconds per second), per process; idle: ${r.idle.seconds} s with no load, after ${r.idle.settleS} s without (${fmt(r.idle.statementsPerS)} statements/s):`,
    "",
    table(["offered", ...cpuNames, "system (all but the bench client)"], [idleRow, ...cpuRows]),
    "",
    "CPU milliseconds per saga, per process (cores ÷ sagas/s):",
    "",
    table(["offered", ...cpuNames, "system (all but the bench client)"], msPerSaga),
    "",
    "Wake-ups per saga (at idle, a second), per process (voluntary context switches of its threads: each time one blocked, on a socket, a lock or a disk flush, and was woken), and in brackets the µs of CPU a wake-up cost it on average:",
    "",
    table(["offered", ...cpuNames, "system (all but the bench client)"], wakeupsPerSaga),
    "",
    `Statements per saga by statement, at ${name(r.phases.find((p) => p.offered !== null) ?? r.phases[0] ?? ({ offered: null } as PhaseReport))}:`,
    "",
    table(
      ["per saga", "statement"],
      (r.phases.find((p) => p.offered !== null) ?? r.phases[0])?.topStatements.map((t) => [
        fmt(t.perSaga, 2),
        `\`${t.query.replaceAll("|", "\\|").replaceAll("`", "'")}\``,
      ]) ?? [],
    ),
    "",
    table(
      ["ceiling on this machine", "measured", "ratio"],
      [
        [
          `PostgreSQL small write transactions/s (postgres.js, ${r.ceilings.postgres.concurrency} clients)`,
          fmt(r.ceilings.postgres.commitsPerS, 0),
          `sagas/s ÷ (commits/s ÷ ${fmt(saturation?.writeTransactionsPerSaga ?? 0)} write tx per saga) = ${fmt(r.ratios.sagasVsCommitCeiling, 2)}`,
        ],
        [
          `raw Kafka producer rows/s (batches of ${r.ceilings.kafka.batch}, acks=all)`,
          fmt(r.ceilings.kafka.produceRowsPerS, 0),
          `relay rows/s ÷ raw = ${fmt(r.ratios.relayVsRawProducer, 2)}`,
        ],
        ["raw Kafka produce-and-consume rows/s", fmt(r.ceilings.kafka.consumeRowsPerS, 0), ""],
        ["relay rows/s at saturation (both outboxes)", fmt(r.relayRowsPerS, 0), ""],
      ],
    ),
    "",
    verdictLine(r.invariantFailures),
  ].join("\n");
}

async function main() {
  const opts = benchCli.parseOrExit(process.argv.slice(2), ({ values }) => benchOptions(values));
  const dataDir = join(cacheDir, "bench", String(Date.now()));
  const log = (line: string) => console.log(line);
  const system = await startSystem({
    ports: await freePorts(),
    dataDir,
    durable: true,
    statementStats: true,
    ...(opts.edge && {
      edge: { kind: opts.edge, tool: await (opts.edge === "nginx" ? nginxTool : haproxyTool)(log) },
    }),
    env: { LOG_LEVEL: "warn", ...UNLIMITED_RATES, ...opts.env },
    output: (name, line) => {
      if (/"level":(50|60)/.test(line)) log(`  ${name}: ${line.slice(0, 300)}`);
    },
    log,
  });
  const started = performance.now();
  const admin = postgres({
    ...postgresJsOptions(new URL("/postgres", system.userDbUrl).toString()),
    max: 1,
    onnotice: () => {},
    connection: sessionParameters(),
  });
  await admin`create extension if not exists pg_stat_statements`;
  await admin.unsafe(`create role ${BENCH_ROLE} login superuser`);
  const observer: Observer = {
    admin,
    databases: [new URL(system.userDbUrl).pathname.slice(1), new URL(system.orderDbUrl).pathname.slice(1)],
  };
  const asBench = (url: string) => Object.assign(new URL(url), { username: BENCH_ROLE }).toString();
  const user = postgres({
    ...postgresJsOptions(asBench(system.userDbUrl)),
    max: 2,
    onnotice: () => {},
    connection: sessionParameters(),
  });
  const order = postgres({
    ...postgresJsOptions(asBench(system.orderDbUrl)),
    max: 2,
    onnotice: () => {},
    connection: sessionParameters(),
  });
  const kafka = createKafka({ brokers: system.kafkaBrokers, clientId: "bench" });
  try {
    log("bench: ceilings (PostgreSQL commits, raw Kafka producer)");
    const pgUrl = await createDatabase(new URL("/postgres", system.userDbUrl).toString(), "bench_ceiling");
    const pgCeiling = await postgresCeiling(pgUrl, { concurrency: 32, seconds: opts.quick ? 5 : 15 });
    const kCeiling = await kafkaCeiling(system.kafkaBrokers, {
      messages: opts.quick ? 20_000 : 100_000,
      batch: 500,
    });
    log(
      `bench: PostgreSQL ${fmt(pgCeiling.commitsPerS, 0)} commits/s; Kafka ${fmt(kCeiling.produceRowsPerS, 0)} rows/s produced`,
    );

    const users = await createBenchUsers(system.gatewayUrl, 500, 1_000_000_000, {
      adminToken: await system.token("bench", { admin: true, ttlSeconds: 24 * 3600 }),
      token: (id) => system.token(id, { ttlSeconds: 24 * 3600 }),
    });
    const maxWindows = opts.quick ? 4 : 12;
    log(
      `bench: warm-up, up to ${maxWindows} × ${WARM_UP_WINDOW_S}s at ${WARM_UP_RATE} sagas/s, until the CPU a saga settles`,
    );
    const warm = await warmUp({
      run: (rate, durationS) =>
        runPhase({ gatewayUrl: system.gatewayUrl, users, durationS, rate, label: "warm-up" }),
      cpuSeconds: async () => systemCores(await cpuSeconds(system.pids())),
      rate: WARM_UP_RATE,
      windowS: WARM_UP_WINDOW_S,
      maxWindows,
      tolerance: 0.05,
      log,
    });

    const overload = async () => {
      const report = await runOverload({
        system,
        dbs: { user, order },
        kafka,
        users,
        seconds: opts.overloadSeconds,
        capacity: opts.overloadCapacity,
        factors: opts.overloadFactors,
        warmUntil: started + PROCESS_WARMUP_MS,
        log,
      });
      const { results } = await checkInvariants({
        userDbUrl: system.userDbUrl,
        orderDbUrl: system.orderDbUrl,
        kafka,
        statementTimeoutMs: system.statementTimeoutMs,
      });
      const broken = brokenInvariants(results);
      const section = `${formatOverload(report, process.argv.slice(2).join(" "), new Date().toISOString())}\n\n${verdictLine(broken)}`;
      console.log(`\n${section}\n`);
      if (opts.official) await writeOverloadSection(join(repoRoot, "bench", "RESULTS.md"), section);
      return broken;
    };
    if (opts.overloadOnly) {
      process.exitCode = exitCodeFor(await overload());
      return;
    }
    await drain({ user, order }, kafka, log);
    log(`bench: ${opts.idleSeconds}s idle, after ${opts.idleSettleS}s without load`);
    const idle = await measureIdle(system, observer, opts.idleSeconds, opts.idleSettleS);
    log(`bench:   idle: ${fmt(systemCores(idle.cpu), 3)} cores, ${fmt(idle.statementsPerS)} statements/s`);

    const phases: PhaseReport[] = [];
    const schedule = [
      ...opts.rates.map((rate) => ({ rate, follow: false })),
      ...opts.followRates.map((rate) => ({ rate, follow: true })),
    ];
    for (const { rate, follow } of schedule) {
      await drain({ user, order }, kafka, log);
      log(
        `bench: ${opts.seconds}s at ${rate} sagas/s offered${follow ? ", clients following their orders" : ""}`,
      );
      const p = await measurePhase(system, { user, order }, kafka, observer, () =>
        runPhase({
          gatewayUrl: system.gatewayUrl,
          users,
          durationS: opts.seconds,
          rate,
          follow,
          label: `${rate}/s${follow ? " followed" : ""}`,
        }),
      );
      log(
        `bench:   ${fmt(p.sagasPerS)} sagas/s, saga p99 ${fmt(p.saga.p99)} ms${p.followed ? ` (client-side ${fmt(p.followed.p99)} ms, ${fmt(p.getsPerSaga ?? 0, 2)} GETs a saga)` : ""}, POST p99 ${fmt(p.post.p99)} ms, relay lag p99 ${fmt(p.relayLag.p99)} ms, ${fmt(p.statementsPerSaga)} statements, ${fmt(p.writeTransactionsPerSaga, 2)} write tx and ${fmt(p.walPerSaga.bytes / 1024)} KiB of WAL a saga${failuresText(p)}`,
      );
      phases.push(p);
    }
    await drain({ user, order }, kafka, log);
    log(`bench: ${opts.seconds}s at saturation (${opts.concurrency} clients)`);
    const saturation = await measurePhase(system, { user, order }, kafka, observer, () =>
      runPhase({
        gatewayUrl: system.gatewayUrl,
        users,
        durationS: opts.seconds,
        concurrency: opts.concurrency,
        label: "saturation",
      }),
    );
    phases.push(saturation);
    log(`bench:   ${fmt(saturation.sagasPerS)} sagas/s at saturation${failuresText(saturation)}`);

    const { results } = await checkInvariants({
      userDbUrl: system.userDbUrl,
      orderDbUrl: system.orderDbUrl,
      kafka,
      statementTimeoutMs: system.statementTimeoutMs,
    });
    const failures = brokenInvariants(results);
    const relayRowsPerS = saturation.relayRowsPerS;
    const report: BenchReport = {
      at: new Date().toISOString(),
      machine: `${cpus().length} × ${cpus()[0]?.model ?? "cpu"}, ${Math.round(totalmem() / 2 ** 30)} GiB, Node ${process.version}`,
      quick: opts.quick,
      args: process.argv.slice(2).join(" "),
      warmUp: warm,
      phases,
      idle,
      ceilings: { kafka: kCeiling, postgres: pgCeiling },
      ratios: {
        sagasVsCommitCeiling:
          saturation.sagasPerS / (pgCeiling.commitsPerS / saturation.writeTransactionsPerSaga),
        relayVsRawProducer: relayRowsPerS / kCeiling.produceRowsPerS,
      },
      relayRowsPerS,
      invariantsPassed: failures.length === 0,
      invariantFailures: failures,
    };
    const text = formatBench(report);
    console.log(`\n${text}\n`);
    const out = join(repoRoot, "bench", "out");
    await mkdir(out, { recursive: true });
    const stamp = report.at.replace(/[:.]/g, "-");
    await writeFile(join(out, `bench-${stamp}.json`), JSON.stringify(report, null, 2));
    const svg = lineChart({
      title: "Latency against offered load",
      xLabel: "offered sagas/s",
      yLabel: "ms (log scale)",
      series: [
        {
          name: "saga p50",
          color: "#1f77b4",
          points: phases
            .filter((p) => p.offered && !p.follow)
            .map((p) => ({ x: p.offered ?? 0, y: p.saga.p50 })),
        },
        {
          name: "saga p99",
          color: "#d62728",
          points: phases
            .filter((p) => p.offered && !p.follow)
            .map((p) => ({ x: p.offered ?? 0, y: p.saga.p99 })),
        },
        {
          name: "POST /orders p50",
          color: "#2ca02c",
          points: phases
            .filter((p) => p.offered && !p.follow)
            .map((p) => ({ x: p.offered ?? 0, y: p.post.p50 })),
        },
        {
          name: "POST /orders p99",
          color: "#ff7f0e",
          points: phases
            .filter((p) => p.offered && !p.follow)
            .map((p) => ({ x: p.offered ?? 0, y: p.post.p99 })),
        },
      ],
    });
    await writeFile(join(out, `bench-${stamp}.svg`), svg);
    if (opts.official) {
      await writeFile(join(repoRoot, "bench", "latency.svg"), svg);
      await writeFile(
        join(repoRoot, "bench", "RESULTS.md"),
        `${text}\n\n![Latency against offered load](latency.svg)\n`,
      );
    }
    const overloadFailures = await overload();
    process.exitCode = exitCodeFor(failures, overloadFailures);
  } finally {
    await closeLoad();
    await Promise.allSettled([user.end(), order.end(), admin.end(), kafka.close()]);
    await system.stop();
    await rm(dataDir, { recursive: true, force: true });
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
