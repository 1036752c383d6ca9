/**
 * What each way of waking the relay costs the WRITERS (the services' transactions), measured on a
 * durable PostgreSQL (fsync on, synchronous_commit on) that this script starts itself:
 *
 * - `baseline`: nothing but the outbox insert.
 * - `notify`: a statement-level trigger that calls pg_notify, and a session LISTENing. NOTIFY takes a
 *   database-wide lock from pre-commit until the commit record is flushed, so notifying commits are
 *   serialised and group commit is lost.
 * - `replication`: a publication and a temporary logical replication slot streaming inserts to us.
 *   Nothing happens on the writer's commit path; the walsender decodes the WAL in its own process.
 *
 * Also measured: WAL bytes per outbox row, i.e. what a persistent (non-temporary) slot would retain
 * while its consumer is down.
 *
 * Usage: npm run bench:writers -w relay [-- --seconds 8 --writers 1,8,32]; --help lists the options.
 * Prints a markdown table.
 */
import { spawn } from "node:child_process";
import { chmod, mkdtemp, rm } from "node:fs/promises";
import { cpus, tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import type { Readable } from "node:stream";
import { fileURLToPath } from "node:url";
import { migrateDatabase, postgresJsOptions, sessionParameters } from "@saga/db";
import { defineCli, numberListOption, numberOption } from "@saga/tools/cli";
import { createDatabase, startPostgres } from "@saga/tools/infra";
import postgres from "postgres";
import { startReplicationWakeups } from "../src/replication-wakeups.ts";
import { freePort, median, percentile } from "./support.ts";

const writerCostCli = defineCli({
  name: "bench:writers",
  command: "npm run bench:writers -w relay --",
  about:
    "What each way of waking the relay (none, NOTIFY, logical replication) costs the writers' commits, on a\n" +
    "durable PostgreSQL it starts itself. Prints a markdown table.",
  options: {
    seconds: { type: "string", value: "SECONDS", default: "6", description: "each cell's length" },
    writers: {
      type: "string",
      value: "N,N,…",
      default: "1,8,32",
      description: "concurrent writers of each cell",
    },
    rounds: {
      type: "string",
      value: "N",
      default: "3",
      description: "interleaved rounds; the median is shown",
    },
    "rows-per-tx": { type: "string", value: "N", default: "1", description: "outbox rows per transaction" },
    // Internal: run as the wake-up listener child process (see listen()).
    listen: {
      type: "string",
      value: "MODE",
      description: "internal: the wake-up listener child (notify|replication)",
    },
    url: { type: "string", value: "URL", description: "internal: the listener's database" },
  },
});

const { values, seconds, writerCounts, rounds, rowsPerTx } = writerCostCli.parseOrExit(
  process.argv.slice(2),
  ({ values }) => ({
    values,
    seconds: numberOption("seconds", values.seconds, { above: 0 }),
    writerCounts: numberListOption("writers", values.writers, { integer: true, min: 1 }),
    rounds: numberOption("rounds", values.rounds, { integer: true, min: 1 }),
    rowsPerTx: numberOption("rows-per-tx", values["rows-per-tx"], { integer: true, min: 1 }),
  }),
);
const MODES = ["baseline", "notify", "replication"] as const;

type Mode = "baseline" | "notify" | "replication";
type Result = {
  round?: number;
  mode: Mode;
  writers: number;
  commits: number;
  perSecond: number;
  p50: number;
  p99: number;
  walPerRow: number;
  /** Writers waiting for the notification queue lock, on average over the samples. */
  notifyLockWaiters: number;
  /** Writers waiting to write or flush WAL (group commit at work), on average. */
  walFlushWaiters: number;
  walsenderCpuMs: number | undefined;
};

async function run(): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), "relay-writer-cost-"));
  // PostgreSQL runs as another account when we are root: it must reach the directory.
  await chmod(dir, 0o755);
  const server = await startPostgres({ dataDir: join(dir, "pg"), port: await freePort(), durable: true });
  try {
    const url = await createDatabase(server.url, "writer_cost");
    await migrateDatabase(url, "order");
    const admin = postgres({
      ...postgresJsOptions(url),
      max: 1,
      onnotice: () => {},
      connection: sessionParameters(),
    });
    // The migration may have installed a wake-up mechanism: start from a bare outbox.
    await admin.unsafe(`drop trigger if exists outbox_notify on outbox`);
    await admin.unsafe(`drop publication if exists outbox_relay`);
    const settings =
      await admin`select name, setting from pg_settings where name in ('fsync', 'synchronous_commit', 'wal_level', 'server_version')`;
    console.error(`postgres: ${settings.map((s) => `${s.name}=${s.setting}`).join(" ")}`);

    // Rounds interleave the mechanisms, so a noisy neighbour hurts all of them alike; cells are medians.
    const samples: Result[] = [];
    for (let round = 1; round <= rounds; round++) {
      for (const writers of writerCounts) {
        for (const mode of MODES) {
          const r = { ...(await measure(url, admin, mode, writers)), round };
          samples.push(r);
          console.error(
            `round ${round} ${mode} x${writers}: ${r.perSecond.toFixed(0)} commits/s p50 ${r.p50.toFixed(2)} ms p99 ${r.p99.toFixed(2)} ms`,
          );
        }
      }
    }
    await admin.end();

    console.log(
      `\nWriter cost: median of ${rounds} interleaved rounds of ${seconds} s per cell, ${rowsPerTx} outbox row(s) per transaction ` +
        `(lock the aggregate, insert), fsync and synchronous_commit on, PostgreSQL ${server.version}, ${cpus().length} CPUs shared by server and writers\n`,
    );
    console.log(
      "| writers | mechanism | commits/s | vs baseline (median of per-round ratios) | commit p50 (ms) | commit p99 (ms) | writers waiting for the NOTIFY lock (avg) | writers waiting on WAL flush (avg) | walsender CPU (% of a core) |",
    );
    console.log("|---:|---|---:|---:|---:|---:|---:|---:|---:|");
    for (const writers of writerCounts) {
      const cell = (mode: Mode) => {
        const of = samples.filter((r) => r.writers === writers && r.mode === mode);
        const med = (f: (r: Result) => number) => median(of.map(f));
        return {
          perSecond: med((r) => r.perSecond),
          p50: med((r) => r.p50),
          p99: med((r) => r.p99),
          walPerRow: med((r) => r.walPerRow),
          notifyLock: med((r) => r.notifyLockWaiters),
          walFlush: med((r) => r.walFlushWaiters),
          cpu:
            of[0]?.walsenderCpuMs === undefined
              ? undefined
              : med((r) => ((r.walsenderCpuMs ?? 0) / (seconds * 1000)) * 100),
        };
      };
      // Each round's ratio to the baseline of the same round, then the median: robust to slow drifts in load.
      const ratio = (mode: Mode) =>
        median(
          samples
            .filter((r) => r.writers === writers && r.mode === mode)
            .map((r) => {
              const base = samples.find(
                (b) => b.writers === writers && b.mode === "baseline" && b.round === r.round,
              );
              return base ? r.perSecond / base.perSecond : Number.NaN;
            }),
        );
      for (const mode of MODES) {
        const r = cell(mode);
        const delta = Math.round((ratio(mode) - 1) * 100);
        console.log(
          `| ${writers} | ${mode} | ${r.perSecond.toFixed(0)} | ${mode === "baseline" ? "" : `${delta >= 0 ? "+" : ""}${delta}%`} | ${r.p50.toFixed(2)} | ${r.p99.toFixed(2)} | ${r.notifyLock.toFixed(1)} | ${r.walFlush.toFixed(1)} | ${r.cpu === undefined ? "" : r.cpu.toFixed(0)} |`,
        );
      }
    }
    const walPerRow = median(samples.map((r) => r.walPerRow));
    console.log(
      `\nWAL per outbox row (insert + commit + marking update excluded): ${walPerRow.toFixed(0)} bytes, the same in all three; ` +
        `a persistent slot would hold that much per row written while its consumer is down, a temporary one nothing.`,
    );
  } finally {
    await server.stop();
    await rm(dir, { recursive: true, force: true });
  }
}

