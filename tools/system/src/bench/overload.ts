import { readFile, writeFile } from "node:fs/promises";
import { loadavg } from "node:os";
import { monitorEventLoopDelay } from "node:perf_hooks";
import type { KafkaClient } from "@saga/kafka";
import { cpuSeconds } from "@saga/tools/process";
import type postgres from "postgres";
import { Agent, request as send } from "undici";
import { table } from "../chaos/report.ts";
import { errorCode } from "../stack/api-client.ts";
import { waitQuiet } from "../stack/quiet.ts";
import type { System } from "../stack/system.ts";
import { ordersClient } from "./orders-client.ts";
import { type Summary, summarize } from "./stats.ts";

/**
 * The overload phases of issue 11: the system's capacity measured closed-loop, then an open loop at
 * 2× and 5× that capacity, each accepted order followed by its client with `GET /orders/:id` until it
 * is final (as a real client polls), and a fresh start offered half the warm capacity from the moment
 * the system says it is ready. Each reports goodput, what was shed and how fast, client-side timeouts,
 * ejections and panic routing from the gateway's metrics, and the saga backlog bound at work.
 */

type OverloadPhase = {
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
  /**
   * The same, net of the load client's own lateness: each shed answer's time less how long the client's
   * event loop had been kept from its timers when it read the answer (it shares the cores with the system).
   */
  shedLatencyNet: Summary;
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
  /**
   * Where the shed were refused: the gateway's `orders:write` lane (of them, `gatewayTimeout` after
   * waiting in its queue, the rest at once), the gateway for the order-service's lack of headroom (`edge`:
   * its saga backlog at its bound, without a round trip), the order-service's write lane (of them,
   * `serviceTimeout` after waiting in its queue, the rest at once), its saga backlog.
   */
  shedBy: {
    gateway: number;
    gatewayTimeout: number;
    edge: number;
    service: number;
    serviceTimeout: number;
    backlog: number;
  };
  /**
   * Each process's cores, second by second, over the fresh start's first `CPU_TIMELINE_S` seconds (empty for
   * the other phases): what its processes spend while some of its POSTs wait past the warm-up's queue.
   */
  cpuTimeline: { second: number; cores: Record<string, number> }[];
  /** Seconds of the phase in which POSTs were shed, the first ten: who shed how many, the backlog and its bound. */
  shedTimeline: {
    second: number;
    gateway: number;
    service: number;
    backlog: number;
    sagas: number;
    bound: number;
  }[];
  /**
   * Where the following GETs were shed: the gateway's `orders:read` lane, the order-service's read lane
   * (of them, `serviceTimeout` after waiting in its queue, the rest on a full queue).
   */
  readsShedBy: { gateway: number; service: number; serviceTimeout: number };
  /** Time a shed POST spent inside the gateway (its own histogram: from its first middleware to the answer). */
  gatewayShedMs: { p50: number; p99: number };
  /** Time an answer of the order-service that was a 503 took, seen by the gateway (queueing in its pool included). */
  upstreamShedMs: { p50: number; p99: number };
  /** The worst event-loop delay p99 seen during the phase, in ms: the bench client's, the gateway's, the order-service's. */
  loopDelayMs: { client: number; gateway: number; order: number };
  /** The gateway's `orders:write` concurrency limit: its lowest and last value during the phase. */
  writeLimit: { min: number; last: number };
  /** The machine's 1-minute load average as the phase began and as it ended (other work shares it). */
  load: [number, number];
  /** CPU of each process during the load, in cores (CPU seconds per second). */
  cpu: Record<string, number>;
  /** Requests the gateway answered during the load (shed, refused and proxied), and its CPU µs per request. */
  gatewayRequests: number;
  gatewayUsPerRequest: number;
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

/**
 * How late the load client's event loop is running now: the time since its timers last ran, less their
 * period. An answer read now may have waited that long in the socket: the client shares the cores.
 */
function lateness(): { now: () => number; stop: () => void } {
  const periodMs = 5;
  let beat = performance.now();
  const timer = setInterval(() => {
    beat = performance.now();
  }, periodMs);
  return {
    now: () => Math.max(0, performance.now() - beat - periodMs),
    stop: () => clearInterval(timer),
  };
}

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

/**
 * The q-quantile of what a Prometheus histogram counted between two scrapes, as the upper bound of the
 * bucket it falls in (ms), over every series whose labels contain each of `labels`.
 */
function histogramQuantile(before: string, after: string, name: string, labels: string[], q: number): number {
  const buckets = (text: string) => {
    const byLe = new Map<number, number>();
    for (const line of text.split("\n")) {
      if (!line.startsWith(`${name}_bucket{`) || !labels.every((l) => line.includes(l))) continue;
      const le = /le="([^"]+)"/.exec(line)?.[1];
      if (le === undefined) continue;
      const bound = le === "+Inf" ? Number.POSITIVE_INFINITY : Number(le);
      byLe.set(bound, (byLe.get(bound) ?? 0) + (Number(line.slice(line.lastIndexOf(" ") + 1)) || 0));
    }
    return byLe;
  };
  const b = buckets(before);
  const a = [...buckets(after).entries()]
    .sort(([x], [y]) => x - y)
    .map(([le, n]) => [le, n - (b.get(le) ?? 0)]);
  const total = a.at(-1)?.[1] ?? 0;
  if (!total) return Number.NaN;
  const hit = a.find(([, n]) => (n as number) >= q * total);
  return (hit?.[0] as number) * 1000;
}

