import { randomUUID } from "node:crypto";
import { readFile, writeFile } from "node:fs/promises";
import type { KafkaClient } from "@saga/kafka";
import type postgres from "postgres";
import { Agent, request as send } from "undici";
import { table } from "../chaos/report.ts";
import { errorCode, pooledApiClient } from "../stack/api-client.ts";
import { waitQuiet } from "../stack/quiet.ts";
import type { System } from "../stack/system.ts";
import { type Summary, summarize } from "./stats.ts";

/**
 * The overload phases of issue 11: the system's capacity measured closed-loop, then an open loop at
 * 2× and 5× that capacity, each accepted order followed by its client with `GET /orders/:id` until it
 * is final (as a real client polls), and a fresh start offered half the warm capacity from the moment
 * the system says it is ready. Each reports goodput, what was shed and how fast, client-side timeouts,
 * ejections and panic routing from the gateway's metrics, and the saga backlog bound at work.
 */

export type OverloadPhase = {
  label: string;
  offered: number;
  durationS: number;
  sent: number;
  accepted: number;
  /** Accepted orders per second of the phase: the goodput. */
  goodput: number;
  /** 503 with Retry-After: shed by the gateway, a service, or the saga backlog. */
  shed: number;
  shedWithoutRetryAfter: number;
  shedLatency: Summary;
  /** Of those, refused by the order-service's saga backlog bound. */
  shedByBacklog: number;
  /** Any other non-201 answer by status, and transport errors by code (client timeouts included). */
  failures: Record<string, number>;
  gateway504: number;
  clientTimeouts: number;
  acceptedLatency: Summary;
  /** Of accepted orders not canceled by their client: creation to final state. */
  saga: Summary;
  /** Accepted orders still PENDING 10 s after the load stopped. */
  notFinalAfter10s: number;
  reads: { sent: number; ok: number; shed: number; latency: Summary };
  ejections: number;
  panicRequests: number;
  backlogMax: number;
  backlogLimit: number;
};

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
// Its own pool, as large as the open loop can need: the client must not be what limits the phase.
const CLIENT_TIMEOUT_MS = 10_000;
const dispatcher = new Agent({
  connections: 1024,
  keepAliveTimeout: 30_000,
  headersTimeout: CLIENT_TIMEOUT_MS,
  bodyTimeout: CLIENT_TIMEOUT_MS,
});
const bearer = (token: string) => ({ authorization: `Bearer ${token}` });

async function scrape(url: string): Promise<string> {
  try {
    const res = await send(`${url}/metrics`, { dispatcher, headersTimeout: 5000 });
    return await res.body.text();
  } catch {
    return "";
  }
}

/** The sum of a metric's series in Prometheus text, optionally only those whose labels match. */
function metricSum(text: string, name: string, labels = ""): number {
  let sum = 0;
  for (const line of text.split("\n")) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    if (labels && !line.includes(labels)) continue;
    sum += Number(line.slice(line.lastIndexOf(" ") + 1)) || 0;
  }
  return sum;
}

type Counters = { ejections: number; panic: number; backlogShed: number };

async function counters(system: System): Promise<Counters> {
  const [gateway, order] = await Promise.all([
    scrape(`http://127.0.0.1:${system.ports.gatewayMetrics}`),
    scrape(system.processes.get("order")?.url ?? ""),
  ]);
  return {
    ejections: metricSum(gateway, "gateway_upstream_ejections_total"),
    panic: metricSum(gateway, "gateway_upstream_panic_requests_total"),
    backlogShed: metricSum(order, "saga_backlog_shed_total"),
  };
}