async function measure(url: string, admin: postgres.Sql, mode: Mode, writers: number): Promise<Result> {
  const teardown: (() => Promise<unknown>)[] = [];
  let wakeups = 0;
  if (mode === "notify") {
    await admin.unsafe(`
      create or replace function outbox_notify() returns trigger language plpgsql as $$
      begin perform pg_notify('outbox', ''); return null; end $$`);
    await admin.unsafe(
      `create trigger outbox_notify after insert on outbox for each statement execute function outbox_notify()`,
    );
    teardown.push(() => admin.unsafe(`drop trigger outbox_notify on outbox`));
  }
  if (mode === "replication") {
    await admin.unsafe(`create publication outbox_relay for table outbox with (publish = 'insert')`);
    teardown.push(() => admin.unsafe(`drop publication outbox_relay`));
  }
  if (mode !== "baseline") {
    // The listener runs in a process of its own, as the relay does, so its CPU is not taken from the writers'.
    const child = spawn(process.execPath, [fileURLToPath(import.meta.url), "--listen", mode, "--url", url], {
      stdio: ["ignore", "pipe", "inherit"],
    });
    const lines = createInterface({ input: child.stdout as Readable });
    const counted = new Promise<number>((resolve) =>
      lines.on("line", (line) => line.startsWith("wakeups ") && resolve(Number(line.slice(8)))),
    );
    await new Promise<void>((resolve) => lines.on("line", (line) => line === "ready" && resolve()));
    teardown.unshift(async () => {
      child.kill("SIGTERM");
      wakeups = await counted;
    });
  }

  const sql = postgres({
    ...postgresJsOptions(url),
    max: writers,
    onnotice: () => {},
    connection: sessionParameters({ application_name: "writer" }),
  });
  await Promise.all(Array.from({ length: writers }, () => sql`select 1`));
  // What the writers wait for, sampled: a CPU-independent view of the NOTIFY lock's serialisation.
  const waits = { samples: 0, notifyLock: 0, walFlush: 0 };
  const sampler = setInterval(async () => {
    const rows = await admin<{ type: string | null; event: string | null; n: number }[]>`
      select wait_event_type as type, wait_event as event, count(*)::int as n
      from pg_stat_activity where application_name = 'writer' and state = 'active' group by 1, 2`.catch(
      () => [],
    );
    waits.samples++;
    for (const r of rows) {
      // PreCommit_Notify locks the notification queue: a heavyweight lock on an object of pg_database.
      if (r.type === "Lock" && r.event === "object") waits.notifyLock += r.n;
      if (r.type === "LWLock" && r.event === "WALWrite") waits.walFlush += r.n;
      if (r.type === "IO" && r.event === "WalSync") waits.walFlush += r.n;
    }
  }, 10);
  const [start] = await admin<{ lsn: string }[]>`select pg_current_wal_lsn()::text as lsn`;
  const cpuBefore = mode === "replication" ? await walsenderCpu(admin) : undefined;
  const latencies: number[] = [];
  const deadline = performance.now() + seconds * 1000;
  await Promise.all(
    Array.from({ length: writers }, async (_, w) => {
      for (let i = 0; performance.now() < deadline; i++) {
        const aggregate = `agg-${w}-${i % 100}`;
        const started = performance.now();
        await sql.begin(async (tx) => {
          await tx`select pg_advisory_xact_lock(hashtextextended(${aggregate}, 0))`;
          const rows = Array.from({ length: rowsPerTx }, () => ({
            aggregate_id: aggregate,
            topic: "order.created",
            event_type: "OrderCreated",
            schema_version: "1",
            payload:
              '{"orderId":"00000000-0000-0000-0000-000000000000","userId":"00000000-0000-0000-0000-000000000000","amount":100}',
          }));
          await tx`insert into outbox ${tx(rows)}`;
        });
        latencies.push(performance.now() - started);
      }
    }),
  );
  clearInterval(sampler);
  const [wal] = await admin<
    { bytes: number }[]
  >`select pg_wal_lsn_diff(pg_current_wal_lsn(), ${start?.lsn ?? "0/0"}::pg_lsn)::float8 as bytes`;
  const cpuAfter = mode === "replication" ? await walsenderCpu(admin) : undefined;
  await sql.end();
  for (const step of teardown) await step();
  await admin`truncate outbox`;
  await admin`checkpoint`;

  latencies.sort((a, b) => a - b);
  const rows = latencies.length * rowsPerTx;
  if (mode !== "baseline") console.error(`  ${mode}: ${wakeups} wake-ups for ${rows} rows`);
  return {
    mode,
    writers,
    commits: latencies.length,
    perSecond: latencies.length / seconds,
    p50: percentile(latencies, 0.5),
    p99: percentile(latencies, 0.99),
    walPerRow: (wal?.bytes ?? 0) / rows,
    notifyLockWaiters: waits.notifyLock / Math.max(1, waits.samples),
    walFlushWaiters: waits.walFlush / Math.max(1, waits.samples),
    walsenderCpuMs: cpuBefore === undefined || cpuAfter === undefined ? undefined : cpuAfter - cpuBefore,
  };
}

