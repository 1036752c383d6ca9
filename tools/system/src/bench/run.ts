import { mkdir, rm, writeFile } from "node:fs/promises";
import { cpus, totalmem } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { createKafka, type KafkaClient } from "@saga/kafka";
import { cacheDir, createDatabase, repoRoot } from "@saga/tools/infra";
import { cpuSeconds } from "@saga/tools/process";
import postgres from "postgres";
import { checkInvariants } from "../chaos/checker.ts";
import { table } from "../chaos/report.ts";
import { totalConsumerLag, waitQuiet } from "../stack/quiet.ts";
import { freePorts, type System, startSystem } from "../stack/system.ts";
import { type KafkaCeiling, kafkaCeiling, type PostgresCeiling, postgresCeiling } from "./ceilings.ts";
import { lineChart } from "./chart.ts";
import { closeLoad, createBenchUsers, type PhaseResult, runPhase } from "./load.ts";
import { type Summary, summarize } from "./stats.ts";

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
  cpu: Record<string, number>;
};

export type BenchReport = {
  at: string;
  machine: string;
  quick: boolean;
  /** The command line's options, to run it again. */
  args: string;
  phases: PhaseReport[];
  ceilings: { kafka: KafkaCeiling; postgres: PostgresCeiling };
  ratios: { sagasVsCommitCeiling: number; relayVsRawProducer: number };
  relayRowsPerS: number;
  invariantsPassed: boolean;
  invariantFailures: string[];
};

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function parseOptions(argv: string[]) {
  const { values } = parseArgs({
    args: argv,
    options: {
      quick: { type: "boolean", default: false },
      rates: { type: "string" },
      seconds: { type: "string" },
      concurrency: { type: "string", default: "64" },
    },
  });
  const quick = values.quick ?? false;
  return {
    quick,
    rates: (values.rates ?? (quick ? "50,150,300" : "50,100,200,300,400")).split(",").map(Number),
    seconds: Number(values.seconds ?? (quick ? 8 : 30)),
    concurrency: Number(values.concurrency),
  };
}

/** Saga latency and outcome of a phase's orders, read from order_db once they settled. */
async function settle(orderDb: postgres.Sql, phase: PhaseResult, timeoutMs = 120_000) {
  const deadline = Date.now() + timeoutMs;
  let pending = 0;
  do {
    const [row] = await orderDb<
      { n: number }[]
    >`select count(*)::int as n from orders where id = any(${phase.orderIds}::uuid[]) and status = 'PENDING'`;
    pending = row?.n ?? 0;
    if (pending === 0) break;
    await sleep(250);
  } while (Date.now() < deadline);
  // A canceled-by-request order's last change is the DELETE, not the saga: leave those out.
  const rows = await orderDb<{ ms: number; done_at: Date }[]>`
    select extract(epoch from updated_at - created_at)::float8 * 1000 as ms, updated_at as done_at
    from orders where id = any(${phase.orderIds}::uuid[]) and status <> 'PENDING' and coalesce(cancel_reason, '') <> 'CANCELED_BY_REQUEST'`;
  return { pending, rows };
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
  run: () => Promise<PhaseResult>,
): Promise<PhaseReport> {
  const pids = { ...system.pids(), "bench client": process.pid };
  const cpuBefore = await cpuSeconds(pids, ["bench client"]);
  const xidBefore = await nextTransactionId(dbs.order);
  let running = true;
  const lagSampler = sampleConsumerLag(kafka, () => !running);
  const phase = await run();
  const { pending, rows } = await settle(dbs.order, phase);
  running = false;
  const consumerLagMax = await lagSampler;
  const cpuAfter = await cpuSeconds(pids, ["bench client"]);
  const writeTransactionsPerSaga =
    ((await nextTransactionId(dbs.order)) - xidBefore) / Math.max(1, phase.created);
  const durationS = (phase.endedAt.getTime() - phase.startedAt.getTime()) / 1000;
  // Throughput over the time the phase's sagas took to finish, from its first request to its last final state.
  const lastDone = Math.max(phase.endedAt.getTime(), ...rows.map((r) => r.done_at.getTime()));
  const busyS = (lastDone - phase.startedAt.getTime()) / 1000;
  return {
    label: phase.label,
    offered: phase.offered ?? null,
    durationS,
    sagasPerS: rows.length / busyS,
    completed: rows.length,
    pending,
    failedRequests: phase.failed,
    failures: phase.failures,
    post: summarize(phase.postLatencies),
    saga: summarize(rows.map((r) => r.ms)),
    relayLag: summarize(await relayLags([dbs.user, dbs.order], phase.startedAt, phase.endedAt)),
    relayRowsPerS:
      (await publishedBetween([dbs.user, dbs.order], phase.startedAt, phase.endedAt)) / durationS,
    consumerLagMax,
    writeTransactionsPerSaga,
    // CPU seconds per second of wall time: 1.0 is one core kept busy.
    cpu: Object.fromEntries(
      Object.entries(cpuAfter).map(([k, v]) => [k, (v - (cpuBefore[k] ?? 0)) / durationS]),
    ),
  };
}