/** One open-loop phase; each accepted order is followed with GETs every 250 ms until final (10 s at most). */
async function openLoop(opts: {
  system: System;
  orderDb: postgres.Sql;
  users: { id: string; balance: number; token: string }[];
  rate: number;
  durationS: number;
  label: string;
}): Promise<OverloadPhase> {
  const { system, users, rate, durationS, label } = opts;
  const api = pooledApiClient(system.gatewayUrl, dispatcher);
  const before = await counters(system);
  const orderUrl = system.processes.get("order")?.url ?? "";
  let backlogMax = 0;
  let backlogLimit = 0;
  let sampling = true;
  const sampler = (async () => {
    while (sampling) {
      const text = await scrape(orderUrl);
      backlogMax = Math.max(backlogMax, metricSum(text, "saga_backlog"));
      backlogLimit = metricSum(text, "saga_backlog_limit") || backlogLimit;
      await sleep(250);
    }
  })();

  const p: OverloadPhase = {
    label,
    offered: rate,
    durationS,
    sent: 0,
    accepted: 0,
    goodput: 0,
    shed: 0,
    shedWithoutRetryAfter: 0,
    shedLatency: summarize([]),
    shedByBacklog: 0,
    failures: {},
    gateway504: 0,
    clientTimeouts: 0,
    acceptedLatency: summarize([]),
    saga: summarize([]),
    notFinalAfter10s: 0,
    reads: { sent: 0, ok: 0, shed: 0, latency: summarize([]) },
    ejections: 0,
    panicRequests: 0,
    backlogMax: 0,
    backlogLimit: 0,
  };
  const shedMs: number[] = [];
  const acceptedMs: number[] = [];
  const readMs: number[] = [];
  const orderIds: string[] = [];
  const fail = (why: string) => {
    p.failures[why] = (p.failures[why] ?? 0) + 1;
  };

  const follow = async (id: string, token: string) => {
    const until = performance.now() + 10_000;
    while (performance.now() < until) {
      p.reads.sent++;
      const started = performance.now();
      try {
        const { data, response } = await api.GET("/orders/{id}", {
          params: { path: { id } },
          headers: bearer(token),
        });
        readMs.push(performance.now() - started);
        if (data) {
          p.reads.ok++;
          if (data.status !== "PENDING") return;
        } else if (response.status === 503) p.reads.shed++;
      } catch {
        // counted as sent, not ok
      }
      await sleep(250);
    }
  };

  let n = 0;
  const one = async () => {
    const i = n++;
    const user = users[i % users.length];
    if (!user) return;
    const amount = i % 10 === 3 ? user.balance * 10 : 1 + (i % 50);
    p.sent++;
    const started = performance.now();
    try {
      const { data, response } = await api.POST("/orders", {
        params: { header: { "Idempotency-Key": randomUUID() } },
        headers: bearer(user.token),
        body: { userId: user.id, amount },
      });
      const ms = performance.now() - started;
      if (data) {
        p.accepted++;
        acceptedMs.push(ms);
        const { id } = data;
        orderIds.push(id);
        if (i % 10 === 7) {
          await api.DELETE("/orders/{id}", { params: { path: { id } }, headers: bearer(user.token) });
          return;
        }
        await follow(id, user.token);
        return;
      }
      if (response.status === 503) {
        p.shed++;
        shedMs.push(ms);
        if (!response.headers.has("retry-after")) p.shedWithoutRetryAfter++;
        return;
      }
      if (response.status === 504) p.gateway504++;
      fail(String(response.status));
    } catch (err) {
      const code = errorCode(err);
      if (code === "UND_ERR_HEADERS_TIMEOUT" || code === "UND_ERR_BODY_TIMEOUT") p.clientTimeouts++;
      fail(code);
    }
  };

  const startedAt = new Date();
  const started = performance.now();
  const deadline = started + durationS * 1000;
  const inFlight = new Set<Promise<void>>();
  const interval = 1000 / rate;
  for (let tick = 0; performance.now() < deadline; tick++) {
    const q = one().finally(() => inFlight.delete(q));
    inFlight.add(q);
    const wait = started + (tick + 1) * interval - performance.now();
    if (wait > 1) await sleep(wait);
    else if (tick % 32 === 0) await new Promise((r) => setImmediate(r));
  }
  const loadStopped = Date.now();
  await Promise.all(inFlight);
  sampling = false;
  await sampler;

  // Every accepted order must be final within 10 s of the load stopping.
  await sleep(Math.max(0, loadStopped + 10_000 - Date.now()));
  const [row] = await opts.orderDb<{ n: number }[]>`
    select count(*)::int as n from orders where id = any(${orderIds}::uuid[]) and status = 'PENDING'`;
  const sagaRows = await opts.orderDb<{ ms: number }[]>`
    select extract(epoch from updated_at - created_at)::float8 * 1000 as ms from orders
    where id = any(${orderIds}::uuid[]) and status <> 'PENDING' and coalesce(cancel_reason, '') <> 'CANCELED_BY_REQUEST'`;
  const after = await counters(system);
  return {
    ...p,
    goodput: p.accepted / ((loadStopped - startedAt.getTime()) / 1000),
    shedLatency: summarize(shedMs),
    acceptedLatency: summarize(acceptedMs),
    saga: summarize(sagaRows.map((r) => r.ms)),
    notFinalAfter10s: row?.n ?? 0,
    reads: { ...p.reads, latency: summarize(readMs) },
    ejections: after.ejections - before.ejections,
    panicRequests: after.panic - before.panic,
    shedByBacklog: after.backlogShed - before.backlogShed,
    backlogMax,
    backlogLimit,
  };
}

