/**
 * Experiments of the bench: a proxy in front of the gateway that refuses in C what is past a bound of
 * requests in flight, so that a refusal does not wait for the gateway's event loop. Not part of `npm
 * start`: the proxies are not installed by the project.
 *
 * - nginx (bench/JOURNAL.md, "Session 34"): static bounds per lane (`limit_conn`).
 * - HAProxy (bench/JOURNAL.md, "Session 37"): a bound that follows the gateway's adaptive one. It lets
 *   through at most what the order-service serves at once and a little more (`maxconn`); past that,
 *   requests wait in HAProxy's queue, which costs nothing, and past a queue as long as the gateway's own
 *   bound for the lane they are refused at once. A controller reads the gateway's
 *   `http_admission_limit` of each order lane a few times a second and sets both through HAProxy's
 *   runtime API.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { createConnection } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { GATEWAY_HTTP_DEFAULTS } from "@saga/gateway";
import { httpEnvDefaults, OVERLOADED_MESSAGE } from "@saga/http";
import { SERVICE_HTTP_DEFAULTS } from "@saga/messaging";
import type { Tool } from "@saga/tools/infra";

export type Edge = { pid: number | undefined; stop(): Promise<void> };

/** Requests in flight through the edge, past which it answers 503 itself. */
export type EdgeLimits = { ordersWrite: number; ordersRead: number };

/**
 * POSTs: what the order-service's write lane admits, served and queued (24 by default); past it the service
 * would refuse, after the request crossed the gateway: the edge refuses it first. Reads are left a loose
 * bound (cheap, and followed orders are a few per second each). Measured in bench/JOURNAL.md, "Session 34":
 * with 64 and 32 POSTs the gateway and the service still refused some, slowly.
 */
export const EDGE_LIMITS: EdgeLimits = {
  ordersWrite: SERVICE_HTTP_DEFAULTS.writeInFlight + SERVICE_HTTP_DEFAULTS.queue,
  ordersRead: 128,
};

// The gateway's refusal, as its error handler writes it (no request id: nginx has none of ours).
const SHED_BODY = JSON.stringify({ error: OVERLOADED_MESSAGE });

/** Which proxy, and what it needs. */
export type EdgeSpec =
  | { kind: "nginx"; tool: Tool; limits: EdgeLimits }
  | {
      kind: "haproxy";
      tool: Tool;
      /** The gateway's `/metrics`, whose order lanes' limits the edge follows. */
      gatewayMetricsUrl: string;
      /** How often the controller reads them. */
      followEveryMs?: number;
      /** The gateway's warm-up, which the edge's queues follow (`WARM_UP`). */
      warmUp?: { ms: number; queue: number };
    };

/** Starts the proxy on `port` in front of the gateway on `upstreamPort`; resolves once it answers. */
export async function startEdge(spec: EdgeSpec, port: number, upstreamPort: number): Promise<Edge> {
  const dir = await mkdtemp(join(tmpdir(), "saga-edge-"));
  if (spec.kind === "nginx") {
    await writeFile(join(dir, "nginx.conf"), nginxConf(dir, port, upstreamPort, spec.limits));
    const child = await launch(spec.tool, ["-c", join(dir, "nginx.conf"), "-p", dir], port, dir);
    return { pid: child.pid, stop: () => stopChild(child, dir) };
  }
  const socket = join(dir, "admin.sock");
  await writeFile(join(dir, "haproxy.cfg"), haproxyConf(socket, port, upstreamPort));
  const child = await launch(spec.tool, ["-f", join(dir, "haproxy.cfg"), "-db", "-q"], port, dir);
  const stopFollowing = followGateway(spec.gatewayMetricsUrl, socket, spec.followEveryMs ?? 200, {
    ...WARM_UP,
    ...spec.warmUp,
  });
  return {
    pid: child.pid,
    async stop() {
      await stopFollowing();
      await stopChild(child, dir);
    },
  };
}

