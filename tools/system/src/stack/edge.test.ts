import { once } from "node:events";
import { createServer, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { freePort, nginxBinary } from "@saga/tools/infra";
import { Agent, request } from "undici";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Edge, startEdge } from "./edge.ts";

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

// A gateway stand-in that holds POST /orders and long polls until released, and answers anything else.
const held: ServerResponse[] = [];
const seen: string[] = [];
const upstream = createServer((req, res) => {
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

let edge: Edge;
let url: string;
// Connections enough that the requests held upstream do not hold up the others.
const agent = new Agent({ connections: 64 });

beforeAll(async () => {
  upstream.listen(0, "127.0.0.1");
  await once(upstream, "listening");
  const port = await freePort();
  const nginx = await nginxBinary(() => {});
  edge = await startEdge(nginx, port, (upstream.address() as AddressInfo).port, {
    ordersWrite: 2,
    ordersRead: 2,
  });
  url = `http://127.0.0.1:${port}`;
});

afterAll(async () => {
  release();
  await edge?.stop();
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

describe("the nginx edge in front of the gateway", () => {
  it("refuses a POST /orders past its bound with 503, Retry-After and a JSON error, and forwards it again once there is room", async () => {
    const first = [send("POST", "/orders"), send("POST", "/orders")];
    await holding(2);

    const refused = await send("POST", "/orders");
    expect(refused.statusCode).toBe(503);
    expect(refused.headers["retry-after"]).toBe("1");
    expect(await refused.body.json()).toEqual({
      error: "overloaded: too many requests in flight; retry later",
    });
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
    const polls = [1, 2, 3].map(() => send("GET", "/orders/a", { prefer: "wait=5" }));
    await holding(3);

    const read = await send("GET", "/orders/b");
    expect(read.statusCode).toBe(200);
    await read.body.dump();

    await releaseAndExpectAnswered(polls);
  });
});
