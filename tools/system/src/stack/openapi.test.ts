import { randomUUID } from "node:crypto";
import { request as httpRequest } from "node:http";
import { connect } from "node:net";
import { kafkaBrokers, postgresUrl, uniqueName } from "@saga/tools/test/harness";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { createResponseValidator, type OpenApiDocument } from "./conformance.ts";
import { freePorts, type System, startSystem } from "./system.ts";

// The whole system, driven through the gateway with the requests a client makes (each happy path and
// each error it can provoke), and every answer checked against the OpenAPI document the gateway
// serves: a status, Content-Type, body or required header that the document does not declare fails.
let system: System;
let validator: ReturnType<typeof createResponseValidator>;
let adminToken: string;
const logs: string[] = [];
/** The answers of the running test and what was wrong with each; checked after every test. */
const checked: { request: string; status: number; problems: string[] }[] = [];

beforeAll(async () => {
  system = await startSystem({
    ports: await freePorts(),
    external: { postgresUrl: postgresUrl(), kafkaBrokers: kafkaBrokers(), prefix: `${uniqueName("oas")}.` },
    env: {
      LOG_LEVEL: "warn",
      // Small enough to reach with a few orders, per subject.
      RATE_LIMIT_SUBJECT_PER_S: "0.5",
      RATE_LIMIT_SUBJECT_BURST: "8",
      RATE_LIMIT_ADDRESS_PER_S: "10000",
      RATE_LIMIT_ADDRESS_BURST: "10000",
      // A slow head is cut off after this (every process).
      HTTP_HEADERS_TIMEOUT_MS: "1000",
    },
    output: (name, line) => logs.push(`${name} | ${line}`),
    log: (line) => logs.push(line),
  });
  const document = await fetch(`${system.gatewayUrl}/openapi.json`);
  expect(document.status).toBe(200);
  validator = createResponseValidator((await document.json()) as OpenApiDocument);
  adminToken = await system.token("oas-admin", { admin: true });
}, 180_000);

afterAll(async () => {
  await system?.stop();
});

afterEach(() => {
  const answers = checked.splice(0);
  expect(answers.length).toBeGreaterThan(0);
  expect(answers.filter((a) => a.problems.length > 0)).toEqual([]);
});

type Call = {
  method?: string;
  body?: unknown;
  /** A token (the admin's by default), or null for none. */
  token?: string | null;
  headers?: Record<string, string>;
};

/** A request through the gateway; its answer is checked against the document and recorded. */
async function call(path: string, { method = "GET", body, token = adminToken, headers = {} }: Call = {}) {
  const res = await fetch(`${system.gatewayUrl}${path}`, {
    method,
    headers: {
      ...(body === undefined ? {} : { "content-type": "application/json" }),
      ...(token === null ? {} : { authorization: `Bearer ${token}` }),
      ...headers,
    },
    body: body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body),
  });
  const text = await res.text();
  const received = { status: res.status, headers: res.headers, body: text };
  checked.push({
    request: `${method} ${path}`,
    status: res.status,
    problems: validator.check(method, path, received),
  });
  return { status: res.status, headers: res.headers, body: text ? JSON.parse(text) : undefined };
}

/** A request with node:http, for what fetch will not send (TRACE, an oversized head). */
function raw(
  path: string,
  { method = "GET", headers = {} }: { method?: string; headers?: Record<string, string> },
) {
  const { hostname, port } = new URL(system.gatewayUrl);
  return new Promise<{ status: number; headers: Headers; body: string }>((resolve, reject) => {
    const req = httpRequest({ host: hostname, port, method, path, headers }, (res) => {
      let body = "";
      res.on("data", (chunk) => (body += chunk));
      res.on("end", () => {
        const received = new Headers();
        for (const [name, value] of Object.entries(res.headers))
          if (typeof value === "string") received.set(name, value);
        resolve({ status: res.statusCode ?? 0, headers: received, body });
      });
    });
    req.on("error", reject);
    req.end();
  });
}

/** A client that sends half a head and waits: the server answers once its head timeout passes. */
function slowHead(path: string) {
  const { hostname, port } = new URL(system.gatewayUrl);
  return new Promise<{ status: number; headers: Headers; body: string }>((resolve, reject) => {
    const socket = connect(Number(port), hostname);
    let received = "";
    socket.on("data", (chunk) => (received += chunk));
    socket.on("error", reject);
    socket.on("close", () => {
      const [head = "", body = ""] = received.split("\r\n\r\n");
      const [statusLine = "", ...lines] = head.split("\r\n");
      const headers = new Headers();
      for (const line of lines)
        headers.append(line.slice(0, line.indexOf(":")), line.slice(line.indexOf(":") + 1).trim());
      resolve({ status: Number(statusLine.split(" ")[1]), headers, body });
    });
    socket.write(`GET ${path} HTTP/1.1\r\nHost: x\r\n`);
  });
}

