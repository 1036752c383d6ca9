import { mkdir, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { setTimeout as delay } from "node:timers/promises";
import { parseArgs } from "node:util";
import { postgresJsOptions, sessionParameters } from "@saga/db";
import { createKafka } from "@saga/kafka";
import { defineCli, numberOption, UsageError } from "@saga/tools/cli";
import { cacheDir } from "@saga/tools/infra";
import postgres from "postgres";
import { orderServicesOption } from "../stack/links.ts";
import { waitQuiet } from "../stack/quiet.ts";
import { freePorts, type System, startSystem } from "../stack/system.ts";
import { checkActivity, checkExits, checkInvariants, describeExit, type UnplannedExit } from "./checker.ts";
import { createUsers, startLoad } from "./load.ts";
import { type ChaosReport, formatReport } from "./report.ts";
import {
  FAULT_KINDS,
  type Fault,
  type FaultKind,
  faultSchedule,
  INFRA_VICTIMS,
  processVictims,
  targetOf,
  type Victim,
} from "./schedule.ts";

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** What each chaos user is created with; the checker holds user_db's `initial_balance` to it. */
const INITIAL_BALANCE = 20_000;

/**
 * The longest a fault holds a process or a link still while its connections live on (a freeze, a
 * blackhole): how long a transaction's statements may be held apart, for the checker's TIMEOUT race.
 */
function longestStallMs(schedule: readonly Fault[]): number {
  return Math.max(
    0,
    ...schedule.filter((f) => f.kind === "freeze" || f.kind === "blackhole").map((f) => f.durationMs),
  );
}

export type ChaosOptions = {
  durationS: number;
  rate: number;
  seed: number;
  victims: Victim[];
  kills: number;
  freezes: number;
  networkFaults: number;
  users: number;
  quietTimeoutS: number;
  /** Order-service instances behind the gateway (1 by default), each a victim of its own. */
  orderServices: number;
};

const chaosCli = defineCli({
  name: "chaos",
  command: "npm run chaos --",
  about:
    "A private copy of the system on free ports under a load of orders and cancels, hit by faults on a schedule\n" +
    "fixed by the seed; then every invariant is checked from the databases and Kafka. Exits 1 on a violation.",
  options: {
    duration: { type: "string", value: "SECONDS", default: "300", description: "how long the load runs" },
    rate: { type: "string", value: "N", default: "20", description: "orders offered per second" },
    seed: {
      type: "string",
      value: "N",
      default: String(Date.now() % 1_000_000),
      defaultText: "from the clock",
      description: "the seed of the faults' schedule and of the load: a seed replays its run",
    },
    "order-services": {
      type: "string",
      value: "N",
      default: "1",
      description: "order-service instances behind the gateway: order, or order-1, order-2…",
    },
    // Every process and Kafka and PostgreSQL; which processes depends on --order-services.
    victims: {
      type: "string",
      value: "A,B,…",
      defaultText: "all",
      description:
        "what the faults hit, of user-1, user-2, order…, relay-1, relay-2, gateway, kafka, postgres",
    },
    kills: {
      type: "string",
      value: "N",
      defaultText: "one per 10 s of --duration",
      description: "kills, and restarts of kafka and postgres; 0 for none",
    },
    freezes: {
      type: "string",
      value: "N",
      defaultText: "one per 20 s of --duration",
      description: "freezes, SIGSTOP then SIGCONT; 0 for none",
    },
    "network-faults": {
      type: "string",
      value: "N",
      defaultText: "one per 10 s of --duration",
      description: "blackholes, latencies and resets of a process's link; 0 for none",
    },
    users: { type: "string", value: "N", default: "20", description: "users the load orders for" },
    "quiet-timeout": {
      type: "string",
      value: "SECONDS",
      default: "180",
      description: "how long the checks wait for the system to be quiet after the load",
    },
  },
  notes:
    "Every fault and its duration: README.md, Chaos. The report is also written to .cache/chaos-reports/.",
});

/** The run's options from its command line; UsageError for a wrong one. */
export function parseOptions(argv: string[]): ChaosOptions {
  return chaosOptions(chaosCli.parse(argv).values);
}

function chaosOptions(values: ReturnType<typeof chaosCli.parse>["values"]): ChaosOptions {
  const orderServices = orderServicesOption(values["order-services"]);
  const all = [...processVictims(orderServices), ...INFRA_VICTIMS] as string[];
  const victims = (values.victims ?? all.join(",")).split(",").filter(Boolean);
  const unknown = victims.filter((v) => !all.includes(v));
  if (unknown.length)
    throw new UsageError(`--victims: unknown ${unknown.join(", ")}; choose from ${all.join(", ")}`);
  const durationS = numberOption("duration", values.duration, POSITIVE);
  const count = (name: "kills" | "freezes" | "network-faults", every: number) => {
    const raw = values[name];
    return raw === undefined
      ? Math.max(1, Math.round(durationS / every))
      : numberOption(name, raw, { integer: true, min: 0 });
  };
  return {
    durationS,
    rate: numberOption("rate", values.rate, POSITIVE),
    seed: numberOption("seed", values.seed, { integer: true }),
    victims: victims as Victim[],
    // In a five-minute run: 30 kills, 15 freezes and 30 network faults (each kind once on each link).
    // Every fault of a lone order-service, alone in its consumer group, stops the saga for the group's
    // 10 s session or more; much denser and its consumer is never in the group long enough to work. With
    // several instances the same number of kills is shared among more victims.
    kills: count("kills", 10),
    freezes: count("freezes", 20),
    networkFaults: count("network-faults", 10),
    users: numberOption("users", values.users, { integer: true, min: 1 }),
    quietTimeoutS: numberOption("quiet-timeout", values["quiet-timeout"], POSITIVE),
    orderServices,
  };
}

const POSITIVE = { above: 0 };

/** Seconds since the oldest unpublished outbox row of either database was written; 0 when none. */
async function relayLag(dbs: postgres.Sql[]): Promise<number> {
  const ages = await Promise.all(
    dbs.map(async (sql) => {
      const [row] = await sql<{ age: number | null }[]>`
        select extract(epoch from now() - min(created_at))::float8 as age from outbox where published_at is null`;
      return row?.age ?? 0;
    }),
  );
  return Math.max(0, ...ages);
}

/** Runs the whole chaos scenario and returns its report; the system is stopped afterwards. */
async function runChaos(opts: ChaosOptions, log: (line: string) => void): Promise<ChaosReport> {
  const runId = `s${opts.seed}-${Date.now().toString(36)}`;
  const dataDir = join(cacheDir, "chaos", runId);
  const schedule = faultSchedule({
    seed: opts.seed,
    durationMs: opts.durationS * 1000,
    victims: opts.victims,
    kills: opts.kills,
    freezes: opts.freezes,
    networkFaults: opts.networkFaults,
    orderServices: opts.orderServices,
  });
  const planned = FAULT_KINDS.map((k) => `${schedule.filter((f) => f.kind === k).length} ${k}`).join(", ");
  log(
    `chaos: seed ${opts.seed}, ${opts.durationS}s at ${opts.rate} orders/s, ${opts.orderServices} order-service instance${opts.orderServices === 1 ? "" : "s"}, faults planned: ${planned}; data in ${dataDir}`,
  );

  const processLog = (name: string, line: string) => {
    // Only our processes' own warnings and errors: the progress lines are the run's output, and the
    // Kafka client's reconnection errors are what a broker restart is expected to cause.
    if (/"level":(40|50|60)/.test(line) && !line.includes('"logger":"kafkajs"'))
      log(`  ${name}: ${line.slice(0, 300)}`);
  };
  const system: System = await startSystem({
    ports: await freePorts(opts.orderServices),
    dataDir,
    durable: true,
    faultProxies: true,
    output: processLog,
    log,
    // Keep every inbox and outbox row until the checker has read them.
    // The load comes from one address and retries what a kill interrupted: rate limits out of its way.
    env: {
      INBOX_RETENTION_HOURS: "10000",
      OUTBOX_RETENTION_SECONDS: "36000000",
      LOG_LEVEL: "warn",
      RATE_LIMIT_SUBJECT_PER_S: "10000",
      RATE_LIMIT_SUBJECT_BURST: "10000",
      RATE_LIMIT_ADDRESS_PER_S: "10000",
      RATE_LIMIT_ADDRESS_BURST: "10000",
    },
  });
  const userDb = postgres({
    ...postgresJsOptions(system.userDbUrl),
    max: 1,
    onnotice: () => {},
    connection: sessionParameters(),
  });
  const orderDb = postgres({
    ...postgresJsOptions(system.orderDbUrl),
    max: 1,
    onnotice: () => {},
    connection: sessionParameters(),
  });
  const kafka = createKafka({ brokers: system.kafkaBrokers, clientId: "chaos" });
  const faults = Object.fromEntries(FAULT_KINDS.map((k) => [k, {}])) as ChaosReport["faults"];
  let faultsDone = 0;
  let maxRelayLagS = 0;
  let loadStoppedS = 0;
  let faultsEndedS = 0;
  let watchLag: NodeJS.Timeout | undefined;
  let progress: NodeJS.Timeout | undefined;

  try {
    // Tokens for as long as any run lasts.
    const auth = {
      adminToken: await system.token(`chaos-${runId}`, { admin: true, ttlSeconds: 7 * 24 * 3600 }),
      token: (id: string) => system.token(id, { ttlSeconds: 7 * 24 * 3600 }),
    };
    const users = await createUsers(system.gatewayUrl, opts.users, INITIAL_BALANCE, runId, auth);
    const load = startLoad({ gatewayUrl: system.gatewayUrl, seed: opts.seed, rate: opts.rate, users });
    const started = Date.now();
    const sinceStart = () => (Date.now() - started) / 1000;

    watchLag = setInterval(() => {
      relayLag([userDb, orderDb])
        .then((lag) => {
          maxRelayLagS = Math.max(maxRelayLagS, lag);
        })
        .catch(() => {});
    }, 1000);
    progress = setInterval(() => {
      const s = load.stats;
      log(
        `chaos: t=${Math.round(sinceStart())}s orders sent=${s.ordersSent} created=${s.ordersCreated} in-flight=${s.inFlight} cancels=${s.cancelsSent} faults=${faultsDone}/${schedule.length} max relay lag=${maxRelayLagS.toFixed(2)}s`,
      );
    }, 5000);

    const strike = async (fault: Fault, failed: AbortSignal) => {
      await delay(Math.max(0, started + fault.atMs - Date.now()), undefined, { signal: failed }).catch(
        () => {},
      );
      if (failed.aborted) return;
      const target = targetOf(fault);
      const lasting = `for ${(fault.durationMs / 1000).toFixed(1)}s`;
      log(
        `chaos: ${fault.kind} ${target}${fault.kind === "latency" ? ` +${fault.latencyMs}ms each way` : ""} ${lasting}`,
      );
      await inflict(system, fault, log);
      faults[fault.kind][target] = (faults[fault.kind][target] ?? 0) + 1;
      faultsDone++;
    };
    await underFaults(
      opts.durationS * 1000,
      load,
      async () => {
        await strikeEachTarget(schedule, strike);
        faultsEndedS = sinceStart();
      },
      () => {
        loadStoppedS = sinceStart();
        log(
          `chaos: load stopped at ${loadStoppedS.toFixed(0)}s (${load.stats.ordersSent} orders sent); waiting for ${schedule.length - faultsDone} faults still under way or scheduled and ${load.stats.inFlight} requests in flight`,
        );
      },
    );
    clearInterval(progress);

    // Exits the run did not cause: a process that crashed is started again below (and by its next kill or
    // freeze) like one the run killed, so they are said here, and fail the run (checkExits), not left to
    // pass unseen.
    const unplannedExits = (): UnplannedExit[] =>
      [...system.processes].flatMap(([name, p]) => p.unplannedExits().map((e) => ({ name, ...e })));
    const exitedUnderLoad = unplannedExits();
    log(
      exitedUnderLoad.length === 0
        ? "chaos: no process exited unless the run stopped it"
        : `chaos: ${exitedUnderLoad.length} exits the run did not cause: ${exitedUnderLoad.map(describeExit).join("; ")}`,
    );
    for (const [name, p] of system.processes) if (!p.isRunning()) await startWithRetries(system, name, log);
    const quietStarted = Date.now();
    const quiet = await waitQuiet({
      userDb,
      orderDb,
      kafka,
      timeoutS: opts.quietTimeoutS,
      log: (line) => log(`chaos: ${line}`),
    });
    clearInterval(watchLag);
    const timeToQuietS = quiet ? (Date.now() - quietStarted) / 1000 : null;
    log(
      quiet
        ? `chaos: quiet after ${timeToQuietS?.toFixed(1)}s; checking invariants`
        : "chaos: never quiet; checking anyway",
    );

    const { results, observed, timeoutCancels } = await checkInvariants({
      userDbUrl: system.userDbUrl,
      orderDbUrl: system.orderDbUrl,
      kafka,
      outboxComplete: true,
      clients: { users, ...load.answers },
      statementTimeoutMs: system.statementTimeoutMs,
      longestStallMs: longestStallMs(schedule),
    });
    if (!quiet)
      results.unshift({
        name: "system quiet (no pending order, outbox or consumer lag)",
        pass: false,
        checked: `${opts.quietTimeoutS}s`,
        counterExamples: ["still busy at the timeout"],
      });
    const outcomes = Object.fromEntries(
      (
        await orderDb<{ outcome: string; n: number }[]>`
          select status || coalesce(' (' || cancel_reason || ')', '') as outcome, count(*)::int as n
          from orders group by 1 order by 1`
      ).map((r) => [r.outcome, r.n]),
    );
    const ordersByStatus: Record<string, number> = {};
    for (const [outcome, n] of Object.entries(outcomes)) {
      const status = outcome.split(" ")[0] ?? outcome;
      ordersByStatus[status] = (ordersByStatus[status] ?? 0) + n;
    }
    const planned = Object.fromEntries(FAULT_KINDS.map((k) => [k, {} as Record<string, number>]));
    for (const f of schedule) {
      const byTarget = planned[f.kind] as Record<string, number>;
      byTarget[targetOf(f)] = (byTarget[targetOf(f)] ?? 0) + 1;
    }
    results.push(checkActivity({ ordersByStatus, planned, done: faults }));
    // Read again: a crash while the system went quiet counts as much as one under load.
    const exits = unplannedExits();
    results.push(checkExits(exits, system.processes.size));
    const { inFlight: _, ...load_ } = load.stats;
    const proxied = await Promise.all([...system.links.values()].map((l) => l.stats()));
    return {
      seed: opts.seed,
      durationS: opts.durationS,
      rate: opts.rate,
      orderServices: opts.orderServices,
      faults,
      proxy: {
        connections: proxied.reduce((n, s) => n + s.connections, 0),
        resets: proxied.reduce((n, s) => n + s.resets, 0),
        megabytes: proxied.reduce((n, s) => n + s.bytes, 0) / 1e6,
      },
      outcomes,
      load: load_,
      loadStoppedS,
      faultsEndedS,
      timeoutCancels,
      duplicateCopies: observed.duplicateCopies,
      unplannedExits: exits.map(describeExit),
      maxRelayLagS,
      timeToQuietS,
      invariants: results,
    };
  } finally {
    clearInterval(progress);
    clearInterval(watchLag);
    await Promise.allSettled([userDb.end(), orderDb.end(), kafka.close()]);
    await system.stop();
    await rm(dataDir, { recursive: true, force: true });
  }
}

/**
 * The run's middle: offers the load for `durationMs` while `strike` does the schedule's faults, stops
 * offering it at the duration (faults may go on past it: a target's faults wait for its last one), then
 * waits for the faults and the requests in flight. A fault that fails stops the load at once, and its
 * error is thrown once nothing is in flight, not left an unhandled rejection, which ended the process
 * with no report and its data directory left behind.
 */
export async function underFaults(
  durationMs: number,
  load: { stopOffering(): void; stop(): Promise<void> },
  strike: () => Promise<void>,
  onLoadStopped: () => void,
): Promise<void> {
  const failed = new AbortController();
  const striking = strike().catch((err: unknown) => failed.abort(err));
  await delay(durationMs, undefined, { signal: failed.signal }).catch(() => {});
  load.stopOffering();
  onLoadStopped();
  await striking;
  await load.stop();
  if (failed.signal.aborted) throw failed.signal.reason;
}

/**
 * Does the schedule's faults: those of different targets overlap in time, each target's own run one after
 * another. A fault that fails ends the schedule: no target starts another (`strike` is given the signal),
 * the faults under way end, and only then does this reject, with the first failure. Rejecting at once would
 * let the run stop the system while a fault still runs: a Kafka restart asleep before it starts the broker
 * again, a process start retrying, which would then start it after the stop.
 */
export async function strikeEachTarget(
  schedule: readonly Fault[],
  strike: (fault: Fault, failed: AbortSignal) => Promise<void>,
): Promise<void> {
  const byTarget = new Map<string, Fault[]>();
  for (const f of schedule) byTarget.set(targetOf(f), [...(byTarget.get(targetOf(f)) ?? []), f]);
  const failed = new AbortController();
  await Promise.allSettled(
    [...byTarget.values()].map(async (faults) => {
      for (const f of faults) {
        if (failed.signal.aborted) return;
        await strike(f, failed.signal).catch((err: unknown) => {
          if (!failed.signal.aborted) failed.abort(err);
        });
      }
    }),
  );
  if (failed.signal.aborted) throw failed.signal.reason;
}

/** Does one fault and undoes it after its duration: restarts, continues, heals. */
export async function inflict(system: System, fault: Fault, log: (line: string) => void) {
  if ("link" in fault) {
    const link = system.links.get(fault.link);
    if (!link) throw new Error(`no link ${fault.link}`);
    await link.inject(
      fault.kind === "latency" ? { kind: "latency", ms: fault.latencyMs ?? 0 } : { kind: fault.kind },
    );
    await sleep(fault.durationMs);
    await link.heal();
  } else if (fault.kind === "freeze") {
    // One of our processes that exited by itself (a crash, which fails the run: checkExits) is started
    // again first, as its supervisor would have: a freeze of it would throw and end the run unreported.
    if (system.processes.get(fault.victim)?.isRunning() === false)
      await startWithRetries(system, fault.victim, log);
    await system.freeze(fault.victim, fault.durationMs);
  } else if (fault.victim === "kafka") await system.restartKafka(fault.durationMs);
  else if (fault.victim === "postgres") await system.restartPostgres(fault.durationMs);
  else {
    const p = system.processes.get(fault.victim);
    if (!p) throw new Error(`no process ${fault.victim}`);
    await p.kill("SIGKILL");
    await sleep(fault.durationMs);
    await startWithRetries(system, fault.victim, log);
  }
}

/**
 * Starts a process again as a supervisor would: with a back-off from 1 s to 10 s between attempts, for
 * up to two minutes. A process may not start while its link is blackholed or reset, or PostgreSQL is down.
 */
async function startWithRetries(system: System, name: string, log: (line: string) => void) {
  const p = system.processes.get(name);
  const deadline = Date.now() + 120_000;
  for (let attempt = 1; p; attempt++) {
    try {
      await p.start();
      return;
    } catch (err) {
      log(`chaos: ${name} did not come back (attempt ${attempt}): ${(err as Error).message}`);
      await p.kill("SIGKILL");
      if (Date.now() > deadline) throw err;
      await sleep(Math.min(1000 * 2 ** (attempt - 1), 10_000));
    }
  }
}

async function main() {
  const opts = chaosCli.parseOrExit(process.argv.slice(2), ({ values }) => chaosOptions(values));
  const report = await runChaos(opts, (line) => console.log(line));
  const text = formatReport(report);
  console.log(`\n${text}\n`);
  const out = join(cacheDir, "chaos-reports");
  await mkdir(out, { recursive: true });
  await writeFile(join(out, `seed-${opts.seed}.json`), JSON.stringify(report, null, 2));
  await writeFile(join(out, `seed-${opts.seed}.md`), `${text}\n`);
  const failed = report.invariants.filter((i) => !i.pass).length;
  const skipped = report.invariants.filter((i) => i.skipped).length;
  console.log(
    `chaos: ${report.invariants.length - failed - skipped} passed, ${failed} failed${skipped ? `, ${skipped} not checked` : ""}`,
  );
  process.exit(failed ? 1 : 0);
}

if (import.meta.url === `file://${process.argv[1]}`) {
  main().catch((err) => {
    console.error(err);
    process.exit(1);
  });
}