/** Per second of the phase with any POST shed (the first ten): the growth of each shed counter, the backlog's peak and bound. */
function timeline(
  samples: { at: number; gateway: number; service: number; backlog: number; sagas: number; bound: number }[],
): OverloadPhase["shedTimeline"] {
  const out: OverloadPhase["shedTimeline"] = [];
  for (let i = 1; i < samples.length && out.length < 10; i++) {
    const [a, b] = [samples[i - 1], samples[i]];
    if (!a || !b) continue;
    const d = {
      gateway: b.gateway - a.gateway,
      service: b.service - a.service,
      backlog: b.backlog - a.backlog,
    };
    // A counter that went down is a restarted process: nothing to compare.
    if (d.gateway < 0 || d.service < 0 || d.backlog < 0) continue;
    if (d.gateway + d.service + d.backlog === 0) continue;
    const second = Math.floor(b.at);
    const last = out.at(-1);
    if (last?.second === second) {
      last.gateway += d.gateway;
      last.service += d.service;
      last.backlog += d.backlog;
      last.sagas = Math.max(last.sagas, b.sagas);
      last.bound = b.bound;
    } else out.push({ second, ...d, sagas: b.sagas, bound: b.bound });
  }
  return out;
}

/** Seconds of the fresh start whose CPU is sampled second by second. */
const CPU_TIMELINE_S = 20;

/**
 * Each process's cores in each of the next `seconds` seconds (from /proc, the process and its children; the
 * bench's own process alone), until `stop()`.
 */
function sampleCpu(pids: Record<string, number>, seconds: number) {
  let stopped = false;
  // A reading of every process's /proc takes tens of milliseconds on busy cores: it is dated at its middle.
  const read = async () => {
    const before = performance.now();
    const cpu = await cpuSeconds(pids, ["bench client"]);
    return { at: (before + performance.now()) / 2, cpu };
  };
  const done = (async () => {
    const out: OverloadPhase["cpuTimeline"] = [];
    if (seconds <= 0) return out;
    let last = await read();
    for (let second = 1; second <= seconds && !stopped; second++) {
      await sleep(Math.max(0, last.at + 1000 - performance.now()));
      const now = await read();
      const wallS = (now.at - last.at) / 1000;
      const cores = Object.fromEntries(
        Object.entries(now.cpu).map(([name, s]) => [name, Math.max(0, s - (last.cpu[name] ?? s)) / wallS]),
      );
      out.push({ second, cores });
      last = now;
    }
    return out;
  })();
  return {
    seconds: done,
    stop: () => {
      stopped = true;
    },
  };
}

type Counters = {
  ejections: number;
  panic: number;
  backlogShed: number;
  gatewayText: string;
  orderText: string;
};

async function counters(system: System): Promise<Counters> {
  const [gateway, order] = await Promise.all([
    scrape(`http://127.0.0.1:${system.ports.gatewayMetrics}`),
    scrape(system.processes.get("order")?.url ?? ""),
  ]);
  return {
    ejections: metricSum(gateway, "gateway_upstream_ejections_total"),
    panic: metricSum(gateway, "gateway_upstream_panic_requests_total"),
    backlogShed: metricSum(order, "saga_backlog_shed_total"),
    gatewayText: gateway,
    orderText: order,
  };
}

type Orders = ReturnType<typeof ordersClient>;