const record = (
  request: string,
  res: { status: number; headers: Headers; body: string },
  method: string,
  path: string,
) => checked.push({ request, status: res.status, problems: validator.check(method, path, res) });

async function newUser(balance = 5000) {
  const created = await call("/users", {
    method: "POST",
    body: { username: uniqueName("oas"), initialBalance: balance },
  });
  expect(created.status).toBe(201);
  return { id: created.body.id as string, token: await system.token(created.body.id) };
}

describe("every answer of the running system is one its OpenAPI document declares", () => {
  it("the saga's happy path: create a user, order, read and wait for it, list, cancel, read it CANCELED", async () => {
    const key = randomUUID();
    const body = { username: uniqueName("oas"), initialBalance: 5000 };
    const created = await call("/users", { method: "POST", body, headers: { "Idempotency-Key": key } });
    expect(created.status).toBe(201);
    const replay = await call("/users", { method: "POST", body, headers: { "Idempotency-Key": key } });
    expect(replay).toMatchObject({ status: 201, body: created.body });
    const userId = created.body.id as string;
    const token = await system.token(userId);

    expect((await call(`/users/${userId}`, { token })).status).toBe(200);
    const order = await call("/orders", {
      method: "POST",
      token,
      body: { userId, amount: 1000 },
      headers: {
        traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "X-Request-Id": "oas-1",
      },
    });
    expect(order.status).toBe(201);
    expect(order.headers.get("x-request-id")).toBe("oas-1");
    const waited = await call(`/orders/${order.body.id}`, { token, headers: { Prefer: "wait=10" } });
    expect(waited.status).toBe(200);
    expect(waited.headers.get("preference-applied")).toBe("wait=10");
    expect((await call(`/orders?userId=${userId}`, { token })).status).toBe(200);
    expect((await call(`/users/${userId}/orders`, { token })).status).toBe(200);
    // A page at a time: a next page says where it starts (in Link, and in the composed read's `next`).
    const second = await call("/orders", { method: "POST", token, body: { userId, amount: 1 } });
    expect(second.status).toBe(201);
    const page = await call(`/orders?userId=${userId}&limit=1`, { token });
    expect(page.headers.get("link")).toMatch(/^<\/orders\?userId=[^>]+&limit=1&after=[\w.-]+>; rel="next"$/);
    const composed = await call(`/users/${userId}/orders?limit=1`, { token });
    expect(composed.body.next).toEqual(expect.any(String));
    const last = await call(`/users/${userId}/orders?limit=1&after=${composed.body.next}`, { token });
    expect(last.body).toMatchObject({ orders: [{ id: second.body.id }], next: null });
    expect((await call(`/orders/${order.body.id}`, { method: "DELETE", token })).status).toBe(204);
    const canceled = await call(`/orders/${order.body.id}`, { token });
    expect(canceled).toMatchObject({ status: 200, body: { id: order.body.id, status: "CANCELED" } });
    expect((await call(`/orders/${order.body.id}`, { method: "DELETE", token })).status).toBe(204);
    expect((await call("/health", { token: null })).status).toBe(200);
    expect((await call("/ready", { token: null })).status).toBe(200);
  });

  it("each client error: 400, 401, 403, 404, 409, 413, 415, 422", async () => {
    const user = await newUser();
    const other = await newUser();
    const expectStatus = async (status: number, path: string, opts: Call = {}) =>
      expect((await call(path, opts)).status, `${opts.method ?? "GET"} ${path}`).toBe(status);

    await expectStatus(400, "/orders", { method: "POST", token: user.token, body: "{" });
    await expectStatus(400, "/orders", {
      method: "POST",
      token: user.token,
      body: { userId: user.id, amount: 0 },
    });
    await expectStatus(400, "/users", { method: "POST", body: { username: "", initialBalance: -1 } });
    await expectStatus(400, "/orders/not-a-uuid");
    await expectStatus(400, "/orders");
    await expectStatus(400, `/orders?userId=${user.id}&limit=0`, { token: user.token });
    await expectStatus(400, `/users/${user.id}/orders?after=nope`, { token: user.token });
    await expectStatus(400, "/users", {
      method: "POST",
      body: { username: uniqueName("oas"), initialBalance: 1 },
      headers: { "Idempotency-Key": "has a space" },
    });

    const missing = await call(`/users/${user.id}`, { token: null });
    expect(missing.status).toBe(401);
    expect(missing.headers.get("www-authenticate")).toBe('Bearer realm="outbox-saga"');
    await expectStatus(401, "/orders", {
      method: "POST",
      token: "not.a.token",
      body: { userId: user.id, amount: 1 },
    });
    await expectStatus(401, `/orders/${randomUUID()}`, {
      token: await system.token(user.id, { audience: "else" }),
    });

    await expectStatus(403, "/users", {
      method: "POST",
      token: user.token,
      body: { username: "x", initialBalance: 1 },
    });

    await expectStatus(404, `/users/${randomUUID()}`);
    await expectStatus(404, `/users/${other.id}`, { token: user.token });
    await expectStatus(404, `/users/${other.id}/orders`, { token: user.token });
    await expectStatus(404, `/orders/${randomUUID()}`);
    await expectStatus(404, `/orders/${randomUUID()}`, { method: "DELETE" });
    await expectStatus(404, "/orders", {
      method: "POST",
      token: user.token,
      body: { userId: other.id, amount: 1 },
    });
    await expectStatus(404, `/orders?userId=${other.id}`, { token: user.token });
    const theirs = await call("/orders", {
      method: "POST",
      token: other.token,
      body: { userId: other.id, amount: 1 },
    });
    await expectStatus(404, `/orders/${theirs.body.id}`, { token: user.token });
    await expectStatus(404, `/orders/${theirs.body.id}`, { method: "DELETE", token: user.token });

    const taken = await call(`/users/${user.id}`);
    await expectStatus(409, "/users", {
      method: "POST",
      body: { username: taken.body.username, initialBalance: 1 },
    });
    await expectStatus(413, "/orders", {
      method: "POST",
      token: user.token,
      body: { userId: user.id, amount: 1, pad: "x".repeat(70_000) },
    });
    await expectStatus(415, "/orders", {
      method: "POST",
      token: user.token,
      body: JSON.stringify({ userId: user.id, amount: 1 }),
      headers: { "content-type": "text/plain" },
    });
    const key = randomUUID();
    await expectStatus(201, "/orders", {
      method: "POST",
      token: user.token,
      body: { userId: user.id, amount: 1 },
      headers: { "Idempotency-Key": key },
    });
    await expectStatus(422, "/orders", {
      method: "POST",
      token: user.token,
      body: { userId: user.id, amount: 2 },
      headers: { "Idempotency-Key": key },
    });
  });

  it("429 with Retry-After past a caller's rate limit", async () => {
    const user = await newUser();
    let limited: Awaited<ReturnType<typeof call>> | undefined;
    for (let i = 0; i < 20 && !limited; i++) {
      const res = await call("/orders", {
        method: "POST",
        token: user.token,
        body: { userId: user.id, amount: 1 },
      });
      if (res.status === 429) limited = res;
      else expect(res.status).toBe(201);
    }
    expect(limited?.headers.get("retry-after")).toMatch(/^\d+$/);
  });

  it("431 for an oversized head and 408 for a slow one, as JSON", async () => {
    const big = await raw("/health", { headers: { "x-big": "y".repeat(20_000) } });
    expect(big.status).toBe(431);
    record("GET /health (20 kB head)", big, "GET", "/health");
    const slow = await slowHead("/health");
    expect(slow.status).toBe(408);
    record("GET /health (slow head)", slow, "GET", "/health");
  });

  it("405 with Allow and the document's error body for a method a path does not serve", async () => {
    for (const [method, path, allow] of [
      ["TRACE", "/users", "POST"],
      ["PUT", `/orders/${randomUUID()}`, "DELETE, GET, HEAD"],
      ["DELETE", "/users", "POST"],
    ] as const) {
      const res = await raw(path, { method, headers: { authorization: `Bearer ${adminToken}` } });
      expect(res.status, `${method} ${path}`).toBe(405);
      expect(res.headers.get("allow")).toBe(allow);
      expect(res.headers.get("content-type")).toMatch(/^application\/json/);
      checked.push({
        request: `${method} ${path}`,
        status: 405,
        problems: validator.checkSchema("Error", JSON.parse(res.body)),
      });
    }
  });

  it("502 and 503 with the upstream down, and /ready says why", async () => {
    const order = system.processes.get("order");
    await order?.stop();
    let statuses: number[] = [];
    for (let i = 0; i < 5; i++) statuses.push((await call(`/orders/${randomUUID()}`)).status);
    statuses = [...new Set(statuses)];
    expect(
      statuses.every((s) => s === 502 || s === 503),
      String(statuses),
    ).toBe(true);
    let ready = await call("/ready", { token: null });
    for (let i = 0; i < 50 && ready.status === 200; i++) {
      await new Promise((r) => setTimeout(r, 100));
      ready = await call("/ready", { token: null });
    }
    expect(ready).toMatchObject({
      status: 503,
      body: { status: "DOWN", error: expect.stringContaining("order-service") },
    });
    await order?.start();
  });
});
