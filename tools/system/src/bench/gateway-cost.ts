/**
 * The gateway's CPU per request, alone: a gateway bundle (`dist/bin/gateway.mjs`, or another build to
 * compare) in front of a stub upstream, 32 clients in this process, the gateway's CPU read from /proc.
 *
 *   node tools/system/src/bench/gateway-cost.ts <gateway.mjs> shed|get|post [requests] [per second] [warm-up]
 *
 * `shed`: POST /orders refused by the `orders:write` lane (the stub never answers the 8 it admits);
 * `get`: a user's GET /orders/:id, forwarded and authorized on the answer; `post`: POST /orders, forwarded.
 * With a rate, the measured requests go one at a time at that rate instead of from 32 clients at once:
 * what a request costs a gateway that sleeps between requests, as at the bench's 100 sagas/s (the
 * warm-up still runs at full speed: `requests / 4` of them, or `warm-up`; V8 optimizes a function with
 * TurboFan after 3,000 calls, so a paced run needs a warm-up of thousands). Run two builds alternately,
 * several times each, and compare medians: the host's load moves the figures.
 *
 * Instead of a bundle, any executable that serves `PORT` in front of `ORDER_SERVICE_URL` (and may check the
 * bearer token with `AUTH_SECRET`): `hop-floor/` holds the floor of a hop in Node, Go and nginx.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import { createServer, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { mintToken } from "@saga/gateway";
import { cpuSeconds, nodeFlags } from "@saga/tools/process";
import { Agent, request } from "undici";

const [bundle, mode = "get", total = "10000", perSecond, warmTotal] = process.argv.slice(2);
const rate = perSecond === undefined ? undefined : Number(perSecond);
if (!bundle || !["shed", "get", "post"].includes(mode) || (rate !== undefined && !(rate > 0))) {
  console.error("usage: gateway-cost.ts <gateway.mjs> shed|get|post [requests] [per second] [warm-up]");
  process.exit(2);
}
const requests = Number(total);
const secret = randomUUID().repeat(2);
const userId = randomUUID();
const token = await mintToken({ secret, subject: userId });

const held: ServerResponse[] = [];
const stub = createServer((req, res) => {
  if (req.url === "/health") return void res.end('{"status":"UP"}');
  // Held, never answered: the gateway's write lane fills and every further POST is shed.
  if (req.method === "POST" && mode === "shed") return void held.push(res);
  req.resume();
  req.on("end", () => {
    const now = new Date().toISOString();
    res.setHeader("content-type", "application/json");
    res.setHeader("x-headroom", "1000000");
    res.end(
      JSON.stringify({
        id: randomUUID(),
        userId,
        amount: 5,
        status: "PENDING",
        createdAt: now,
        updatedAt: now,
      }),
    );
  });
});
await new Promise<void>((resolve) => stub.listen(0, "127.0.0.1", resolve));
const upstream = `http://127.0.0.1:${(stub.address() as AddressInfo).port}`;

const port = 20_000 + Math.floor(Math.random() * 10_000);
const lots = "1000000000";
// SAGA_NODE_FLAGS reach the gateway, as they reach every process of a run (`--cpu-prof` to profile it).
// A bundle or script runs on this Node; any other executable (another proxy: hop-floor/) runs itself.
const [command, args] = /\.([cm]?js|ts)$/.test(bundle)
  ? [process.execPath, [...nodeFlags(), bundle]]
  : [bundle, []];
const gateway: ChildProcess = spawn(command, args, {
  env: {
    ...process.env,
    PORT: String(port),
    METRICS_PORT: String(port + 1),
    AUTH_SECRET: secret,
    INTERNAL_SECRET: randomUUID().repeat(2),
    USER_SERVICE_URLS: upstream,
    ORDER_SERVICE_URL: upstream,
    LOG_LEVEL: "warn",
    RATE_LIMIT_SUBJECT_PER_S: lots,
    RATE_LIMIT_SUBJECT_BURST: lots,
    RATE_LIMIT_ADDRESS_PER_S: lots,
    RATE_LIMIT_ADDRESS_BURST: lots,
    ADMISSION_ADAPTIVE: "false",
    ADMISSION_WRITE_IN_FLIGHT: mode === "shed" ? "8" : "64",
    ADMISSION_QUEUE: "0",
    // Without the warm-up's queue (1 s of waiting for 30 s, eased over 30 s more), which had `shed` queue
    // its requests and its measured ones come a minute after the start, some of them still queued.
    ADMISSION_WARMUP_MS: "0",
  },
  stdio: ["ignore", "inherit", "inherit"],
});
const base = `http://127.0.0.1:${port}`;
const dispatcher = new Agent({ connections: 64 });
for (;;) {
  const ready = await request(`${base}/ready`, { dispatcher }).catch(() => undefined);
  await ready?.body.dump();
  if (ready?.statusCode === 200) break;
  await new Promise((r) => setTimeout(r, 100));
}

/** CPU seconds of the gateway so far. */
const gatewayCpu = async () =>
  (await cpuSeconds({ gateway: gateway.pid as number }, ["gateway"])).gateway ?? 0;

const headers = { authorization: `Bearer ${token}` };
const send = () =>
  mode === "get"
    ? request(`${base}/orders/${randomUUID()}`, { dispatcher, headers })
    : request(`${base}/orders`, {
        method: "POST",
        dispatcher,
        headers: { ...headers, "content-type": "application/json", "idempotency-key": randomUUID() },
        body: JSON.stringify({ userId, amount: 5 }),
      });

/** `n` requests from 32 clients at once, or one at a time at `perS` a second. */
async function run(n: number, perS?: number) {
  let sent = 0;
  const statuses: Record<number, number> = {};
  const started = performance.now();
  const one = async () => {
    const res = await send();
    await res.body.dump();
    statuses[res.statusCode] = (statuses[res.statusCode] ?? 0) + 1;
  };
  if (perS !== undefined) {
    for (; sent < n; sent++) {
      const early = started + (sent * 1000) / perS - performance.now();
      if (early > 0) await new Promise((r) => setTimeout(r, early));
      await one();
    }
    return statuses;
  }
  await Promise.all(
    Array.from({ length: 32 }, async () => {
      while (sent++ < n) await one();
    }),
  );
  return statuses;
}

if (mode === "shed") {
  for (let i = 0; i < 8; i++) void send().catch(() => {});
  await new Promise((r) => setTimeout(r, 300));
}
await run(warmTotal === undefined ? requests / 4 : Number(warmTotal)); // warm: V8 compiles the path
const before = await gatewayCpu();
const started = performance.now();
const statuses = await run(requests, rate);
const cpuS = (await gatewayCpu()) - before;
const wallS = (performance.now() - started) / 1000;
console.log(
  JSON.stringify({
    mode,
    requests,
    perSecond: rate ?? "32 clients at once",
    statuses,
    usPerRequest: Math.round((cpuS / requests) * 1e6),
    gatewayCores: Number((cpuS / wallS).toFixed(2)),
  }),
);
// Stopped as a service is (a profile is written on the way out), once the requests it holds have failed:
// it would wait for them.
for (const res of held) res.destroy();
const exited = new Promise((resolve) => gateway.once("exit", resolve));
gateway.kill("SIGTERM");
await exited;
stub.close();
await dispatcher.destroy();
process.exit(0);
