/**
 * The whole system's CPU while nothing happens: starts a private copy as the bench does, lets it settle,
 * then reads each process's CPU over a window, and PostgreSQL's per backend (who keeps it busy).
 *
 *   node tools/system/src/bench/idle.ts [--burst 0] [--settle 30] [--window 60] [--windows 1] [--env K=V …]
 *
 * `--burst N` first offers N seconds of sagas at 100/s, as the bench's warm-up does before its idle
 * window: what a system idles at after work (its collectors, the broker's compiler) is not what it
 * idles at fresh.
 *
 * Idle CPU is small and the machine is shared, so several windows in a row say how much of a figure is
 * noise; the broker's threads are listed too (a JIT compiler still warming up shows there). `--env`
 * sets a variable of every process, to compare a setting against its default.
 */
import { readdir, readFile, rm } from "node:fs/promises";
import { join } from "node:path";
import { postgresJsOptions, sessionParameters } from "@saga/db";
import { defineCli, numberOption } from "@saga/tools/cli";
import { cacheDir } from "@saga/tools/infra";
import { cpuSeconds } from "@saga/tools/process";
import postgres from "postgres";
import { table } from "../chaos/report.ts";
import { freePorts, type System, startSystem } from "../stack/system.ts";
import { closeLoad, createBenchUsers, envArgs, runPhase, UNLIMITED_RATES } from "./load.ts";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** CPU seconds of one process alone (user + system), from /proc. */
async function ownCpuSeconds(pid: number): Promise<number> {
  const text = await readFile(`/proc/${pid}/stat`, "utf8").catch(() => "");
  if (!text) return 0;
  const fields = text.slice(text.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

/**
 * CPU seconds of each thread of a process, summed by thread name (main thread, V8 workers, libuv; a JVM's
 * pools, whose numbered names Linux cuts to 15 characters, are summed without their numbers).
 */
async function threadCpuSeconds(pid: number): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  const tasks = await readdir(`/proc/${pid}/task`).catch(() => [] as string[]);
  for (const tid of tasks) {
    const text = await readFile(`/proc/${pid}/task/${tid}/stat`, "utf8").catch(() => "");
    if (!text) continue;
    const name =
      tid === String(pid)
        ? "main"
        : text.slice(text.indexOf("(") + 1, text.lastIndexOf(")")).replace(/[-#]?\d+$/, "");
    const fields = text.slice(text.lastIndexOf(")") + 2).split(" ");
    out.set(name, (out.get(name) ?? 0) + (Number(fields[11]) + Number(fields[12])) / 100);
  }
  return out;
}

type Backend = { pid: number; name: string };

async function backends(sql: postgres.Sql): Promise<Backend[]> {
  const rows = await sql<{ pid: number; name: string }[]>`
    select pid, coalesce(nullif(application_name, ''), backend_type) || coalesce(' (' || datname || ')', '') as name
    from pg_stat_activity where pid <> pg_backend_pid()`;
  return rows;
}

/** One window: each process's cores, its threads' (Node processes and the broker), PostgreSQL's backends'. */
async function measureWindow(
  system: System,
  sql: postgres.Sql,
  windowS: number,
  log: (line: string) => void,
) {
  const pids = system.pids();
  const before = await cpuSeconds(pids);
  const pgBefore = await backends(sql);
  const ownBefore = new Map(
    await Promise.all(pgBefore.map(async (b) => [b.pid, await ownCpuSeconds(b.pid)] as const)),
  );
  const threaded = [...system.processes.keys(), "kafka"];
  const threadsBefore = new Map(
    await Promise.all(threaded.map(async (n) => [n, await threadCpuSeconds(pids[n] ?? 0)] as const)),
  );
  const started = performance.now();
  await sleep(windowS * 1000);
  const seconds = (performance.now() - started) / 1000;
  const after = await cpuSeconds(pids);
  const perProcess = Object.keys(after).map((name) => [
    name,
    ((after[name] ?? 0) - (before[name] ?? 0)) / seconds,
  ]) as [string, number][];
  const total = perProcess.reduce((sum, [, cores]) => sum + cores, 0);
  const pgRows: [string, number][] = [];
  for (const b of pgBefore) {
    const cores = ((await ownCpuSeconds(b.pid)) - (ownBefore.get(b.pid) ?? 0)) / seconds;
    if (cores > 0) pgRows.push([b.name, cores]);
  }
  pgRows.sort((x, y) => y[1] - x[1]);
  log(`\nIdle CPU over ${seconds.toFixed(0)} s, in cores (CPU seconds per second):\n`);
  log(
    table(
      ["process", "cores"],
      [...perProcess.map(([n, c]) => [n, c.toFixed(4)]), ["all", total.toFixed(4)]],
    ),
  );
  log("\nBy thread, in cores:\n");
  const threadRows: string[][] = [];
  for (const n of threaded) {
    const after = await threadCpuSeconds(pids[n] ?? 0);
    const before = threadsBefore.get(n) ?? new Map();
    const parts = [...after]
      .map(([t, v]) => [t, (v - (before.get(t) ?? 0)) / seconds] as const)
      .filter(([, c]) => c > 0)
      .sort((a, b) => b[1] - a[1])
      .map(([t, c]) => `${t} ${c.toFixed(4)}`);
    threadRows.push([n, parts.join(", ")]);
  }
  log(table(["process", "threads"], threadRows));
  log("\nPostgreSQL by backend (the postmaster's own share and exited backends not included):\n");
  log(
    table(
      ["backend", "cores"],
      pgRows.map(([n, c]) => [n, c.toFixed(4)]),
    ),
  );
  return total;
}

const idleCli = defineCli({
  name: "idle",
  command: "node tools/system/src/bench/idle.ts",
  about:
    "The whole system's CPU while nothing happens: a private copy started as the bench starts it, left to\n" +
    "settle, then each process's CPU over a window, PostgreSQL's per backend and the broker's per thread.",
  options: {
    burst: {
      type: "string",
      value: "SECONDS",
      default: "0",
      description: "sagas at 100/s first, as the bench's warm-up: what a system idles at after work",
    },
    settle: {
      type: "string",
      value: "SECONDS",
      default: "30",
      description: "quiet time before the first window",
    },
    window: { type: "string", value: "SECONDS", default: "60", description: "each window's length" },
    windows: { type: "string", value: "N", default: "1", description: "windows in a row: how much is noise" },
    env: {
      type: "string",
      value: "NAME=value",
      multiple: true,
      default: [],
      description: "added to every process's environment, once per setting",
    },
  },
});

async function main() {
  const { burstS, settleS, windowS, windows, env } = idleCli.parseOrExit(
    process.argv.slice(2),
    ({ values }) => ({
      burstS: numberOption("burst", values.burst, { min: 0 }),
      settleS: numberOption("settle", values.settle, { min: 0 }),
      windowS: numberOption("window", values.window, { above: 0 }),
      windows: numberOption("windows", values.windows, { integer: true, min: 1 }),
      env: envArgs(values.env),
    }),
  );
  const dataDir = join(cacheDir, "bench-idle", String(Date.now()));
  const log = (line: string) => console.log(line);
  const system = await startSystem({
    ports: await freePorts(),
    dataDir,
    durable: true,
    env: {
      LOG_LEVEL: "warn",
      ...UNLIMITED_RATES,
      ...env,
    },
    output: (name, line) => {
      if (/"level":(50|60)/.test(line)) log(`  ${name}: ${line.slice(0, 300)}`);
    },
    log,
  });
  const sql = postgres({
    ...postgresJsOptions(new URL("/postgres", system.userDbUrl).toString()),
    max: 1,
    onnotice: () => {},
    connection: sessionParameters(),
  });
  try {
    if (burstS > 0) {
      const users = await createBenchUsers(system.gatewayUrl, 100, 1_000_000_000, {
        adminToken: await system.token("bench", { admin: true, ttlSeconds: 3600 }),
        token: (id) => system.token(id, { ttlSeconds: 3600 }),
      });
      log(`idle: ${burstS}s at 100 sagas/s first`);
      await runPhase({ gatewayUrl: system.gatewayUrl, users, durationS: burstS, rate: 100, label: "burst" });
      await closeLoad();
    }
    log(`idle: settling ${settleS}s, then measuring ${windows} × ${windowS}s`);
    await sleep(settleS * 1000);
    const totals: number[] = [];
    for (let i = 0; i < windows; i++) totals.push(await measureWindow(system, sql, windowS, log));
    if (windows > 1)
      log(`\nall processes, each window: ${totals.map((t) => t.toFixed(4)).join(" / ")} cores`);
  } finally {
    await sql.end();
    await system.stop();
    await rm(dataDir, { recursive: true, force: true });
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