/**
 * What a client does with an order it placed, in every phase: one in ten (`i % 10 === 7`) is canceled at
 * once, the others are read every 250 ms until final (10 s at most), as a real client polls.
 */
async function followOrder(
  orders: Orders,
  id: string,
  token: string,
  reads: { sent: number; ok: number; shed: number },
  readMs: number[],
): Promise<void> {
  const until = performance.now() + 10_000;
  while (performance.now() < until) {
    reads.sent++;
    const started = performance.now();
    try {
      const { order, status } = await orders.get(token, id);
      readMs.push(performance.now() - started);
      if (order) {
        reads.ok++;
        if (order.status !== "PENDING") return;
      } else if (status === 503) reads.shed++;
    } catch {
      // counted as sent, not ok
    }
    await sleep(250);
  }
}

/** One open-loop phase; each accepted order is followed with GETs every 250 ms until final (10 s at most). */
async function openLoop(opts: {
  system: System;
  orderDb: postgres.Sql;
  users: { id: string; balance: number; token: string }[];
  rate: number;
  durationS: number;
  label: string;
  /** Seconds from the first POST to sample each process's CPU second by second (none by default). */
  cpuTimelineS?: number;
}): Promise<OverloadPhase> {
  const { system, users, rate, durationS, label } = opts;
  const orders = ordersClient(system.gatewayUrl, dispatcher);
  const before = await counters(system);
  const orderUrl = system.processes.get("order")?.url ?? "";
  const gatewayMetricsUrl = `http://127.0.0.1:${system.ports.gatewayMetrics}`;
  let backlogMax = 0;
  let backlogLimit = 0;
  const loopDelayMs = { client: 0, gateway: 0, order: 0 };
  const writeLimit = { min: Number.POSITIVE_INFINITY, last: Number.NaN };
  const clientLoop = monitorEventLoopDelay({ resolution: 10 });
  clientLoop.enable();
  const late = lateness();
  const samples: {
    at: number;
    gateway: number;
    service: number;
    backlog: number;
    sagas: number;
    bound: number;
  }[] = [];
  const phaseStart = performance.now();
  let sampling = true;
  const sampler = (async () => {
    while (sampling) {
      const [text, gw] = await Promise.all([scrape(orderUrl), scrape(gatewayMetricsUrl)]);
      if (text && gw)
        samples.push({
          at: (performance.now() - phaseStart) / 1000,
          gateway:
            metricSum(gw, "http_admission_shed_total", 'lane="orders:write"') +
            metricSum(gw, "gateway_upstream_headroom_shed_total"),
          service: metricSum(text, "http_admission_shed_total", 'lane="write"'),
          backlog: metricSum(text, "saga_backlog_shed_total"),
          sagas: metricSum(text, "saga_backlog"),
          bound: metricSum(text, "saga_backlog_limit"),
        });
      backlogMax = Math.max(backlogMax, metricSum(text, "saga_backlog"));
      backlogLimit = metricSum(text, "saga_backlog_limit") || backlogLimit;
      // Both reset their event-loop histogram at every scrape: each value is the last 250 ms.
      const lag = (t: string) => metricSum(t, "nodejs_eventloop_lag_p99_seconds") * 1000;
      loopDelayMs.order = Math.max(loopDelayMs.order, lag(text));
      loopDelayMs.gateway = Math.max(loopDelayMs.gateway, lag(gw));
      loopDelayMs.client = Math.max(loopDelayMs.client, clientLoop.percentile(99) / 1e6);
      clientLoop.reset();
      if (gw.includes("http_admission_limit{")) {
        writeLimit.last = metricSum(gw, "http_admission_limit", 'lane="orders:write"');
        writeLimit.min = Math.min(writeLimit.min, writeLimit.last);
      }
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
    shedLatencyNet: summarize([]),
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
    shedBy: { gateway: 0, gatewayTimeout: 0, edge: 0, service: 0, serviceTimeout: 0, backlog: 0 },
    shedTimeline: [],
    cpuTimeline: [],
    readsShedBy: { gateway: 0, service: 0, serviceTimeout: 0 },
    gatewayShedMs: { p50: 0, p99: 0 },
    upstreamShedMs: { p50: 0, p99: 0 },
    loopDelayMs,
    writeLimit,
    load: [loadavg()[0] ?? 0, 0],
    cpu: {},
    gatewayRequests: 0,
    gatewayUsPerRequest: 0,
  };
  const shedMs: number[] = [];
  const shedNetMs: number[] = [];
  const acceptedMs: number[] = [];
  const readMs: number[] = [];
  const orderIds: string[] = [];
  const fail = (why: string) => {
    p.failures[why] = (p.failures[why] ?? 0) + 1;
  };

  const follow = (id: string, token: string) => followOrder(orders, id, token, p.reads, readMs);

  let n = 0;
  const one = async () => {
    const i = n++;
    const user = users[i % users.length];
    if (!user) return;
    const amount = i % 10 === 3 ? user.balance * 10 : 1 + (i % 50);
    p.sent++;
    const started = performance.now();
    try {
      const { order, status, retryAfter } = await orders.create(user.token, { userId: user.id, amount });
      const ms = performance.now() - started;
      if (order) {
        p.accepted++;
        acceptedMs.push(ms);
        const { id } = order;
        orderIds.push(id);
        if (i % 10 === 7) {
          await orders.cancel(user.token, id);
          return;
        }
        await follow(id, user.token);
        return;
      }
      if (status === 503) {
        p.shed++;
        shedMs.push(ms);
        shedNetMs.push(Math.max(0, ms - late.now()));
        if (retryAfter === undefined) p.shedWithoutRetryAfter++;
        return;
      }
      if (status === 504) p.gateway504++;
      fail(String(status));
    } catch (err) {
      const code = errorCode(err);
      if (code === "UND_ERR_HEADERS_TIMEOUT" || code === "UND_ERR_BODY_TIMEOUT") p.clientTimeouts++;
      fail(code);
    }
  };

  const pids = { ...system.pids(), "bench client": process.pid };
  const cpuBefore = await cpuSeconds(pids, ["bench client"]);
  const startedAt = new Date();
  const started = performance.now();
  // Only where asked: it reads all of /proc every second, from the load client's own loop.
  const cpuTimeline = sampleCpu(pids, opts.cpuTimelineS ?? 0);
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
  p.load[1] = loadavg()[0] ?? 0;
  await Promise.all(inFlight);
  // Until the last answer: the requests counted below are those of the load, answered.
  const cpuAfter = await cpuSeconds(pids, ["bench client"]);
  const cpuWallS = (Date.now() - startedAt.getTime()) / 1000;
  const gatewayAnswered = metricSum((await counters(system)).gatewayText, "http_requests_total");
  sampling = false;
  await sampler;
  cpuTimeline.stop();
  clientLoop.disable();
  late.stop();

  // Every accepted order must be final within 10 s of the load stopping.
  await sleep(Math.max(0, loadStopped + 10_000 - Date.now()));
  const [row] = await opts.orderDb<{ n: number }[]>`
    select count(*)::int as n from orders where id = any(${orderIds}::uuid[]) and status = 'PENDING'`;
  const sagaRows = await opts.orderDb<{ ms: number }[]>`
    select extract(epoch from updated_at - created_at)::float8 * 1000 as ms from orders
    where id = any(${orderIds}::uuid[]) and status <> 'PENDING' and coalesce(cancel_reason, '') <> 'CANCELED_BY_REQUEST'`;
  const after = await counters(system);
  const delta = (text: "gatewayText" | "orderText", name: string, labels: string) =>
    metricSum(after[text], name, labels) - metricSum(before[text], name, labels);
  const gatewayShed = (q: number) =>
    histogramQuantile(
      before.gatewayText,
      after.gatewayText,
      "http_request_duration_seconds",
      ['method="POST"', 'status="503"'],
      q,
    );
  const upstreamShed = (q: number) =>
    histogramQuantile(
      before.gatewayText,
      after.gatewayText,
      "gateway_upstream_request_duration_seconds",
      ['upstream="order-service"', 'outcome="5xx"'],
      q,
    );
  const gatewayRequests = gatewayAnswered - metricSum(before.gatewayText, "http_requests_total");
  const cpu = Object.fromEntries(
    Object.entries(cpuAfter).map(([k, v]) => [k, (v - (cpuBefore[k] ?? 0)) / cpuWallS]),
  );
  return {
    ...p,
    cpu,
    gatewayRequests,
    gatewayUsPerRequest: (((cpu.gateway ?? 0) * cpuWallS) / Math.max(1, gatewayRequests)) * 1e6,
    goodput: p.accepted / ((loadStopped - startedAt.getTime()) / 1000),
    shedLatency: summarize(shedMs),
    shedLatencyNet: summarize(shedNetMs),
    acceptedLatency: summarize(acceptedMs),
    saga: summarize(sagaRows.map((r) => r.ms)),
    notFinalAfter10s: row?.n ?? 0,
    reads: { ...p.reads, latency: summarize(readMs) },
    ejections: after.ejections - before.ejections,
    panicRequests: after.panic - before.panic,
    shedByBacklog: after.backlogShed - before.backlogShed,
    backlogMax,
    backlogLimit,
    shedBy: {
      gateway: delta("gatewayText", "http_admission_shed_total", 'lane="orders:write"'),
      gatewayTimeout: delta(
        "gatewayText",
        "http_admission_shed_total",
        'lane="orders:write",reason="timeout"',
      ),
      edge: delta("gatewayText", "gateway_upstream_headroom_shed_total", 'upstream="order-service"'),
      service: delta("orderText", "http_admission_shed_total", 'lane="write"'),
      serviceTimeout: delta("orderText", "http_admission_shed_total", 'lane="write",reason="timeout"'),
      backlog: after.backlogShed - before.backlogShed,
    },
    shedTimeline: timeline(samples),
    cpuTimeline: await cpuTimeline.seconds,
    readsShedBy: {
      gateway: delta("gatewayText", "http_admission_shed_total", 'lane="orders:read"'),
      service: delta("orderText", "http_admission_shed_total", 'lane="read"'),
      serviceTimeout: delta("orderText", "http_admission_shed_total", 'lane="read",reason="timeout"'),
    },
    gatewayShedMs: { p50: gatewayShed(0.5), p99: gatewayShed(0.99) },
    upstreamShedMs: { p50: upstreamShed(0.5), p99: upstreamShed(0.99) },
  };
}

/**
 * The capacity the overload phases are multiples of: sagas completed per second, sustained, under the
 * phases' own client behaviour. `CAPACITY_CLIENTS` clients, each sending its next order as soon as the
 * last one is answered (a shed one, 503, waits its Retry-After, as a client should, instead of spinning on
 * fast refusals); every accepted order is then canceled or followed by its client exactly as in the phases
 * (`followOrder`, apart from the loop, so that the POSTs keep the system saturated). Counted: the orders of
 * the loop that reached their final state within the steady part of the loop, from `warmUpS` after its
 * start to its end, per second; not the first seconds (the backlog filling up with orders accepted faster
 * than sagas finish) nor the drain after it (sagas finishing with no new orders coming).
 */
/**
 * Enough that the clients are not the limit: with 32, a client waiting out its Retry-After after a shed
 * POST left the system short of work (in a 30 s loop on a loaded host, 420 sheds kept 44% of the clients'
 * time asleep; the loop completed 96 sagas/s where the open loop at 2× carried 122/s).
 */
const CAPACITY_CLIENTS = 128;

async function capacityLoop(opts: {
  url: string;
  orderDb: postgres.Sql;
  users: { id: string; balance: number; token: string }[];
  durationS: number;
  warmUpS: number;
}) {
  const { users, durationS, warmUpS } = opts;
  const startedAt = new Date();
  const deadline = performance.now() + durationS * 1000;
  const orderIds: string[] = [];
  const orders = ordersClient(opts.url, dispatcher);
  const followers = new Set<Promise<void>>();
  const reads = { sent: 0, ok: 0, shed: 0 };
  let failed = 0;
  let n = 0;
  await Promise.all(
    Array.from({ length: CAPACITY_CLIENTS }, async () => {
      while (performance.now() < deadline) {
        const i = n++;
        const user = users[i % users.length];
        if (!user) return;
        try {
          const { order, status, retryAfter } = await orders.create(user.token, {
            userId: user.id,
            amount: i % 10 === 3 ? user.balance * 10 : 1 + (i % 50),
          });
          if (order) {
            const { id } = order;
            orderIds.push(id);
            const after =
              i % 10 === 7
                ? orders.cancel(user.token, id).then(() => {})
                : followOrder(orders, id, user.token, reads, []);
            const f = after.catch(() => {}).finally(() => followers.delete(f));
            followers.add(f);
          } else {
            failed++;
            if (status === 503) await sleep(1000 * Number(retryAfter ?? 1));
          }
        } catch {
          failed++;
        }
      }
    }),
  );
  const endedAt = new Date();
  await Promise.all(followers);
  const from = new Date(startedAt.getTime() + warmUpS * 1000);
  // Final states by second of the loop: how steady the rate was, and what the drain after it added.
  const bySecond = await opts.orderDb<{ s: number; n: number }[]>`
    select floor(extract(epoch from updated_at - ${startedAt}::timestamptz))::int as s, count(*)::int as n
    from orders where id = any(${orderIds}::uuid[]) and status <> 'PENDING' group by 1 order by 1`;
  const steady = bySecond.filter((r) => r.s >= warmUpS && r.s < durationS).reduce((sum, r) => sum + r.n, 0);
  const done = bySecond.reduce((sum, r) => sum + r.n, 0);
  const lastS = Math.max(durationS, ...bySecond.map((r) => r.s + 1));
  return {
    startedAt,
    endedAt,
    from,
    accepted: orderIds.length,
    failed,
    reads,
    /** Sagas completed per second in the steady part of the loop. */
    sustained: steady / (durationS - warmUpS),
    /** The earlier measure, for comparison: every order of the loop over the time until the last was final. */
    untilLastFinal: done / lastS,
    bySecond: bySecond.map((r) => [r.s, r.n] as const),
  };
}

export type OverloadReport = {
  capacity: number;
  capacitySeconds: number;
  /** The start of the capacity loop left out of the count: the backlog filling up. */
  capacityWarmUpS: number;
  phases: OverloadPhase[];
  freshStart: OverloadPhase & { readyAfterS: number };
};

/**
 * Capacity (sagas completed per second, sustained, with the phases' clients: `capacityLoop`), 2× and 5× of it, then a
 * fresh start at half of it: every Node process stopped, PostgreSQL and Kafka restarted (cold JVM), the
 * processes started, and the load offered from the moment all of them answer `/ready`.
 */
export async function runOverload(opts: {
  system: System;
  dbs: { user: postgres.Sql; order: postgres.Sql };
  kafka: KafkaClient;
  users: { id: string; balance: number; token: string }[];
  seconds: number;
  /** Given, it is used instead of measured (the same offered loads for runs to be compared). */
  capacity?: number | undefined;
  /** The multiples of the capacity offered, each a phase. */
  factors: number[];
  /** `performance.now()` when the processes' warm-up after their start is over: the phases begin after it. */
  warmUntil: number;
  log: (line: string) => void;
}): Promise<OverloadReport> {
  const { system, dbs, kafka, users, seconds, log } = opts;
  const drain = async () => {
    if (!(await waitQuiet({ userDb: dbs.user, orderDb: dbs.order, kafka, timeoutS: 180, log: () => {} })))
      log("bench:   not quiet after 180 s; going on");
  };
  // The capacity and its multiples are a warm system's.
  const untilWarm = async () => {
    const warmingMs = opts.warmUntil - performance.now();
    if (warmingMs <= 0) return;
    log(`bench: overload: waiting ${(warmingMs / 1000).toFixed(0)}s for the processes' warm-up to end`);
    await sleep(warmingMs);
  };
  await drain();
  const capacitySeconds = opts.capacity === undefined ? Math.min(30, seconds) : 0;
  // The first seconds fill the saga backlog up to its bound: not a rate the system sustains.
  const capacityWarmUpS = Math.round(capacitySeconds / 3);
  let capacity = opts.capacity ?? 0;
  if (opts.capacity === undefined) {
    await untilWarm();
    log(
      `bench: overload: capacity, ${capacitySeconds}s closed loop with ${CAPACITY_CLIENTS} clients following their orders (steady after ${capacityWarmUpS}s)`,
    );
    const sat = await capacityLoop({
      url: system.gatewayUrl,
      orderDb: dbs.order,
      users,
      durationS: capacitySeconds,
      warmUpS: capacityWarmUpS,
    });
    capacity = sat.sustained;
    log(
      `bench:   capacity ${capacity.toFixed(1)} sagas/s sustained (${sat.accepted} accepted, ${sat.failed} POSTs shed or failed, ` +
        `${sat.reads.sent} following GETs, ${sat.reads.shed} shed; every order of the loop over the time until the last was final: ` +
        `${sat.untilLastFinal.toFixed(1)}/s); final states by second: ${sat.bySecond.map(([s, n]) => `${s}s ${n}`).join(", ")}`,
    );
  } else log(`bench: overload: capacity taken as ${capacity} sagas/s (--overload-capacity)`);

  const phases: OverloadPhase[] = [];
  for (const factor of opts.factors) {
    await drain();
    await untilWarm();
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
    cpuTimelineS: CPU_TIMELINE_S,
  });
  log(`bench:   ${describe(fresh)}`);
  await drain();
  return { capacity, capacitySeconds, capacityWarmUpS, phases, freshStart: { ...fresh, readyAfterS } };
}

const fmt = (n: number, digits = 1) => (Number.isFinite(n) ? n.toFixed(digits) : "–");

function describe(p: OverloadPhase): string {
  const failures = Object.entries(p.failures)
    .map(([why, n]) => `${n} × ${why}`)
    .join(", ");
  return (
    `goodput ${fmt(p.goodput)}/s (${p.accepted} of ${p.sent}), shed ${p.shed} (p99 ${fmt(p.shedLatency.p99)} ms, ` +
    `net of the client's lateness ${fmt(p.shedLatencyNet.p99)} ms; ` +
    `by gateway lane/gateway for want of headroom/service/backlog (of them timed out in a queue) ${p.shedBy.gateway} (${p.shedBy.gatewayTimeout})/${p.shedBy.edge}/${p.shedBy.service} (${p.shedBy.serviceTimeout})/${p.shedBy.backlog}; inside the gateway p99 ≤ ${fmt(p.gatewayShedMs.p99, 0)} ms, ` +
    `order-service 503 p99 ≤ ${fmt(p.upstreamShedMs.p99, 0)} ms; loop delay p99 client/gateway/order ` +
    `${fmt(p.loopDelayMs.client, 0)}/${fmt(p.loopDelayMs.gateway, 0)}/${fmt(p.loopDelayMs.order, 0)} ms), saga p99 ${fmt(p.saga.p99)} ms, ${p.notFinalAfter10s} not final after 10 s, ` +
    `gateway ${fmt(p.cpu.gateway ?? 0, 2)} cores, ${fmt(p.gatewayUsPerRequest, 0)} µs of its CPU a request (${p.gatewayRequests}), ` +
    `order-service ${fmt(p.cpu.order ?? 0, 2)} cores, client ${fmt(p.cpu["bench client"] ?? 0, 2)} cores, ` +
    `ejections ${p.ejections}, backlog max ${p.backlogMax}/${p.backlogLimit}, load ${fmt(p.load[0])}→${fmt(p.load[1])}${failures ? `; failed: ${failures}` : ""}` +
    (p.shedTimeline.length
      ? `; shed by second (gateway/service/backlog, backlog/bound): ${describeTimeline(p)}`
      : "")
  );
}

function describeTimeline(p: OverloadPhase): string {
  return p.shedTimeline
    .map((t) => `${t.second}s ${t.gateway}/${t.service}/${t.backlog} (${t.sagas}/${t.bound})`)
    .join(", ");
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
    `${p.shedBy.gateway} / ${p.shedBy.edge} / ${p.shedBy.service} / ${p.shedBy.backlog}`,
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
    `${p.reads.ok} of ${p.reads.sent}, ${p.reads.shed} shed (${p.readsShedBy.gateway} by the gateway, ${p.readsShedBy.service} by order-service, ${p.readsShedBy.serviceTimeout} of them after waiting in its queue), p99 ${fmt(p.reads.latency.p99)} ms`,
    `${fmt(p.load[0])} → ${fmt(p.load[1])}`,
  ];
  const where = (p: OverloadPhase) => [
    p.label,
    `${fmt(p.shedLatency.p50)} / ${fmt(p.shedLatency.p99)}`,
    `${fmt(p.shedLatencyNet.p50)} / ${fmt(p.shedLatencyNet.p99)}`,
    `${p.shedBy.gatewayTimeout} of ${p.shedBy.gateway} / ${p.shedBy.serviceTimeout} of ${p.shedBy.service}`,
    `≤ ${fmt(p.gatewayShedMs.p50, 0)} / ≤ ${fmt(p.gatewayShedMs.p99, 0)}`,
    `≤ ${fmt(p.upstreamShedMs.p50, 0)} / ≤ ${fmt(p.upstreamShedMs.p99, 0)}`,
    `${fmt(p.loopDelayMs.client, 0)} / ${fmt(p.loopDelayMs.gateway, 0)} / ${fmt(p.loopDelayMs.order, 0)}`,
    Number.isFinite(p.writeLimit.min) ? `${fmt(p.writeLimit.min)} / ${fmt(p.writeLimit.last)}` : "–",
    `${fmt(p.cpu.gateway ?? 0, 2)} / ${fmt(p.gatewayUsPerRequest, 0)} (${p.gatewayRequests})`,
    `${fmt(p.cpu.order ?? 0, 2)} / ${fmt(p.cpu["bench client"] ?? 0, 2)} / ${fmt(
      Object.values(p.cpu).reduce((a, b) => a + b, 0),
      2,
    )}`,
  ];
  return [
    `## Overload (issue 11), ${at}`,
    "",
    `Run: \`npm run bench -- ${args}\`. Capacity ${fmt(r.capacity)} sagas/s (${r.capacitySeconds ? `sagas final per second from ${r.capacityWarmUpS} s to ${r.capacitySeconds} s of a closed loop of ${CAPACITY_CLIENTS} clients following their orders` : "given"}), ` +
      `then an open loop at ${r.phases.map((p) => p.label).join(" and ") || "no multiple"} of it for ${r.freshStart.durationS} s each, every accepted order followed by ` +
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
        "shed by gateway lane / gateway for want of headroom / order-service / saga backlog",
        "accepted POST ms p50/p99",
        "saga ms p50/p99",
        "504",
        "client timeouts",
        "other failures",
        "not final 10 s after",
        "ejections / panic requests",
        "backlog max / bound",
        "following GETs",
        "load average",
      ],
      all.map(row),
    ),
    "",
    "Where a shed POST spends its time: at the client, raw and net of the client's own lateness (how long " +
      "its event loop had been kept from its timers when it read the answer: the load client shares the cores); " +
      "of the gateway lane's and the order-service's sheds, how many waited in a queue (the rest were refused at once); inside the gateway (its histogram, from its first " +
      "middleware to the answer; bucket bounds); the order-service's 503s as the gateway saw them (its upstream " +
      "histogram: its pool's queue, the network, the service); the worst event-loop delay p99 in a 250 ms " +
      "window; the gateway's adaptive `orders:write` limit; the gateway's CPU during the load, in cores and per " +
      "request it answered (shed, refused or proxied); the order-service's, the load client's and everything's.",
    "",
    table(
      [
        "phase",
        "shed at the client ms p50/p99",
        "net of the client's lateness ms p50/p99",
        "sheds after waiting in a queue: gateway lane / order-service",
        "shed inside the gateway ms p50/p99",
        "order-service 503 at the gateway ms p50/p99",
        "event-loop delay p99 ms client / gateway / order-service",
        "orders:write limit min / last",
        "gateway CPU: cores / µs a request (requests)",
        "cores: order-service / bench client / all",
      ],
      all.map(where),
    ),
    "",
    "Seconds in which POSTs were shed (the first ten of each phase): shed by the gateway (its lane, or for want of " +
      "the order-service's headroom) / the order-service's " +
      "admission / the saga backlog bound, then the backlog and its bound.",
    "",
    ...all.map((p) => `- ${p.label}: ${p.shedTimeline.length ? describeTimeline(p) : "none"}`),
    ...cpuTimelineTable(r.freshStart),
  ].join("\n");
}

/** The fresh start's cores by second and process: whether a refusal fell where some process was still busy starting. */
function cpuTimelineTable(p: OverloadPhase): string[] {
  if (!p.cpuTimeline.length) return [];
  const names = Object.keys(p.cpuTimeline[0]?.cores ?? {});
  return [
    "",
    `The ${p.label}'s cores by second from the first POST, each process with its children (PostgreSQL's backends, the broker's threads), and all together:`,
    "",
    table(
      ["second", ...names, "all"],
      p.cpuTimeline.map(({ second, cores }) => [
        String(second),
        ...names.map((n) => fmt(cores[n] ?? 0, 2)),
        fmt(
          Object.values(cores).reduce((a, b) => a + b, 0),
          2,
        ),
      ]),
    ),
  ];
}

/** Replaces the overload section of RESULTS.md, or appends it; the rest of the file is kept. */
export async function writeOverloadSection(path: string, section: string): Promise<void> {
  const text = await readFile(path, "utf8").catch(() => "");
  const start = text.indexOf("## Overload (issue 11)");
  const kept = start === -1 ? text.trimEnd() : text.slice(0, start).trimEnd();
  await writeFile(path, `${kept}\n\n${section}\n`);
}
