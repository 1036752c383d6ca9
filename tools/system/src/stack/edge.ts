/**
 * An experiment of the bench (bench/README.md, "Session 34"): nginx in front of the gateway, refusing in
 * C what is past a bound of requests in flight per lane (`limit_conn`), so that a refusal does not wait
 * for the gateway's event loop. Not part of `npm start`: nginx is not installed by the project.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { OVERLOADED_MESSAGE } from "@saga/http";
import { SERVICE_HTTP_DEFAULTS } from "@saga/messaging";

export type Edge = { pid: number | undefined; stop(): Promise<void> };

/** Requests in flight through the edge, past which it answers 503 itself. */
export type EdgeLimits = { ordersWrite: number; ordersRead: number };

/**
 * POSTs: what the order-service's write lane admits, served and queued (24 by default); past it the service
 * would refuse, after the request crossed the gateway: the edge refuses it first. Reads are left a loose
 * bound (cheap, and followed orders are a few per second each). Measured in bench/README.md, "Session 34":
 * with 64 and 32 POSTs the gateway and the service still refused some, slowly.
 */
export const EDGE_LIMITS: EdgeLimits = {
  ordersWrite: SERVICE_HTTP_DEFAULTS.writeInFlight + SERVICE_HTTP_DEFAULTS.queue,
  ordersRead: 128,
};

// The gateway's refusal, as its error handler writes it (no request id: nginx has none of ours).
const SHED_BODY = JSON.stringify({ error: OVERLOADED_MESSAGE });

/** Starts nginx (`binary`) on `port` in front of `upstreamPort`; resolves once it answers. */
export async function startEdge(
  binary: string,
  port: number,
  upstreamPort: number,
  limits: EdgeLimits,
): Promise<Edge> {
  const dir = await mkdtemp(join(tmpdir(), "saga-edge-"));
  // One worker, no master: the pid is the process doing the work. limit_conn counts an HTTP/1.1
  // connection only while a request of it is being served, so it bounds requests in flight per key;
  // an empty key is not counted.
  const conf = `daemon off; master_process off; worker_processes 1; error_log ${dir}/error.log warn; pid ${dir}/nginx.pid;
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
  await writeFile(join(dir, "nginx.conf"), conf);
  const child: ChildProcess = spawn(binary, ["-c", join(dir, "nginx.conf"), "-p", dir], {
    stdio: ["ignore", "ignore", "inherit"],
  });
  const deadline = Date.now() + 10_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`nginx exited with ${child.exitCode} (${dir}/error.log)`);
    const ok = await fetch(`http://127.0.0.1:${port}/health`).then(
      (r) => r.ok,
      () => false,
    );
    if (ok) break;
    if (Date.now() > deadline) throw new Error("nginx did not answer within 10 s");
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    pid: child.pid,
    async stop() {
      if (child.exitCode === null) {
        child.kill("SIGTERM");
        await new Promise((r) => child.once("exit", r));
      }
      await rm(dir, { recursive: true, force: true });
    },
  };
}