const failuresText = (p: PhaseReport) =>
  p.failedRequests === 0
    ? ""
    : `; failed POSTs: ${Object.entries(p.failures)
        .map(([why, n]) => `${n} × ${why}`)
        .join(", ")}`;

const fmt = (n: number, digits = 1) => (Number.isFinite(n) ? n.toFixed(digits) : "–");

export function formatBench(r: BenchReport): string {
  const rows = r.phases.map((p) => [
    p.offered === null ? "saturation" : String(p.offered),
    fmt(p.sagasPerS),
    `${fmt(p.post.p50)} / ${fmt(p.post.p95)} / ${fmt(p.post.p99)}`,
    `${fmt(p.saga.p50)} / ${fmt(p.saga.p95)} / ${fmt(p.saga.p99)}`,
    `${fmt(p.relayLag.p50)} / ${fmt(p.relayLag.p99)}`,
    String(p.consumerLagMax),
    fmt(p.writeTransactionsPerSaga),
    String(p.pending + p.failedRequests),
  ]);
  const cpuNames = Object.keys(r.phases[0]?.cpu ?? {});
  const cpuRows = r.phases.map((p) => [
    p.offered === null ? "saturation" : String(p.offered),
    ...cpuNames.map((n) => fmt(p.cpu[n] ?? 0, 2)),
    fmt(
      Object.values(p.cpu).reduce((a, b) => a + b, 0),
      2,
    ),
  ]);
  // What one saga costs each process: cores ÷ sagas/s.
  const msPerSaga = r.phases.map((p) => [
    p.offered === null ? "saturation" : String(p.offered),
    ...cpuNames.map((n) => fmt(((p.cpu[n] ?? 0) / p.sagasPerS) * 1000, 1)),
    fmt((Object.values(p.cpu).reduce((a, b) => a + b, 0) / p.sagasPerS) * 1000, 1),
  ]);
  const saturation = r.phases.at(-1);
  return [
    `## Saga benchmark (${r.quick ? "quick" : "full"}), ${r.at}`,
    "",
    `Machine: ${r.machine}. Everything (PostgreSQL, Kafka, 6 Node processes, the load client) on it.`,
    `Run: \`npm run bench -- ${r.args}\``,
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
        "stuck or failed",
      ],
      rows,
    ),
    "",
    "CPU, in cores (CPU seconds per second), per process:",
    "",
    table(["offered", ...cpuNames, "all"], cpuRows),
    "",
    "CPU milliseconds per saga, per process (cores ÷ sagas/s):",
    "",
    table(["offered", ...cpuNames, "all"], msPerSaga),
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
    r.invariantsPassed
      ? "Every saga reached its final state and the money adds up."
      : `FAILED: ${r.invariantFailures.join("; ")}`,
  ].join("\n");
}