/**
 * 32 clients, each sending its next order as soon as the last one is answered; a shed one (503) waits
 * its Retry-After, as a client should, instead of spinning on fast refusals.
 */
async function capacityLoop(
  url: string,
  users: { id: string; balance: number; token: string }[],
  durationS: number,
) {
  const startedAt = new Date();
  const deadline = performance.now() + durationS * 1000;
  const orderIds: string[] = [];
  const api = pooledApiClient(url, dispatcher);
  let failed = 0;
  let n = 0;
  await Promise.all(
    Array.from({ length: 32 }, async () => {
      while (performance.now() < deadline) {
        const i = n++;
        const user = users[i % users.length];
        if (!user) return;
        try {
          const { data, response } = await api.POST("/orders", {
            headers: bearer(user.token),
            body: { userId: user.id, amount: i % 10 === 3 ? user.balance * 10 : 1 + (i % 50) },
          });
          if (data) orderIds.push(data.id);
          else {
            failed++;
            if (response.status === 503) await sleep(1000 * Number(response.headers.get("retry-after") ?? 1));
          }
        } catch {
          failed++;
        }
      }
    }),
  );
  return { startedAt, endedAt: new Date(), orderIds, failed };
}

export type OverloadReport = {
  capacity: number;
  capacitySeconds: number;
  phases: OverloadPhase[];
  freshStart: OverloadPhase & { readyAfterS: number };
};

/**
 * Capacity (sagas/s, closed loop with 32 clients, as the saturation phase), 2× and 5× of it, then a
 * fresh start at half of it: every Node process stopped, PostgreSQL and Kafka restarted (cold JVM), the
 * processes started, and the load offered from the moment all of them answer `/ready`.
 */
export async function runOverload(opts: {
  system: System;
  dbs: { user: postgres.Sql; order: postgres.Sql };
  kafka: KafkaClient;
  users: { id: string; balance: number; token: string }[];
  seconds: number;
  log: (line: string) => void;
}): Promise<OverloadReport> {
  const { system, dbs, kafka, users, seconds, log } = opts;
  const drain = async () => {
    if (!(await waitQuiet({ userDb: dbs.user, orderDb: dbs.order, kafka, timeoutS: 180, log: () => {} })))
      log("bench:   not quiet after 180 s; going on");
  };
  await drain();
  const capacitySeconds = Math.min(30, seconds);
  log(`bench: overload: capacity, ${capacitySeconds}s closed loop with 32 clients`);
  const sat = await capacityLoop(system.gatewayUrl, users, capacitySeconds);
  // Completed sagas over the time they took, as the saturation phase counts them.
  await waitQuiet({ userDb: dbs.user, orderDb: dbs.order, kafka, timeoutS: 120, log: () => {} });
  const [done] = await dbs.order<{ n: number; last: Date | null }[]>`
    select count(*)::int as n, max(updated_at) as last from orders
    where id = any(${sat.orderIds}::uuid[]) and status <> 'PENDING'`;
  const busyS = ((done?.last?.getTime() ?? sat.endedAt.getTime()) - sat.startedAt.getTime()) / 1000;
  const capacity = (done?.n ?? 0) / Math.max(busyS, 1);
  log(`bench:   capacity ${capacity.toFixed(1)} sagas/s (${sat.failed} POSTs shed or failed)`);

  const phases: OverloadPhase[] = [];
  for (const factor of [2, 5]) {
    await drain();
    const rate = Math.round(capacity * factor);
    log(`bench: overload: ${seconds}s at ${factor}× capacity (${rate} orders/s offered)`);
    const phase = await openLoop({
      system,
      orderDb: dbs.order,
      users,
      rate,
      durationS: seconds,
      label: `${factor}×`,
    });
    log(`bench:   ${describe(phase)}`);
    phases.push(phase);
  }

  await drain();
  log("bench: overload: fresh start (Node processes stopped, PostgreSQL and Kafka restarted)");
  const processes = [...system.processes.values()];
  await Promise.all(processes.map((p) => p.stop()));
  await system.restartPostgres(500);
  await system.restartKafka(500);
  const restarted = performance.now();
  const [first, ...rest] = processes;
  await first?.start();
  await Promise.all(rest.map((p) => p.start()));
  const readyAfterS = (performance.now() - restarted) / 1000;
  const rate = Math.round(capacity / 2);
  log(`bench:   ready in ${readyAfterS.toFixed(1)}s; ${seconds}s at ${rate} orders/s (half the capacity)`);
  const fresh = await openLoop({
    system,
    orderDb: dbs.order,
    users,
    rate,
    durationS: seconds,
    label: "fresh start",
  });
  log(`bench:   ${describe(fresh)}`);
  await drain();
  return { capacity, capacitySeconds, phases, freshStart: { ...fresh, readyAfterS } };
}