function nginxConf(dir: string, port: number, upstreamPort: number, limits: EdgeLimits): string {
  // One worker, no master: the pid is the process doing the work. limit_conn counts an HTTP/1.1
  // connection only while a request of it is being served, so it bounds requests in flight per key;
  // an empty key is not counted.
  return `daemon off; master_process off; worker_processes 1; error_log ${dir}/error.log warn; pid ${dir}/nginx.pid;
events { worker_connections 16384; }
http {
  access_log off;
  client_body_temp_path ${dir}; proxy_temp_path ${dir}; fastcgi_temp_path ${dir}; uwsgi_temp_path ${dir}; scgi_temp_path ${dir};
  map "$request_method $uri" $orders_write { "POST /orders" w; default ""; }
  # A long poll (Prefer: wait) holds its place for seconds: never counted with the reads.
  map "$request_method $uri|$http_prefer" $orders_read {
    "~^(GET|HEAD) /orders/[^|]*\\|.*wait=[0-9]" "";
    "~^(GET|HEAD) /orders/" r;
    default "";
  }
  limit_conn_zone $orders_write zone=orders_write:1m;
  limit_conn_zone $orders_read zone=orders_read:1m;
  limit_conn_status 503;
  limit_conn_log_level info;
  upstream gateway { server 127.0.0.1:${upstreamPort}; keepalive 512; keepalive_requests 1000000; }
  server {
    listen 127.0.0.1:${port} backlog=4096;
    keepalive_requests 1000000;
    location / {
      limit_conn orders_write ${limits.ordersWrite};
      limit_conn orders_read ${limits.ordersRead};
      error_page 503 = @shed;
      proxy_pass http://gateway;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
    }
    location @shed {
      default_type application/json;
      add_header Retry-After 1 always;
      return 503 '${SHED_BODY}';
    }
  }
}
`;
}

/**
 * The lanes HAProxy bounds, and the gateway's admission lane each follows. A long poll (`Prefer: wait`)
 * holds its place for seconds and is bounded by neither.
 */
const HAPROXY_LANES = [
  // At most the order-service's write lane (8) and a quarter of its queue in flight: a request that
  // waits in the service's queue past its 20 ms is refused there, after crossing the gateway twice, and
  // those slow refusals set the p99 (with 24, the whole queue: 160–180 of them a phase; with 16, 69 at
  // 2×; with 12, 0–51 at 2× and none at 5×; bench/JOURNAL.md, "Session 37").
  {
    backend: "writes",
    lane: "orders:write",
    maxInFlight: SERVICE_HTTP_DEFAULTS.writeInFlight + SERVICE_HTTP_DEFAULTS.queue / 4,
  },
  // Reads are cheap and rarely refused behind the edge: the service's whole lane.
  {
    backend: "reads",
    lane: "orders:read",
    maxInFlight: SERVICE_HTTP_DEFAULTS.readInFlight + SERVICE_HTTP_DEFAULTS.queue,
  },
] as const;

/**
 * For the gateway's warm-up (ADMISSION_WARMUP_*: 30 s, then 30 s easing down) its queues hold up to 1,024
 * requests for up to a second, so that a cold system queues rather than refuses; the edge's queues do the
 * same for as long, then hold as many as the lane's bound.
 */
const GATEWAY_SETTINGS = httpEnvDefaults(GATEWAY_HTTP_DEFAULTS);
const WARM_UP = {
  ms: GATEWAY_SETTINGS.ADMISSION_WARMUP_MS,
  queue: GATEWAY_SETTINGS.ADMISSION_WARMUP_QUEUE,
  queueMs: GATEWAY_SETTINGS.ADMISSION_WARMUP_QUEUE_MS,
};

function haproxyConf(socket: string, port: number, upstreamPort: number): string {
  const backends = HAPROXY_LANES.map(
    ({ backend, maxInFlight }) => `backend ${backend}
  server gateway 127.0.0.1:${upstreamPort} maxconn ${maxInFlight}
`,
  ).join("");
  // maxconn 8000: the descriptors it needs fit the soft limit a user may not raise. The queue's timeout
  // (a second, the gateway's own during its warm-up) answers a request that waited that long with the
  // same 503 (as does a gateway that refuses connections: an experiment's simplification); refusals past
  // a full queue are immediate (`http-request return`). The queue bounds are variables the controller
  // sets: queue(b) - proc.b_queue >= 0.
  return `global
  maxconn 8000
  stats socket ${socket} level admin
${HAPROXY_LANES.map(({ backend }) => `  set-var proc.${backend}_queue int(${WARM_UP.queue})`).join("\n")}
defaults
  mode http
  option http-keep-alive
  http-reuse always
  timeout connect 1s
  timeout client 60s
  timeout http-request 10s
  timeout http-keep-alive 60s
  timeout server 60s
  timeout queue ${WARM_UP.queueMs}ms
  http-error status 503 content-type application/json string '${SHED_BODY}' hdr Retry-After 1
frontend edge
  bind 127.0.0.1:${port}
  acl writes method POST
  acl writes_path path /orders
  acl reads method GET HEAD
  acl reads_path path_beg /orders/
  acl long_poll req.hdr(prefer) -m reg wait=[0-9]
${HAPROXY_LANES.map(
  ({ backend }) =>
    `  http-request return status 503 content-type application/json string '${SHED_BODY}' hdr Retry-After 1 if ${backend} ${backend}_path !long_poll { queue(${backend}),sub(proc.${backend}_queue) ge 0 }`,
).join("\n")}
${HAPROXY_LANES.map(({ backend }) => `  use_backend ${backend} if ${backend} ${backend}_path !long_poll`).join("\n")}
  default_backend rest
${backends}backend rest
  server gateway 127.0.0.1:${upstreamPort}
`;
}

