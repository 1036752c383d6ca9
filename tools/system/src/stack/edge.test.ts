import { once } from "node:events";
import { createServer, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { freePort, haproxyTool, nginxTool } from "@saga/tools/infra";
import { Agent, request } from "undici";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Edge, type EdgeSpec, startEdge } from "./edge.ts";

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

// A gateway stand-in that holds POST /orders and long polls until released, and answers anything else.
// Its /metrics says the admission limits that `limits` holds, as the gateway's does.
const held: ServerResponse[] = [];
const seen: string[] = [];
const limits = { "orders:write": 2, "orders:read": 64 };
let scrapes = 0;
const upstream = createServer((req, res) => {
  if (req.url === "/metrics") {
    scrapes++;
    return void res.end(
      Object.entries(limits)
        .map(([lane, limit]) => `http_admission_limit{lane="${lane}",service="gateway"} ${limit}\n`)
        .join(""),
    );
  }
  seen.push(`${req.method} ${req.url}`);
  req.resume();
  const hold =
    (req.method === "POST" && req.url === "/orders") || /wait=/.test(String(req.headers.prefer ?? ""));
  if (hold) return void held.push(res);
  res.setHeader("content-type", "application/json");
  res.end('{"ok":true}');
});
const release = () => {
  for (const res of held.splice(0)) res.end('{"released":true}');
};

let url: string;
// Connections enough that the requests held upstream do not hold up the others.
const agent = new Agent({ connections: 64 });

/** Starts an edge in front of the stand-in; stopped after the describe block that calls it. */
function edgeOf(spec: () => Promise<EdgeSpec>) {
  let edge: Edge | undefined;
  beforeAll(async () => {
    const port = await freePort();
    edge = await startEdge(await spec(), port, upstreamPort());
    url = `http://127.0.0.1:${port}`;
  });
  afterAll(async () => {
    release();
    await edge?.stop();
  });
}

const upstreamPort = () => (upstream.address() as AddressInfo).port;

beforeAll(async () => {
  upstream.listen(0, "127.0.0.1");
  await once(upstream, "listening");
});

afterAll(async () => {
  await agent.close();
  upstream.close();
});

const send = (method: "GET" | "POST", path: string, headers: Record<string, string> = {}) =>
  request(`${url}${path}`, {
    method,
    headers: { "content-type": "application/json", ...headers },
    body: method === "POST" ? "{}" : undefined,
    dispatcher: agent,
  });

/** Releases what the upstream holds, and checks that each of `responses` then came through. */
async function releaseAndExpectAnswered(responses: ReturnType<typeof send>[]) {
  release();
  for (const r of await Promise.all(responses)) {
    expect(r.statusCode).toBe(200);
    await r.body.dump();
  }
}

/** Waits until the upstream holds `n` requests. */
async function holding(n: number) {
  for (let i = 0; i < 100 && held.length < n; i++) await sleep(20);
  expect(held.length).toBe(n);
}

/**
 * Three long polls, past an edge whose read bound is below three, all reach the upstream; meanwhile
 * `other` is answered. Then all are released and answered.
 */
async function expectLongPollsPastTheReadBound(other: () => ReturnType<typeof send>) {
  const polls = [1, 2, 3].map(() => send("GET", "/orders/a", { prefer: "wait=5" }));
  await holding(3);
  const answered = await other();
  expect(answered.statusCode).toBe(200);
  await answered.body.dump();
  await releaseAndExpectAnswered(polls);
}

/** Expects a 503 with `Retry-After` and the gateway's JSON error. */
async function expectShed(response: Awaited<ReturnType<typeof send>>) {
  expect(response.statusCode).toBe(503);
  expect(response.headers["retry-after"]).toBe("1");
  expect(await response.body.json()).toEqual({
    error: "overloaded: too many requests in flight; retry later",
  });
}

describe("the nginx edge in front of the gateway", () => {
  edgeOf(async () => ({
    kind: "nginx",
    tool: await nginxTool(() => {}),
    limits: { ordersWrite: 2, ordersRead: 2 },
  }));

  it("refuses a POST /orders past its bound with 503, Retry-After and a JSON error, and forwards it again once there is room", async () => {
    const first = [send("POST", "/orders"), send("POST", "/orders")];
    await holding(2);

    await expectShed(await send("POST", "/orders"));
    expect(seen.filter((s) => s === "POST /orders")).toHaveLength(2);

    // Another route is not behind the orders' bound.
    const other = await send("POST", "/users");
    expect(other.statusCode).toBe(200);
    await other.body.dump();

    await releaseAndExpectAnswered(first);
    const again = send("POST", "/orders");
    await holding(1);
    await releaseAndExpectAnswered([again]);
  });

  it("does not count long polls (Prefer: wait) with the reads of orders", async () => {
    await expectLongPollsPastTheReadBound(() => send("GET", "/orders/b"));
  });
});

describe("the HAProxy edge in front of the gateway", () => {
  edgeOf(async () => ({
    kind: "haproxy",
    tool: await haproxyTool(() => {}),
    gatewayMetricsUrl: `http://127.0.0.1:${upstreamPort()}/metrics`,
    followEveryMs: 20,
    warmUp: { ms: 0, queue: 0 },
  }));

  /** Sets the stand-in gateway's write limit, and waits until the edge has applied it. */
  async function writeLimit(limit: number) {
    limits["orders:write"] = limit;
    // The controller applies what one reading says before it takes the next: two readings on, applied.
    const from = scrapes;
    for (let i = 0; i < 200 && scrapes < from + 2; i++) await sleep(10);
    expect(scrapes).toBeGreaterThanOrEqual(from + 2);
  }

  /** Sends `n` POST /orders at once; resolves with the first answered (a refusal) and the others. */
  async function wave(n: number) {
    const sent = Array.from({ length: n }, () => send("POST", "/orders"));
    const first = await Promise.race(sent.map((response, i) => response.then((r) => ({ r, i }))));
    return { refused: first.r, others: sent.filter((_, i) => i !== first.i) };
  }

  it("lets through as many POST /orders as the gateway's limit, queues as many again, and refuses the rest at once", async () => {
    seen.length = 0;
    await writeLimit(2);
    // Two forwarded, two queued, one refused: in whatever order they arrive.
    const first = await wave(5);
    await expectShed(first.refused);
    await holding(2);
    expect(
      seen.filter((s) => s === "POST /orders"),
      "forwarded while two are held",
    ).toHaveLength(2);

    // The gateway's limit rises: the queued two are forwarded, and the queue is as long as the new limit.
    await writeLimit(4);
    await holding(4);
    const second = await wave(5);
    await expectShed(second.refused);
    // The queue's timeout (a second) is not reached: releasing the four lets the four queued through.
    await releaseAndExpectAnswered(first.others);
    await holding(4);
    await releaseAndExpectAnswered(second.others);
    expect(seen.filter((s) => s === "POST /orders")).toHaveLength(8);
  });

  it("does not bound long polls (Prefer: wait), and passes other routes", async () => {
    limits["orders:read"] = 1;
    await writeLimit(1);
    await expectLongPollsPastTheReadBound(() => send("POST", "/users"));
  });
});