/** CPU time of the walsender processes, from /proc, in ms (Linux only; undefined elsewhere). */
async function walsenderCpu(admin: postgres.Sql): Promise<number | undefined> {
  const pids = await admin`select pid from pg_stat_activity where backend_type = 'walsender'`;
  const { readFile } = await import("node:fs/promises");
  let ticks = 0;
  for (const { pid } of pids) {
    const stat = await readFile(`/proc/${pid}/stat`, "utf8").catch(() => undefined);
    if (!stat) return undefined;
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    ticks += Number(fields[11]) + Number(fields[12]);
  }
  return ticks * 10;
}

/** The listener child: `--listen notify|replication --url <url>`; prints `ready`, then its count on SIGTERM. */
async function listen(mode: string, url: string): Promise<void> {
  let wakeups = 0;
  let stop: () => Promise<unknown>;
  if (mode === "notify") {
    const listener = postgres({
      ...postgresJsOptions(url),
      max: 1,
      onnotice: () => {},
      connection: sessionParameters(),
    });
    await listener.listen("outbox", () => void wakeups++);
    stop = () => listener.end();
  } else {
    // The relay's own wake-up stream, so the cost measured is the one it imposes.
    const stream = startReplicationWakeups({
      url,
      holderName: "writer-cost",
      onWake: () => void wakeups++,
      onError: (err) => console.error(err),
    });
    while (!stream.connected) await new Promise((r) => setTimeout(r, 20));
    stop = () => stream.stop();
  }
  console.log("ready");
  process.once("SIGTERM", async () => {
    // Let the tail arrive before counting.
    await new Promise((r) => setTimeout(r, 300));
    await stop();
    console.log(`wakeups ${wakeups}`);
    process.exit(0);
  });
}

(values.listen ? listen(values.listen, values.url ?? "") : run()).catch((err) => {
  console.error(err);
  process.exit(1);
});