/**
 * Sets each HAProxy lane's `maxconn` to the gateway's limit for it (at most the lane's `maxInFlight`), and
 * its queue to the gateway's limit (more during the gateway's warm-up), every `everyMs`; returns its
 * stopper. A turn that fails (the gateway restarting) leaves the bounds as they were and says why once
 * per distinct reason on stderr: a controller failing unseen would void the measurement.
 */
function followGateway(
  metricsUrl: string,
  socket: string,
  everyMs: number,
  warmUp: { ms: number; queue: number },
): () => Promise<void> {
  const started = performance.now();
  const stopping = new AbortController();
  let last = "";
  const reasons = new Set<string>();
  const done = (async () => {
    while (!stopping.signal.aborted) {
      try {
        const text = await (await fetch(metricsUrl, { signal: stopping.signal })).text();
        // The gateway's warm-up runs from its start: a restarted gateway warms up again.
        const gatewayStart = processStart(text);
        const elapsed = gatewayStart === undefined ? performance.now() - started : Date.now() - gatewayStart;
        // The whole warm-up queue for `warmUp.ms`, then down to none in as long again.
        const warmQueue = warmUp.queue * Math.min(1, Math.max(0, 2 - elapsed / Math.max(1, warmUp.ms)));
        const commands = HAPROXY_LANES.flatMap(({ backend, lane, maxInFlight }) => {
          const limit = laneLimit(text, lane);
          if (limit === undefined) return [];
          return [
            `set maxconn server ${backend}/gateway ${Math.min(limit, maxInFlight)}`,
            `set var proc.${backend}_queue int(${Math.max(limit, Math.round(warmQueue))})`,
          ];
        }).join("; ");
        if (commands && commands !== last) {
          // `set var` is an experimental command of HAProxy 2.6's runtime API.
          await runtimeApi(socket, `experimental-mode on; ${commands}`);
          last = commands;
        }
      } catch (err) {
        const reason = err instanceof Error ? err.message : String(err);
        if (!stopping.signal.aborted && !reasons.has(reason)) {
          reasons.add(reason);
          process.stderr.write(`edge: the controller's turn failed (${reason}); the next tries again\n`);
        }
      }
      await new Promise((r) => setTimeout(r, everyMs));
    }
  })();
  return async () => {
    stopping.abort();
    await done;
  };
}

/** The gateway's current limit of one admission lane, from its metrics' text. */
function laneLimit(metricsText: string, lane: string): number | undefined {
  const match = new RegExp(`^http_admission_limit\\{[^}]*lane="${lane}"[^}]*\\} (\\d+)`, "m").exec(
    metricsText,
  );
  return match ? Number(match[1]) : undefined;
}

/** When the gateway's process started (ms since the epoch), from its metrics' text. */
function processStart(metricsText: string): number | undefined {
  const match = /^process_start_time_seconds(?:\{[^}]*\})? (\d+(?:\.\d+)?)/m.exec(metricsText);
  return match ? Number(match[1]) * 1000 : undefined;
}

/** One exchange with HAProxy's runtime API; rejects with what it answered when that is not empty. */
function runtimeApi(socket: string, commands: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const conn = createConnection(socket);
    let answer = "";
    conn.setEncoding("utf8");
    conn.on("data", (chunk) => {
      answer += chunk;
    });
    conn.on("error", reject);
    conn.on("end", () => (answer.trim() === "" ? resolve() : reject(new Error(`haproxy: ${answer.trim()}`))));
    conn.end(`${commands}\n`);
  });
}

async function launch(tool: Tool, args: string[], port: number, dir: string): Promise<ChildProcess> {
  const child: ChildProcess = spawn(tool.binary, args, {
    stdio: ["ignore", "ignore", "inherit"],
    env: { ...process.env, ...tool.env },
  });
  const deadline = Date.now() + 10_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`${tool.binary} exited with ${child.exitCode} (${dir})`);
    const ok = await fetch(`http://127.0.0.1:${port}/health`).then(
      (r) => r.ok,
      () => false,
    );
    if (ok) return child;
    if (Date.now() > deadline) throw new Error(`${tool.binary} did not answer within 10 s`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function stopChild(child: ChildProcess, dir: string): Promise<void> {
  if (child.exitCode === null) {
    child.kill("SIGTERM");
    await new Promise((r) => child.once("exit", r));
  }
  await rm(dir, { recursive: true, force: true });
}