async function main() {
  const opts = parseOptions(process.argv.slice(2));
  const dataDir = join(cacheDir, "bench", String(Date.now()));
  const log = (line: string) => console.log(line);
  const system = await startSystem({
    ports: await freePorts(),
    dataDir,
    durable: true,
    // The offered load comes from one address and one client: the gateway's rate limits out of its way.
    env: {
      LOG_LEVEL: "warn",
      RATE_LIMIT_SUBJECT_PER_S: "100000",
      RATE_LIMIT_SUBJECT_BURST: "100000",
      RATE_LIMIT_ADDRESS_PER_S: "100000",
      RATE_LIMIT_ADDRESS_BURST: "100000",
    },
    output: (name, line) => {
      if (/"level":(50|60)/.test(line)) log(`  ${name}: ${line.slice(0, 300)}`);
    },
    log,
  });
  const user = postgres(system.userDbUrl, { max: 2, onnotice: () => {} });
  const order = postgres(system.orderDbUrl, { max: 2, onnotice: () => {} });
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
    // Fresh processes spend their first seconds compiling (the broker's C2 compiler alone took 15 s of
    // CPU in a 20-second phase): long enough a warm-up that the phases measure the steady state.
    const warmUpS = opts.quick ? 8 : 20;
    log(`bench: warm-up (${warmUpS}s at 30 sagas/s)`);
    await runPhase({ gatewayUrl: system.gatewayUrl, users, durationS: warmUpS, rate: 30, label: "warm-up" });

    const phases: PhaseReport[] = [];
    for (const rate of opts.rates) {
      await drain({ user, order }, kafka, log);
      log(`bench: ${opts.seconds}s at ${rate} sagas/s offered`);
      const p = await measurePhase(system, { user, order }, kafka, () =>
        runPhase({ gatewayUrl: system.gatewayUrl, users, durationS: opts.seconds, rate, label: `${rate}/s` }),
      );
      log(
        `bench:   ${fmt(p.sagasPerS)} sagas/s, saga p99 ${fmt(p.saga.p99)} ms, POST p99 ${fmt(p.post.p99)} ms, relay lag p99 ${fmt(p.relayLag.p99)} ms${failuresText(p)}`,
      );
      phases.push(p);
    }
    await drain({ user, order }, kafka, log);
    log(`bench: ${opts.seconds}s at saturation (${opts.concurrency} clients)`);
    const saturation = await measurePhase(system, { user, order }, kafka, () =>
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
    });
    const failures = results.filter((r) => !r.pass).map((r) => `${r.name}: ${r.counterExamples[0] ?? ""}`);
    const relayRowsPerS = saturation.relayRowsPerS;
    const report: BenchReport = {
      at: new Date().toISOString(),
      machine: `${cpus().length} × ${cpus()[0]?.model ?? "cpu"}, ${Math.round(totalmem() / 2 ** 30)} GiB, Node ${process.version}`,
      quick: opts.quick,
      args: process.argv.slice(2).join(" "),
      phases,
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
          points: phases.filter((p) => p.offered).map((p) => ({ x: p.offered ?? 0, y: p.saga.p50 })),
        },
        {
          name: "saga p99",
          color: "#d62728",
          points: phases.filter((p) => p.offered).map((p) => ({ x: p.offered ?? 0, y: p.saga.p99 })),
        },
        {
          name: "POST /orders p50",
          color: "#2ca02c",
          points: phases.filter((p) => p.offered).map((p) => ({ x: p.offered ?? 0, y: p.post.p50 })),
        },
        {
          name: "POST /orders p99",
          color: "#ff7f0e",
          points: phases.filter((p) => p.offered).map((p) => ({ x: p.offered ?? 0, y: p.post.p99 })),
        },
      ],
    });
    await writeFile(join(out, `bench-${stamp}.svg`), svg);
    if (!opts.quick) {
      await writeFile(join(repoRoot, "bench", "latency.svg"), svg);
      await writeFile(
        join(repoRoot, "bench", "RESULTS.md"),
        `${text}\n\n![Latency against offered load](latency.svg)\n`,
      );
    }
    process.exitCode = report.invariantsPassed ? 0 : 1;
  } finally {
    await closeLoad();
    await Promise.allSettled([user.end(), order.end(), kafka.close()]);
    await system.stop();
    await rm(dataDir, { recursive: true, force: true });
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