const fmt = (n: number, digits = 1) => (Number.isFinite(n) ? n.toFixed(digits) : "–");

function describe(p: OverloadPhase): string {
  const failures = Object.entries(p.failures)
    .map(([why, n]) => `${n} × ${why}`)
    .join(", ");
  return (
    `goodput ${fmt(p.goodput)}/s (${p.accepted} of ${p.sent}), shed ${p.shed} (p99 ${fmt(p.shedLatency.p99)} ms; ` +
    `${p.shedByBacklog} by the saga backlog), saga p99 ${fmt(p.saga.p99)} ms, ${p.notFinalAfter10s} not final after 10 s, ` +
    `ejections ${p.ejections}, backlog max ${p.backlogMax}/${p.backlogLimit}${failures ? `; failed: ${failures}` : ""}`
  );
}

/** The overload section of bench/RESULTS.md. */
export function formatOverload(r: OverloadReport, args: string, at: string): string {
  const all = [...r.phases, r.freshStart];
  const row = (p: OverloadPhase) => [
    p.label,
    String(p.offered),
    `${fmt(p.goodput)} (${fmt((p.goodput / r.capacity) * 100, 0)}%)`,
    `${p.shed} / ${p.shedWithoutRetryAfter}`,
    `${fmt(p.shedLatency.p50)} / ${fmt(p.shedLatency.p99)}`,
    String(p.shedByBacklog),
    `${fmt(p.acceptedLatency.p50)} / ${fmt(p.acceptedLatency.p99)}`,
    `${fmt(p.saga.p50)} / ${fmt(p.saga.p99)}`,
    String(p.gateway504),
    String(p.clientTimeouts),
    Object.entries(p.failures)
      .filter(([why]) => why !== "504")
      .map(([why, n]) => `${n} × ${why}`)
      .join(", ") || "0",
    String(p.notFinalAfter10s),
    `${p.ejections} / ${p.panicRequests}`,
    `${p.backlogMax} / ${p.backlogLimit}`,
    `${p.reads.ok} of ${p.reads.sent}, ${p.reads.shed} shed, p99 ${fmt(p.reads.latency.p99)} ms`,
  ];
  return [
    `## Overload (issue 11), ${at}`,
    "",
    `Run: \`npm run bench -- ${args}\`. Capacity ${fmt(r.capacity)} sagas/s (closed loop, 32 clients, ${r.capacitySeconds} s), ` +
      `then an open loop at 2× and 5× of it for ${r.phases[0]?.durationS ?? 0} s, every accepted order followed by ` +
      "its client with `GET /orders/:id` every 250 ms until final; then a fresh start " +
      `(every Node process stopped, PostgreSQL and Kafka restarted; ready in ${fmt(r.freshStart.readyAfterS)} s) ` +
      "offered half the capacity from the moment every process answered `/ready`.",
    "",
    table(
      [
        "phase",
        "offered/s",
        "goodput/s (of capacity)",
        "shed 503 / of them without Retry-After",
        "shed ms p50/p99",
        "shed by saga backlog",
        "accepted POST ms p50/p99",
        "saga ms p50/p99",
        "504",
        "client timeouts",
        "other failures",
        "not final 10 s after",
        "ejections / panic requests",
        "backlog max / bound",
        "following GETs",
      ],
      all.map(row),
    ),
  ].join("\n");
}

/** Replaces the overload section of RESULTS.md, or appends it; the rest of the file is kept. */
export async function writeOverloadSection(path: string, section: string): Promise<void> {
  const text = await readFile(path, "utf8").catch(() => "");
  const start = text.indexOf("## Overload (issue 11)");
  const kept = start === -1 ? text.trimEnd() : text.slice(0, start).trimEnd();
  await writeFile(path, `${kept}\n\n${section}\n`);
}
