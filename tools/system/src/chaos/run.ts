import { mkdir, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { createKafka } from "@saga/kafka";
import { cacheDir } from "@saga/tools/infra";
import postgres from "postgres";
import { waitQuiet } from "../stack/quiet.ts";
import { freePorts, type System, startSystem } from "../stack/system.ts";
import { checkInvariants } from "./checker.ts";
import { createUsers, startLoad } from "./load.ts";
import { type ChaosReport, formatReport } from "./report.ts";
import { INFRA_VICTIMS, type Kill, killSchedule, PROCESS_VICTIMS, type Victim } from "./schedule.ts";

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

export type ChaosOptions = {
  durationS: number;
  rate: number;
  seed: number;
  victims: Victim[];
  kills: number;
  users: number;
  quietTimeoutS: number;
};

function parseOptions(argv: string[]): ChaosOptions {
  const { values } = parseArgs({
    args: argv,
    options: {
      duration: { type: "string", default: "300" },
      rate: { type: "string", default: "20" },
      seed: { type: "string", default: String(Date.now() % 1_000_000) },
      victims: { type: "string", default: [...PROCESS_VICTIMS, ...INFRA_VICTIMS].join(",") },
      kills: { type: "string" },
      users: { type: "string", default: "20" },
      "quiet-timeout": { type: "string", default: "180" },
    },
  });
  const all = [...PROCESS_VICTIMS, ...INFRA_VICTIMS] as string[];
  const victims = (values.victims ?? "").split(",").filter(Boolean);
  const unknown = victims.filter((v) => !all.includes(v));
  if (unknown.length) throw new Error(`unknown victims ${unknown.join(", ")}; choose from ${all.join(", ")}`);
  const durationS = positive("duration", values.duration);
  return {
    durationS,
    rate: positive("rate", values.rate),
    seed: Math.trunc(Number(values.seed)),
    victims: victims as Victim[],
    // One kill every five seconds by default: 60 in a five-minute run.
    kills: values.kills ? positive("kills", values.kills) : Math.max(1, Math.round(durationS / 5)),
    users: positive("users", values.users),
    quietTimeoutS: positive("quiet-timeout", values["quiet-timeout"]),
  };
}

function positive(name: string, raw: string | undefined): number {
  const n = Number(raw);
  if (!Number.isFinite(n) || n <= 0) throw new Error(`--${name} must be a positive number, not ${raw}`);
  return n;
}

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
export async function runChaos(opts: ChaosOptions, log: (line: string) => void): Promise<ChaosReport> {
  const runId = `s${opts.seed}-${Date.now().toString(36)}`;
  const dataDir = join(cacheDir, "chaos", runId);
  const schedule = killSchedule({
    seed: opts.seed,
    durationMs: opts.durationS * 1000,
    victims: opts.victims,
    kills: opts.kills,
  });
  log(
    `chaos: seed ${opts.seed}, ${opts.durationS}s at ${opts.rate} orders/s, ${schedule.length} kills planned; data in ${dataDir}`,
  );

  const processLog = (name: string, line: string) => {
    // Only our processes' own warnings and errors: the progress lines are the run's output, and the
    // Kafka client's reconnection errors are what a broker restart is expected to cause.
    if (/"level":(40|50|60)/.test(line) && !line.includes('"logger":"kafkajs"'))
      log(`  ${name}: ${line.slice(0, 300)}`);
  };
  const system: System = await startSystem({
    ports: await freePorts(),
    dataDir,
    durable: true,
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
  const userDb = postgres(system.userDbUrl, { max: 1, onnotice: () => {} });
  const orderDb = postgres(system.orderDbUrl, { max: 1, onnotice: () => {} });
  const kafka = createKafka({ brokers: system.kafkaBrokers, clientId: "chaos" });
  const kills: Record<string, number> = Object.fromEntries(opts.victims.map((v) => [v, 0]));
  let maxRelayLagS = 0;

  try {
    // Tokens for as long as any run lasts.
    const auth = {
      adminToken: await system.token(`chaos-${runId}`, { admin: true, ttlSeconds: 7 * 24 * 3600 }),
      token: (id: string) => system.token(id, { ttlSeconds: 7 * 24 * 3600 }),
    };
    const users = await createUsers(system.gatewayUrl, opts.users, 20_000, runId, auth);
    const load = startLoad({ gatewayUrl: system.gatewayUrl, seed: opts.seed, rate: opts.rate, users });
    const started = Date.now();

    const watchLag = setInterval(() => {
      relayLag([userDb, orderDb])
        .then((lag) => {
          maxRelayLagS = Math.max(maxRelayLagS, lag);
        })
        .catch(() => {});
    }, 1000);
    const progress = setInterval(() => {
      const s = load.stats;
      const done = Object.values(kills).reduce((a, b) => a + b, 0);
      log(
        `chaos: t=${Math.round((Date.now() - started) / 1000)}s orders sent=${s.ordersSent} created=${s.ordersCreated} in-flight=${s.inFlight} cancels=${s.cancelsSent} kills=${done}/${schedule.length} max relay lag=${maxRelayLagS.toFixed(2)}s`,
      );
    }, 5000);

    const strike = async (kill: Kill) => {
      await sleep(Math.max(0, started + kill.atMs - Date.now()));
      log(`chaos: kill ${kill.victim} for ${(kill.downMs / 1000).toFixed(1)}s`);
      if (kill.victim === "kafka") await system.restartKafka(kill.downMs);
      else if (kill.victim === "postgres") await system.restartPostgres(kill.downMs);
      else {
        const p = system.processes.get(kill.victim);
        if (!p) throw new Error(`no process ${kill.victim}`);
        await p.kill("SIGKILL");
        await sleep(kill.downMs);
        await startWithRetries(system, kill.victim, log);
      }
      kills[kill.victim] = (kills[kill.victim] ?? 0) + 1;
    };
    // Kills of different victims overlap in time; each victim's own kills run one after another.
    const byVictim = new Map<Victim, Kill[]>();
    for (const k of schedule) byVictim.set(k.victim, [...(byVictim.get(k.victim) ?? []), k]);
    const striking = Promise.all(
      [...byVictim.values()].map(async (ks) => {
        for (const k of ks) await strike(k);
      }),
    );

    await sleep(opts.durationS * 1000);
    log("chaos: load stopped; waiting for the kills still scheduled and the requests in flight");
    await striking;
    await load.stop();
    clearInterval(progress);

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

    const { results, observed } = await checkInvariants({
      userDbUrl: system.userDbUrl,
      orderDbUrl: system.orderDbUrl,
      kafka,
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
    const { inFlight: _, ...load_ } = load.stats;
    return {
      seed: opts.seed,
      durationS: opts.durationS,
      rate: opts.rate,
      kills,
      outcomes,
      load: load_,
      duplicateCopies: observed.duplicateCopies,
      maxRelayLagS,
      timeToQuietS,
      invariants: results,
    };
  } finally {
    await Promise.allSettled([userDb.end(), orderDb.end(), kafka.close()]);
    await system.stop();
    await rm(dataDir, { recursive: true, force: true });
  }
}

async function startWithRetries(system: System, name: string, log: (line: string) => void) {
  const p = system.processes.get(name);
  for (let attempt = 1; p; attempt++) {
    try {
      await p.start();
      return;
    } catch (err) {
      log(`chaos: ${name} did not come back (attempt ${attempt}): ${(err as Error).message}`);
      await p.kill("SIGKILL");
      if (attempt >= 5) throw err;
    }
  }
}

async function main() {
  const opts = parseOptions(process.argv.slice(2));
  const report = await runChaos(opts, (line) => console.log(line));
  const text = formatReport(report);
  console.log(`\n${text}\n`);
  const out = join(cacheDir, "chaos-reports");
  await mkdir(out, { recursive: true });
  await writeFile(join(out, `seed-${opts.seed}.json`), JSON.stringify(report, null, 2));
  await writeFile(join(out, `seed-${opts.seed}.md`), `${text}\n`);
  const failed = report.invariants.filter((i) => !i.pass).length;
  console.log(`chaos: ${report.invariants.length - failed} passed, ${failed} failed`);
  process.exit(failed ? 1 : 0);
}

if (import.meta.url === `file://${process.argv[1]}`) {
  main().catch((err) => {
    console.error(err);
    process.exit(1);
  });
}
