import type { Server } from "node:http";
import { type AddressInfo, connect } from "node:net";
import { Readable } from "node:stream";
import { gzipSync } from "node:zlib";
import { listen, SHED_HEADER } from "@saga/http";
import { createLogger } from "@saga/observability";
import { Agent, request } from "undici";
import { describe, expect, it, onTestFinished, vi } from "vitest";
import {
  ADMIN_TOKEN,
  admissionLimit,
  eventually,
  type FakeUpstream,
  ORDER_ID,
  order,
  type Received,
  type Reply,
  raiseLane,
  startFakeUpstream,
  startGateway,
  startRawUpstream,
  tokenFor,
  USER_ID,
  user,
} from "./support.ts";

const json = { "content-type": "application/json" };

describe("routing", () => {
  it("sends /users round-robin over the user-service instances and /orders to order-service", async () => {
    const one = await startFakeUpstream(() => ({ body: user }));
    const two = await startFakeUpstream(() => ({ body: user }));
    const orders = await startFakeUpstream(() => ({ body: order }));
    const { app } = await startGateway([one, two], orders);

    for (let i = 0; i < 6; i++) {
      const res = await app.request(`/users/${USER_ID}`);
      expect(res.status).toBe(200);
      expect(await res.json()).toEqual(user);
    }
    expect(one.received).toHaveLength(3);
    expect(two.received).toHaveLength(3);
    expect(one.received[0]).toMatchObject({ method: "GET", url: `/users/${USER_ID}` });

    const res = await app.request(`/orders/${ORDER_ID}?x=1`);
    expect(await res.json()).toEqual(order);
    expect(orders.received.map((r) => r.url)).toEqual([`/orders/${ORDER_ID}?x=1`]);
  });

  it("fails over when an instance dies: no 5xx on GET, no traffic once a request took it out", async () => {
    const one = await startFakeUpstream(() => ({ body: user }));
    const two = await startFakeUpstream(() => ({ body: user }));
    // Checked once at the start and not again during the test: a health check that met the dead instance
    // first would take it out itself (a refused connection is enough), before any request could.
    const gateway = await startGateway([one, two], await startFakeUpstream(), {
      HEALTH_INTERVAL_MS: "60000",
    });
    const { app } = gateway;

    await two.kill();
    // The first request that meets the dead instance fails to connect, ejects it and is retried.
    for (let i = 0; i < 10; i++) expect((await app.request(`/users/${USER_ID}`)).status).toBe(200);
    expect(one.received).toHaveLength(10);
    expect(gateway.users.instances()).toEqual([
      { target: `127.0.0.1:${one.port}`, healthy: true },
      { target: `127.0.0.1:${two.port}`, healthy: false },
    ]);
    const metrics = await (await gateway.metricsApp.request("/metrics")).text();
    expect(metrics).toMatch(/gateway_upstream_healthy_instances\{upstream="user-service",[^}]*\} 1/);
    expect(metrics).toMatch(
      /gateway_upstream_ejections_total\{upstream="user-service",target="127.0.0.1:\d+",cause="passive"[^}]*\} 1/,
    );
  });

  it("takes a dead instance back into rotation once its health checks pass again", async () => {
    const one = await startFakeUpstream(() => ({ body: user }));
    const two = await startFakeUpstream(() => ({ body: user }));
    const gateway = await startGateway([one, two], await startFakeUpstream());
    await two.kill();
    await eventually(() => gateway.users.healthyCount() === 1);

    await two.revive();
    await eventually(() => gateway.users.healthyCount() === 2);
    for (let i = 0; i < 4; i++) expect((await gateway.app.request(`/users/${USER_ID}`)).status).toBe(200);
    expect(two.received).toHaveLength(2);
  });

  it("takes an instance whose health check fails out of rotation before any request fails", async () => {
    const one = await startFakeUpstream(() => ({ body: user }));
    const two = await startFakeUpstream(() => ({ body: user }));
    const gateway = await startGateway([one, two], await startFakeUpstream());
    two.healthy = false;
    await eventually(() => gateway.users.healthyCount() === 1);
    for (let i = 0; i < 4; i++) expect((await gateway.app.request(`/users/${USER_ID}`)).status).toBe(200);
    expect(two.received).toHaveLength(0);
    two.healthy = true;
    await eventually(() => gateway.users.healthyCount() === 2);
  });

  it("checks an idle upstream rarely, and at once again when it carries traffic or an instance is out", async () => {
    const one = await startFakeUpstream(() => ({ body: user }));
    const two = await startFakeUpstream(() => ({ body: user }));
    const gateway = await startGateway([one, two], await startFakeUpstream(), {
      HEALTH_INTERVAL_MS: "50",
      HEALTH_NO_TRAFFIC_INTERVAL_MS: "600000",
    });
    // Idle: after the checks of the start, none for ten intervals, so a failing check goes unseen.
    expect(two.healthChecks).toBe(1);
    two.healthy = false;
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect(two.healthChecks).toBe(1);
    expect(gateway.users.healthyCount()).toBe(2);

    // One request is traffic: the next round comes after the interval and takes the instance out.
    expect((await gateway.app.request(`/users/${USER_ID}`)).status).toBe(200);
    await eventually(() => gateway.users.healthyCount() === 1);

    // Out of rotation, it is checked every interval without traffic, and comes back.
    const checks = two.healthChecks;
    await eventually(() => two.healthChecks >= checks + 3);
    two.healthy = true;
    await eventually(() => gateway.users.healthyCount() === 2);
  });

  it("sends a POST that could not connect to another instance: it never left", async () => {
    const one = await startFakeUpstream(() => ({ status: 201, body: user }));
    const two = await startFakeUpstream(() => ({ status: 201, body: user }));
    const { app } = await startGateway([one, two], await startFakeUpstream());
    await one.kill();
    for (let i = 0; i < 2; i++) {
      const res = await app.request("/users", {
        method: "POST",
        body: '{"username":"ada","initialBalance":100}',
        headers: json,
      });
      expect(res.status).toBe(201);
    }
    expect(two.received.map((r) => r.body)).toEqual(Array(2).fill('{"username":"ada","initialBalance":100}'));
  });

  it("logs a GET tried again on another instance with its request's trace id", async () => {
    const broken = await startFakeUpstream(() => ({ destroy: true }));
    const fine = await startFakeUpstream(() => ({ body: user }));
    const logged: Record<string, unknown>[] = [];
    const logger = createLogger("gateway", "warn", {
      destination: { write: (line: string) => void logged.push(JSON.parse(line)) },
    });
    const { app } = await startGateway([broken, fine], await startFakeUpstream(), {}, { logger });
    const traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    expect((await app.request(`/users/${USER_ID}`, { headers: { traceparent } })).status).toBe(200);
    expect(logged.filter((l) => l.msg === "upstream attempt failed; trying another instance")).toEqual([
      expect.objectContaining({ outcome: "reset", traceId: "4bf92f3577b34da6a3ce929d0e0e4736" }),
    ]);
  });

  it("retries a GET whose connection broke, but not a POST, which the instance may have applied", async () => {
    const broken = await startFakeUpstream(() => ({ destroy: true }));
    const fine = await startFakeUpstream(() => ({ body: user }));
    const { app } = await startGateway([broken, fine], await startFakeUpstream());

    expect((await app.request(`/users/${USER_ID}`)).status).toBe(200);
    expect(broken.received).toHaveLength(1);
    expect(fine.received).toHaveLength(1);

    // Round-robin: `broken` is next.
    const res = await app.request("/users", {
      method: "POST",
      body: '{"username":"ada","initialBalance":1}',
      headers: json,
    });
    expect(res.status).toBe(502);
    expect(await res.json()).toMatchObject({
      error:
        "user-service closed the connection: the request may have been applied (send it again with the same Idempotency-Key)",
    });
    expect(broken.received).toHaveLength(2);
    expect(fine.received).toHaveLength(1);
  });

  it("passes on a service's 502 for a write its database may have applied as it is, sent once", async () => {
    // What a service answers when its database connection broke while the write was out.
    const error =
      "the database connection was lost before it answered: the request may have been applied (send it again with the same Idempotency-Key)";
    const lost = await startFakeUpstream(() => ({ status: 502, body: { error, requestId: "r" } }));
    const { app } = await startGateway([await startFakeUpstream()], lost);
    const res = await app.request("/orders", {
      method: "POST",
      body: JSON.stringify({ userId: USER_ID, amount: 30 }),
      headers: { ...json, "idempotency-key": "k" },
    });
    expect(res.status).toBe(502);
    expect(res.headers.get("retry-after")).toBeNull();
    expect(await res.json()).toEqual({ error, requestId: "r" });
    expect(lost.received).toHaveLength(1);
  });

  it("answers 502 to a malformed answer, saying of a write that it may have been applied", async () => {
    const users = await startRawUpstream(() => "HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n{}");
    const { app } = await startGateway([users], await startFakeUpstream());
    const read = await app.request(`/users/${USER_ID}`);
    expect(read.status).toBe(502);
    expect(await read.json()).toMatchObject({ error: "user-service failed" });
    // The service may have created the user before its answer came out wrong.
    const res = await app.request("/users", {
      method: "POST",
      body: '{"username":"ada","initialBalance":1}',
      headers: { ...json, "idempotency-key": "k" },
    });
    expect(res.status).toBe(502);
    expect(await res.json()).toMatchObject({
      error:
        "user-service failed: the request may have been applied (send it again with the same Idempotency-Key)",
    });
    expect(users.received).toHaveLength(2);
  });

  it("answers 504 when the upstream is slower than the timeout, without retrying", async () => {
    // An instance that never answers: only the gateway's timeout can end the request.
    const silent = await startFakeUpstream(() => new Promise<never>(() => {}));
    const { app } = await startGateway([await startFakeUpstream()], silent, { UPSTREAM_TIMEOUT_MS: "300" });
    const res = await app.request(`/orders/${ORDER_ID}`);
    expect(res.status).toBe(504);
    expect(await res.json()).toMatchObject({ error: "order-service did not answer within 300 ms" });
    expect(silent.received).toHaveLength(1);

    // A write that got no answer may have been applied: the client is told to send it again with its key.
    const post = await app.request("/orders", {
      method: "POST",
      body: JSON.stringify({ userId: USER_ID, amount: 30 }),
      headers: { ...json, "idempotency-key": "k" },
    });
    expect(post.status).toBe(504);
    expect(post.headers.get("retry-after")).toBeNull();
    expect(await post.json()).toMatchObject({
      error:
        "order-service did not answer within 300 ms: the request may have been applied (send it again with the same Idempotency-Key)",
    });
    expect(silent.received).toHaveLength(2);
  });

  it("refuses a request that comes after its drain ended with 503 + Retry-After, saying that it was not sent", async () => {
    const orders = await startFakeUpstream(() => ({ status: 201, body: order }));
    const gateway = await startGateway([await startFakeUpstream()], orders, { RETRY_AFTER_S: "3" });
    // The end of its drain: a client's slow upload can still be read after it.
    gateway.draining(AbortSignal.abort());
    const res = await gateway.app.request("/orders", {
      method: "POST",
      body: JSON.stringify({ userId: USER_ID, amount: 30 }),
      headers: { ...json, "idempotency-key": "k" },
    });
    expect(res.status).toBe(503);
    expect(res.headers.get("retry-after")).toBe("3");
    // Nothing was done: the client may send it again as it is, to another gateway.
    expect(await res.json()).toMatchObject({
      error: "the gateway is shutting down and did not send the request to order-service; retry",
    });
    expect(orders.received).toHaveLength(0);
  });

  it("gives a request with Prefer: wait=N N more seconds before its timeout, and forwards the header", async () => {
    const waiting = await startFakeUpstream(() => ({ body: order, delayMs: 1200 }));
    const { app } = await startGateway([await startFakeUpstream()], waiting, { UPSTREAM_TIMEOUT_MS: "300" });
    const res = await app.request(`/orders/${ORDER_ID}`, { headers: { prefer: "wait=2" } });
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual(order);
    expect(waiting.received[0]?.headers.prefer).toBe("wait=2");
    // Past the extended deadline it is still a 504.
    const late = await app.request(`/orders/${ORDER_ID}`, { headers: { prefer: "wait=0" } });
    expect(late.status).toBe(504);
  });

  it("holds only an order's read for Prefer: wait: any other read keeps the plain timeout and read lane", async () => {
    const slow = await startFakeUpstream(() => ({ body: user, delayMs: 1200 }));
    const { app } = await startGateway([slow], await startFakeUpstream(), {
      UPSTREAM_TIMEOUT_MS: "300",
      ADMISSION_READ_IN_FLIGHT: "1",
      ADMISSION_QUEUE: "0",
      ADMISSION_ADAPTIVE: "false",
      ADMISSION_WARMUP_MS: "0",
    });
    // The user-service answers a read at once whatever the client prefers: past the timeout, a 504.
    const read = app.request(`/users/${USER_ID}`, { headers: { prefer: "wait=5" } });
    await eventually(() => slow.received.length === 1);
    // Meanwhile it fills the users' read lane: another read with a Prefer is shed, not let in as a long poll.
    const shed = await app.request(`/users/${USER_ID}`, { headers: { prefer: "wait=5" } });
    expect(shed.status).toBe(503);
    expect(shed.headers.get("retry-after")).toBe("1");
    const res = await read;
    expect(res.status).toBe(504);
    expect(await res.json()).toMatchObject({ error: "user-service did not answer within 300 ms" });
    expect(slow.received).toHaveLength(1);
  });

  it("sends held requests over connections of their own, so they never queue the others", async () => {
    const upstream = await startFakeUpstream((req) => ({
      body: order,
      delayMs: req.headers.prefer ? 1000 : 0,
    }));
    const { app } = await startGateway([await startFakeUpstream()], upstream, { UPSTREAM_CONNECTIONS: "1" });
    const finished: string[] = [];
    const held = (async () => {
      const res = await app.request(`/orders/${ORDER_ID}`, { headers: { prefer: "wait=5" } });
      finished.push("held GET");
      return res;
    })();
    await eventually(() => upstream.received.length === 1);
    const plain = await app.request(`/orders/${ORDER_ID}`);
    finished.push("GET");
    expect(plain.status).toBe(200);
    expect((await held).status).toBe(200);
    expect(finished).toEqual(["GET", "held GET"]);
  });

  it("refuses a held read with 503 + Retry-After when every held connection is in use, instead of queueing it into a 504", async () => {
    // The upstream holds each read for its wait, as the order-service holds a PENDING order's.
    const upstream = await startFakeUpstream((req) => ({
      body: order,
      delayMs: req.headers.prefer ? 1000 : 0,
    }));
    const gateway = await startGateway([await startFakeUpstream()], upstream, {
      UPSTREAM_HELD_CONNECTIONS: "1",
      UPSTREAM_TIMEOUT_MS: "300",
    });
    const first = gateway.app.request(`/orders/${ORDER_ID}`, { headers: { prefer: "wait=1" } });
    await eventually(() => upstream.received.length === 1);
    // Its one held connection is taken: a second held read would wait for it, then be held past its
    // deadline (the wait it asked for plus the timeout, counted from its arrival).
    const second = await gateway.app.request(`/orders/${ORDER_ID}`, { headers: { prefer: "wait=1" } });
    expect(second.status).toBe(503);
    expect(second.headers.get("retry-after")).toBe("1");
    expect(await second.json()).toMatchObject({
      error: "order-service has no connection free for a held read; retry later",
    });
    expect((await first).status).toBe(200);
    // Never sent: the instance held only the first.
    expect(upstream.received).toHaveLength(1);
    const metrics = await (await gateway.metricsApp.request("/metrics")).text();
    expect(metrics).toContain('gateway_upstream_held_shed_total{upstream="order-service"');
    // A plain read is not bounded by the held connections.
    expect((await gateway.app.request(`/orders/${ORDER_ID}`)).status).toBe(200);
  });

  it("sends a held read to another instance when one has no held connection free", async () => {
    const holding = () =>
      startFakeUpstream((req) => ({ body: order, delayMs: req.headers.prefer ? 1000 : 0 }));
    const one = await holding();
    const two = await holding();
    const { app } = await startGateway([await startFakeUpstream()], [one, two], {
      UPSTREAM_HELD_CONNECTIONS: "1",
      UPSTREAM_TIMEOUT_MS: "300",
    });
    const held = () => app.request(`/orders/${ORDER_ID}`, { headers: { prefer: "wait=1" } });
    const first = held();
    await eventually(() => one.received.length + two.received.length === 1);
    // A plain read moves the round-robin on: the next held read's turn is the busy instance's.
    expect((await app.request(`/orders/${ORDER_ID}`)).status).toBe(200);
    const second = held();
    await eventually(() => one.received.length + two.received.length === 3);
    expect([(await first).status, (await second).status]).toEqual([200, 200]);
    expect(one.received.filter((r) => r.headers.prefer)).toHaveLength(1);
    expect(two.received.filter((r) => r.headers.prefer)).toHaveLength(1);
  });

  it("answers 502 while the only instance refuses, still trying it out of rotation (panic mode), and recovers", async () => {
    const orders = await startFakeUpstream(() => ({ body: order }));
    const gateway = await startGateway([await startFakeUpstream()], orders);
    const { app } = gateway;
    await orders.kill();

    const refused = await app.request(`/orders/${ORDER_ID}`);
    expect(refused.status).toBe(502);
    expect(await refused.json()).toMatchObject({
      error: "order-service is unreachable",
      requestId: expect.any(String),
    });
    expect(gateway.orders.healthyCount()).toBe(0);
    const ejected = await app.request(`/orders/${ORDER_ID}`, { method: "DELETE" });
    expect(ejected.status).toBe(502);
    expect(await ejected.json()).toMatchObject({ error: "order-service is unreachable" });
    expect((await app.request("/ready")).status).toBe(503);
    expect((await app.request("/health")).status).toBe(200);

    await orders.revive();
    await eventually(() => gateway.orders.healthyCount() === 1);
    expect((await app.request(`/orders/${ORDER_ID}`)).status).toBe(200);
    expect((await app.request("/ready")).status).toBe(200);
  });
});

describe("several order-service instances", () => {
  /** An order-service instance that answers every request and records it. */
  const orderService = () =>
    startFakeUpstream((req) => ({ status: req.method === "POST" ? 201 : 200, body: order }));
  const post = (app: { request: (path: string, init: RequestInit) => Response | Promise<Response> }) =>
    app.request("/orders", { method: "POST", body: "{}", headers: json });
  const methods = (fake: FakeUpstream) =>
    fake.received.map((r) => (r.headers.prefer ? `held ${r.method}` : r.method));

  it("sends POSTs, reads, held reads and cancels of /orders round-robin over them", async () => {
    const one = await orderService();
    const two = await orderService();
    const { app } = await startGateway([await startFakeUpstream()], [one, two]);

    for (let i = 0; i < 4; i++) expect((await post(app)).status).toBe(201);
    for (let i = 0; i < 4; i++) expect((await app.request(`/orders/${ORDER_ID}`)).status).toBe(200);
    for (let i = 0; i < 2; i++) {
      const held = await app.request(`/orders/${ORDER_ID}`, { headers: { prefer: "wait=1" } });
      expect(held.status).toBe(200);
    }
    for (let i = 0; i < 2; i++)
      expect((await app.request(`/orders/${ORDER_ID}`, { method: "DELETE" })).status).toBe(200);

    const each = ["POST", "POST", "GET", "GET", "held GET", "DELETE"];
    expect(methods(one)).toEqual(each);
    expect(methods(two)).toEqual(each);
  });

  it("takes an instance that refuses connections out and sends its orders and reads to the other", async () => {
    const one = await orderService();
    const two = await orderService();
    // Checked once at the start: the requests, not a health check, find the dead instance.
    const gateway = await startGateway([await startFakeUpstream()], [one, two], {
      HEALTH_INTERVAL_MS: "60000",
    });
    await one.kill();

    // The first POST meets the dead instance, never left, ejects it and is sent to the other.
    for (let i = 0; i < 4; i++) expect((await post(gateway.app)).status).toBe(201);
    for (let i = 0; i < 4; i++) expect((await gateway.app.request(`/orders/${ORDER_ID}`)).status).toBe(200);
    expect(methods(two)).toEqual([...Array(4).fill("POST"), ...Array(4).fill("GET")]);
    expect(gateway.orders.instances()).toEqual([
      { target: `127.0.0.1:${one.port}`, healthy: false },
      { target: `127.0.0.1:${two.port}`, healthy: true },
    ]);
    expect((await gateway.app.request("/ready")).status).toBe(200);
    const metrics = await (await gateway.metricsApp.request("/metrics")).text();
    expect(metrics).toMatch(/gateway_upstream_healthy_instances\{upstream="order-service",[^}]*\} 1/);
    expect(metrics).toMatch(
      new RegExp(
        `gateway_upstream_ejections_total\\{upstream="order-service",target="127.0.0.1:${one.port}",cause="passive"`,
      ),
    );
  });

  it("sends a read whose connection broke to the other instance, not a POST, which may have been applied", async () => {
    const broken = await startFakeUpstream(() => ({ destroy: true }));
    const fine = await orderService();
    const { app } = await startGateway([await startFakeUpstream()], [broken, fine]);

    expect((await app.request(`/orders/${ORDER_ID}`)).status).toBe(200);
    expect(methods(broken)).toEqual(["GET"]);
    expect(methods(fine)).toEqual(["GET"]);
    // Round-robin: `broken` is next.
    const res = await post(app);
    expect(res.status).toBe(502);
    expect(await res.json()).toMatchObject({
      error:
        "order-service closed the connection: the request may have been applied (send it again with the same Idempotency-Key)",
    });
    expect(methods(broken)).toEqual(["GET", "POST"]);
    expect(methods(fine)).toEqual(["GET"]);
  });

  it("routes to both in panic mode, when neither is in rotation", async () => {
    const one = await orderService();
    const two = await orderService();
    const gateway = await startGateway([await startFakeUpstream()], [one, two]);
    one.healthy = false;
    two.healthy = false;
    await eventually(() => gateway.orders.healthyCount() === 0);
    for (let i = 0; i < 2; i++) expect((await post(gateway.app)).status).toBe(201);
    expect(methods(one)).toEqual(["POST"]);
    expect(methods(two)).toEqual(["POST"]);
    expect((await gateway.app.request("/ready")).status).toBe(503);
  });
});

describe("pass-through", () => {
  it.each([
    ["a 400", 400, { error: "request body is not valid JSON" }],
    ["a 409", 409, { error: "username ada is taken" }],
    ["a 422", 422, { error: "Idempotency-Key was already used for a different request" }],
    ["a 201", 201, user],
  ])("returns %s with its JSON body unchanged", async (_what, status, body) => {
    const users = await startFakeUpstream(() => ({ status, body, headers: { "x-upstream": "yes" } }));
    const { app } = await startGateway([users], await startFakeUpstream());
    const res = await app.request("/users", { method: "POST", body: '{"username":', headers: json });
    expect(res.status).toBe(status);
    expect(res.headers.get("content-type")).toBe("application/json");
    expect(res.headers.get("x-upstream")).toBe("yes");
    expect(await res.text()).toBe(JSON.stringify(body));
    expect(users.received[0]?.body).toBe('{"username":');
  });

  it("returns a 204 without a body and forwards the method, query and Idempotency-Key", async () => {
    const orders = await startFakeUpstream((req) =>
      req.method === "DELETE" ? { status: 204 } : { status: 201, body: order },
    );
    const { app } = await startGateway([await startFakeUpstream()], orders);
    const created = await app.request("/orders", {
      method: "POST",
      body: JSON.stringify({ userId: USER_ID, amount: 30 }),
      headers: { ...json, "idempotency-key": "key-1" },
    });
    expect(created.status).toBe(201);
    const canceled = await app.request(`/orders/${ORDER_ID}`, { method: "DELETE" });
    expect(canceled.status).toBe(204);
    expect(await canceled.text()).toBe("");
    expect(orders.received[0]?.headers["idempotency-key"]).toBe("key-1");
    expect(orders.received[0]?.headers["content-type"]).toBe("application/json");
    expect(orders.received[1]).toMatchObject({ method: "DELETE", url: `/orders/${ORDER_ID}` });
  });

  it("answers a HEAD as a GET but for the body: its status, headers and Content-Length", async () => {
    const users = await startFakeUpstream(() => ({ body: user }));
    const orders = await startFakeUpstream((req) =>
      req.url.startsWith("/orders?")
        ? { body: [order] }
        : req.url === `/orders/${ORDER_ID}`
          ? { body: order, headers: { vary: "prefer" } }
          : { status: 404, body: { error: "order not found" } },
    );
    const gateway = await startGateway([users], orders);
    const server = await new Promise<Server>((resolve) => {
      const s: Server = listen({ app: gateway.app, port: 0 }, () => resolve(s));
    });
    onTestFinished(async () => {
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
    });
    // Over a real server: its Content-Length is @hono/node-server's to write, from the body Hono has.
    const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const headers = { authorization: `Bearer ${ADMIN_TOKEN}` };
    for (const path of [
      `/users/${USER_ID}`,
      `/orders/${ORDER_ID}`,
      `/orders/${USER_ID}`,
      `/users/${USER_ID}/orders`,
      "/openapi.json",
    ]) {
      const get = await request(`${base}${path}`, { headers });
      const length = (await get.body.arrayBuffer()).byteLength;
      const head = await request(`${base}${path}`, { method: "HEAD", headers });
      await head.body.dump();
      expect(head.statusCode, path).toBe(get.statusCode);
      expect(head.headers["content-length"], path).toBe(String(length));
      for (const name of ["content-type", "vary"])
        expect(head.headers[name], path).toEqual(get.headers[name]);
    }
    // The gateway's own answers: its probes, a 405, a user's unknown route, and its metrics port.
    const asUser = { authorization: `Bearer ${await tokenFor(USER_ID)}` };
    for (const [path, auth] of [
      ["/health", {}],
      ["/ready", {}],
      ["/users", headers],
      [`/orders/${ORDER_ID}/x`, asUser],
    ] as const) {
      const get = await request(`${base}${path}`, { headers: auth });
      const length = (await get.body.arrayBuffer()).byteLength;
      const head = await request(`${base}${path}`, { method: "HEAD", headers: auth });
      await head.body.dump();
      expect([head.statusCode, head.headers["content-length"]], path).toEqual([
        get.statusCode,
        String(length),
      ]);
    }
    const metrics = await gateway.metricsApp.request("/metrics", { method: "HEAD" });
    expect(Number(metrics.headers.get("content-length"))).toBeGreaterThan(1000);
  });

  it("rejects a body over the limit with 413 before calling the upstream", async () => {
    const users = await startFakeUpstream();
    const { app } = await startGateway([users], await startFakeUpstream());
    const big = JSON.stringify({ username: "x".repeat(2000), initialBalance: 1 });
    const res = await app.request("/users", { method: "POST", body: big, headers: json });
    expect(res.status).toBe(413);
    expect(await res.json()).toMatchObject({ error: "request body is larger than 1024 bytes" });

    // Without a content-length the limit applies while reading.
    const stream = new ReadableStream({
      start(controller) {
        controller.enqueue(new TextEncoder().encode(big));
        controller.close();
      },
    });
    const chunked = await app.request("/users", {
      method: "POST",
      body: stream,
      headers: json,
      duplex: "half",
    } as RequestInit);
    expect(chunked.status).toBe(413);
    expect(users.received).toHaveLength(0);
  });
});

describe("an answer too large to hold", () => {
  it("answers 502 for an upstream's answer past UPSTREAM_MAX_RESPONSE_BYTES, and reads the next one", async () => {
    let size = 5000;
    const orders = await startFakeUpstream(() => ({ body: `"${"x".repeat(size - 2)}"` }));
    const gateway = await startGateway([await startFakeUpstream()], orders, {
      UPSTREAM_MAX_RESPONSE_BYTES: "4096",
    });
    const { app } = gateway;
    for (const path of [`/orders?userId=${USER_ID}`, `/orders/${ORDER_ID}`]) {
      const res = await app.request(path);
      expect(res.status, path).toBe(502);
      expect(await res.json()).toMatchObject({ error: "order-service answered more than 4096 bytes" });
    }
    // A write too: it was applied, and its answer is lost, so it says to send it again with its key.
    const post = await app.request("/orders", {
      method: "POST",
      headers: json,
      body: JSON.stringify({ userId: USER_ID, amount: 1 }),
    });
    expect(post.status).toBe(502);
    expect(await post.json()).toMatchObject({
      error:
        "order-service answered more than 4096 bytes: the request may have been applied (send it again with the same Idempotency-Key)",
    });
    // Sent once each (not retried), and the instance stays in rotation: the next answer within the bound passes.
    expect(orders.received).toHaveLength(3);
    const text = await (await gateway.metricsApp.request("/metrics")).text();
    expect(text).toMatch(
      /gateway_upstream_requests_total\{[^}]*upstream="order-service"[^}]*outcome="too_large"[^}]*\} 3/,
    );
    size = 4096;
    const fits = await app.request(`/orders/${ORDER_ID}`);
    expect(fits.status).toBe(200);
    expect((await fits.text()).length).toBe(4096);
  });
});

describe("request id and trace context", () => {
  it("forwards the caller's X-Request-Id and continues its trace", async () => {
    const users = await startFakeUpstream(() => ({ body: user }));
    const { app } = await startGateway([users], await startFakeUpstream());
    const incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    const res = await app.request(`/users/${USER_ID}`, {
      headers: { "x-request-id": "req-abc-123", traceparent: incoming, tracestate: "vendor=1" },
    });
    expect(res.headers.get("x-request-id")).toBe("req-abc-123");
    const seen = users.received[0]?.headers;
    expect(seen?.["x-request-id"]).toBe("req-abc-123");
    expect(seen?.traceparent).toMatch(/^00-4bf92f3577b34da6a3ce929d0e0e4736-[0-9a-f]{16}-01$/);
    expect(seen?.traceparent).not.toBe(incoming);
    expect(seen?.tracestate).toBe("vendor=1");
  });

  it("generates a request id and starts a trace when the caller sends none", async () => {
    const orders = await startFakeUpstream(() => ({ status: 201, body: order }));
    const { app } = await startGateway([await startFakeUpstream()], orders);
    const res = await app.request("/orders", {
      method: "POST",
      body: "{}",
      headers: { ...json, traceparent: "garbage" },
    });
    const id = res.headers.get("x-request-id");
    expect(id).toMatch(/^[\w-]{8,}$/);
    expect(orders.received[0]?.headers["x-request-id"]).toBe(id);
    expect(orders.received[0]?.headers.traceparent).toMatch(/^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/);
  });

  it("answers with traceresponse, naming the trace and the span it sent upstream, the caller's trace or a new one", async () => {
    // An upstream's own traceresponse, were it to send one, is not what the client is told.
    const own = `00-${"a".repeat(32)}-${"b".repeat(16)}-01`;
    const users = await startFakeUpstream(() => ({ body: user, headers: { traceresponse: own } }));
    const { app } = await startGateway([users], await startFakeUpstream());
    const incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    const continued = await app.request(`/users/${USER_ID}`, { headers: { traceparent: incoming } });
    expect(continued.headers.get("traceresponse")).toBe(users.received[0]?.headers.traceparent);
    expect(continued.headers.get("traceresponse")).toMatch(/^00-4bf92f3577b34da6a3ce929d0e0e4736-/);
    // A client that sent none learns the trace its request started.
    const started = await app.request(`/users/${USER_ID}`);
    expect(started.headers.get("traceresponse")).toMatch(/^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/);
    expect(started.headers.get("traceresponse")).toBe(users.received[1]?.headers.traceparent);
  });

  it("answers with traceresponse what it answers alone too: a 401, a 404, a 405, a probe", async () => {
    const { app } = await startGateway([await startFakeUpstream()], await startFakeUpstream());
    const incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    for (const [path, method, status] of [
      [`/users/${USER_ID}`, "GET", 401],
      ["/nowhere", "GET", 404],
      ["/users", "GET", 405],
      ["/health", "GET", 200],
    ] as const) {
      const res = await app.request(path, {
        method,
        headers: { traceparent: incoming, ...(status === 401 ? { authorization: "" } : {}) },
      });
      expect(res.status).toBe(status);
      expect(res.headers.get("traceresponse")).toMatch(
        /^00-4bf92f3577b34da6a3ce929d0e0e4736-[0-9a-f]{16}-01$/,
      );
    }
  });

  it("never forwards hop-by-hop headers", async () => {
    const users = await startFakeUpstream(() => ({ body: user }));
    const { app } = await startGateway([users], await startFakeUpstream());
    await app.request(`/users/${USER_ID}`, {
      headers: { connection: "x-secret", "x-secret": "1", "proxy-authorization": "p" },
    });
    const seen = users.received[0]?.headers ?? {};
    expect(seen["x-secret"]).toBeUndefined();
    expect(seen["proxy-authorization"]).toBeUndefined();
  });
});

describe("hop-by-hop headers of an answer", () => {
  it.each([
    ["one Connection header", ["Connection: X-Secret, X-Other"]],
    // undici gives a header sent twice as an array.
    ["two Connection headers", ["Connection: keep-alive, X-Secret", "Connection: X-Other"]],
  ])(
    "never reach the client, nor do the headers listed in %s; every Set-Cookie does",
    async (_what, connection) => {
      const body = JSON.stringify(user);
      const users = await startRawUpstream(() =>
        [
          "HTTP/1.1 200 OK",
          "Content-Type: application/json",
          ...connection,
          "X-Secret: 1",
          "X-Other: 1",
          "Keep-Alive: timeout=5",
          'Proxy-Authenticate: Basic realm="upstream"',
          "Upgrade: h2c",
          "Trailer: X-Checksum",
          "Set-Cookie: a=1; Path=/",
          "Set-Cookie: b=2; Path=/",
          "X-Upstream: yes",
          "Transfer-Encoding: chunked",
          "",
          Buffer.byteLength(body).toString(16),
          body,
          "0",
          "X-Checksum: 1",
          "",
          "",
        ].join("\r\n"),
      );
      const { app } = await startGateway([users], await startFakeUpstream());
      const res = await app.request(`/users/${USER_ID}`);
      expect(res.status).toBe(200);
      expect(await res.json()).toEqual(user);
      const passed = [...res.headers.keys()];
      for (const name of [
        "connection",
        "x-secret",
        "x-other",
        "keep-alive",
        "proxy-authenticate",
        "upgrade",
        "trailer",
        "transfer-encoding",
        "x-checksum",
      ])
        expect(passed).not.toContain(name);
      expect(res.headers.getSetCookie()).toEqual(["a=1; Path=/", "b=2; Path=/"]);
      expect(res.headers.get("x-upstream")).toBe("yes");
      expect(users.received).toHaveLength(1);
    },
  );
});

describe("what a client says of where it comes from", () => {
  it("is never forwarded: a service could not tell a forged X-Forwarded-For or Forwarded from a proxy's", async () => {
    const users = await startFakeUpstream(() => ({ body: user }));
    const { app } = await startGateway([users], await startFakeUpstream());
    await app.request(`/users/${USER_ID}`, {
      headers: {
        "x-forwarded-for": "10.0.0.1",
        forwarded: "for=10.0.0.1;proto=https",
        "x-forwarded-host": "admin.internal",
        "x-forwarded-proto": "https",
        "x-real-ip": "10.0.0.1",
        "x-upstream": "yes",
      },
    });
    const seen = users.received[0]?.headers ?? {};
    for (const name of ["x-forwarded-for", "forwarded", "x-forwarded-host", "x-forwarded-proto", "x-real-ip"])
      expect(seen[name], name).toBeUndefined();
    expect(seen["x-upstream"]).toBe("yes");
  });
});

describe("metrics", () => {
  it("labels requests by route template and counts upstream calls by outcome", async () => {
    const users = await startFakeUpstream((req) =>
      req.url.endsWith(USER_ID) ? { body: user } : { status: 404, body: { error: "user not found" } },
    );
    const { app, metricsApp } = await startGateway([users], await startFakeUpstream());
    await app.request(`/users/${USER_ID}`);
    await app.request("/users/3f1c7a52-9d1e-4c8e-a0a4-000000000000");
    await app.request("/users/a/b/c");
    await app.request("/nowhere");
    const text = await (await metricsApp.request("/metrics")).text();
    // Prometheus' scrape is on the internal app alone.
    expect((await app.request("/metrics")).status).toBe(404);
    expect(text).toMatch(
      /http_requests_total\{method="GET",route="\/users\/:id",status="200",service="gateway",instance="gateway-test"\} 1/,
    );
    expect(text).toMatch(/http_requests_total\{method="GET",route="\/users\/:id",status="404",[^}]*\} 1/);
    expect(text).toMatch(/http_requests_total\{method="GET",route="\/users\/\*",status="404",[^}]*\} 1/);
    expect(text).toMatch(/http_requests_total\{method="GET",route="unmatched",status="404",[^}]*\} 1/);
    expect(text).not.toContain("3f1c7a52");
    const target = `127.0.0.1:${users.port}`;
    expect(text).toContain(
      `gateway_upstream_requests_total{upstream="user-service",target="${target}",outcome="2xx",service="gateway",instance="gateway-test"} 1`,
    );
    expect(text).toContain(
      `gateway_upstream_requests_total{upstream="user-service",target="${target}",outcome="4xx",service="gateway",instance="gateway-test"} 2`,
    );
    expect(text).toMatch(
      /gateway_upstream_request_duration_seconds_count\{[^}]*upstream="user-service",outcome="2xx"\} 1/,
    );
    expect(text).toMatch(/gateway_upstream_healthy_instances\{upstream="order-service",[^}]*\} 1/);
    expect(text).toContain("saga_instance_up");
  });

  it("times reads held for Prefer: wait apart from the request latency, its own and its upstream's", async () => {
    // Held as the order-service holds one until the saga decides (here a second), and said so; asked to
    // wait 1 s, it answers past that and the timeout.
    const orders = await startFakeUpstream((req) =>
      req.headers.prefer
        ? {
            body: order,
            delayMs: req.headers.prefer === "wait=1" ? 2000 : 1000,
            headers: { "preference-applied": String(req.headers.prefer) },
          }
        : { body: order },
    );
    const gateway = await startGateway([await startFakeUpstream()], orders, { UPSTREAM_TIMEOUT_MS: "300" });
    const held = await gateway.app.request(`/orders/${ORDER_ID}`, { headers: { prefer: "wait=5" } });
    expect(held.status).toBe(200);
    expect(held.headers.get("preference-applied")).toBe("wait=5");
    expect((await gateway.app.request(`/orders/${ORDER_ID}`)).status).toBe(200);
    // Not answered within its wait and the timeout: held all the same, though no Preference-Applied says so.
    const late = await gateway.app.request(`/orders/${ORDER_ID}`, { headers: { prefer: "wait=1" } });
    expect(late.status).toBe(504);

    const text = await (await gateway.metricsApp.request("/metrics")).text();
    const count = (histogram: string, labels: string) =>
      Number(new RegExp(`${histogram}_count\\{[^}]*${labels}[^}]*\\} (\\d+)`).exec(text)?.[1] ?? 0);
    const route = (status: number) => `method="GET",route="/orders/:id",status="${status}"`;
    // The request latency has the plain read alone; the held ones are on a histogram of their own.
    expect(count("http_request_duration_seconds", route(200))).toBe(1);
    expect(count("http_request_duration_seconds", route(504))).toBe(0);
    expect(count("http_held_request_duration_seconds", route(200))).toBe(1);
    expect(count("http_held_request_duration_seconds", route(504))).toBe(1);
    const upstream = (outcome: string) => `upstream="order-service",outcome="${outcome}"`;
    expect(count("gateway_upstream_request_duration_seconds", upstream("2xx"))).toBe(1);
    expect(count("gateway_upstream_request_duration_seconds", upstream("timeout"))).toBe(0);
    expect(count("gateway_upstream_held_request_duration_seconds", upstream("2xx"))).toBe(1);
    expect(count("gateway_upstream_held_request_duration_seconds", upstream("timeout"))).toBe(1);
    // Every request is counted as before, held or not.
    expect(text).toMatch(/http_requests_total\{method="GET",route="\/orders\/:id",status="200",[^}]*\} 2/);
  });
});

describe("overload: busy is not dead", () => {
  it("keeps a shedding instance (503 + Retry-After) in rotation, and ejects one that fails in a row", async () => {
    const shedding = await startFakeUpstream(() => ({
      status: 503,
      body: { error: "overloaded" },
      headers: { "retry-after": "1" },
    }));
    const failing = await startFakeUpstream(() => ({ status: 500, body: { error: "internal error" } }));
    const gateway = await startGateway([shedding, failing], await startFakeUpstream(), {
      CONSECUTIVE_5XX: "3",
    });
    const statuses = [];
    for (let i = 0; i < 6; i++) {
      const res = await gateway.app.request(`/users/${USER_ID}`);
      statuses.push(res.status);
      if (res.status === 503) expect(res.headers.get("retry-after")).toBe("1");
    }
    expect(statuses).toEqual([503, 500, 503, 500, 503, 500]);
    expect(gateway.users.instances()).toEqual([
      { target: `127.0.0.1:${shedding.port}`, healthy: true },
      { target: `127.0.0.1:${failing.port}`, healthy: false },
    ]);
    const metrics = await (await gateway.metricsApp.request("/metrics")).text();
    expect(metrics).toMatch(
      new RegExp(
        `gateway_upstream_ejections_total\\{upstream="user-service",target="127.0.0.1:${failing.port}",cause="passive"`,
      ),
    );
    expect(metrics).not.toContain(`target="127.0.0.1:${shedding.port}",cause=`);
  });

  it("keeps an instance whose health checks are slow in rotation, until they stay unanswered", async () => {
    const busy = await startFakeUpstream(() => ({ body: user }));
    const gateway = await startGateway([busy], await startFakeUpstream(), {
      HEALTH_TIMEOUT_MS: "150",
      HEALTH_STALLED_AFTER_MS: "4000",
    });
    await eventually(() => gateway.users.healthyCount() === 1);
    busy.healthDelayMs = 600;
    await eventually(async () =>
      /gateway_upstream_health_check_timeouts_total\{[^}]*\} [2-9]/.test(
        await (await gateway.metricsApp.request("/metrics")).text(),
      ),
    );
    expect(gateway.users.healthyCount()).toBe(1);
    // Silent for longer than the bound: it accepts connections but does not answer.
    await eventually(() => gateway.users.healthyCount() === 0, 15_000);
    busy.healthDelayMs = 0;
    await eventually(() => gateway.users.healthyCount() === 1);
  });

  it("keeps a slow instance in rotation when the wall clock steps forward", async () => {
    const busy = await startFakeUpstream(() => ({ body: user }));
    const gateway = await startGateway([busy], await startFakeUpstream(), {
      HEALTH_TIMEOUT_MS: "150",
      HEALTH_STALLED_AFTER_MS: "60000",
    });
    await eventually(() => gateway.users.healthyCount() === 1);
    busy.healthDelayMs = 600;
    const timeouts = async () =>
      Number(
        /gateway_upstream_health_check_timeouts_total\{[^}]*\} (\d+)/.exec(
          await (await gateway.metricsApp.request("/metrics")).text(),
        )?.[1] ?? 0,
      );
    await eventually(async () => (await timeouts()) >= 1);
    // An NTP step of an hour while its checks time out: silence is measured on the monotonic clock.
    const wall = Date.now;
    const stepped = vi.spyOn(Date, "now").mockImplementation(() => wall() + 3_600_000);
    onTestFinished(() => stepped.mockRestore());
    const seen = await timeouts();
    await eventually(async () => (await timeouts()) >= seen + 3);
    expect(gateway.users.healthyCount()).toBe(1);
  });

  it("routes to every instance in panic mode, when none is in rotation", async () => {
    const one = await startFakeUpstream(() => ({ body: user }));
    const two = await startFakeUpstream(() => ({ body: user }));
    const gateway = await startGateway([one, two], await startFakeUpstream());
    one.healthy = false;
    two.healthy = false;
    await eventually(() => gateway.users.healthyCount() === 0);
    for (let i = 0; i < 4; i++) expect((await gateway.app.request(`/users/${USER_ID}`)).status).toBe(200);
    expect(one.received).toHaveLength(2);
    expect(two.received).toHaveLength(2);
    const metrics = await (await gateway.metricsApp.request("/metrics")).text();
    expect(metrics).toMatch(/gateway_upstream_panic_requests_total\{upstream="user-service",[^}]*\} 4/);
    expect((await gateway.app.request("/ready")).status).toBe(503);
  });

  it("sheds past its bound per upstream lane with 503 + Retry-After, and serves the other lanes", async () => {
    const { upstream: orders, release } = await holdingPosts((req) => ({
      status: req.method === "POST" ? 201 : 200,
      body: order,
    }));
    const users = await startFakeUpstream(() => ({ status: 201, body: user }));
    const { app } = await startGateway([users], orders, {
      ADMISSION_WRITE_IN_FLIGHT: "1",
      ADMISSION_QUEUE: "0",
      // Warm: a gateway that has just started queues a burst instead ("a fresh start", below).
      ADMISSION_WARMUP_MS: "0",
    });
    const post = (path: string) => app.request(path, { method: "POST", body: "{}", headers: json });
    const first = post("/orders");
    await eventually(() => orders.received.length === 1);
    const shed = await post("/orders");
    expect(shed.status).toBe(503);
    expect(shed.headers.get("retry-after")).toBe("1");
    expect(await shed.json()).toMatchObject({ error: expect.stringMatching(/^overloaded/) });
    expect((await post("/users")).status).toBe(201);
    expect((await app.request(`/orders/${ORDER_ID}`)).status).toBe(200);
    release();
    expect((await first).status).toBe(201);
    expect(orders.received.filter((r) => r.method === "POST")).toHaveLength(1);
  });
});

describe("overload: a burst, a fresh start", () => {
  /** Ten new orders at once into a write lane of one place and a queue of two, the upstream holding the first. */
  async function burstOfOrders(env: Record<string, string>) {
    const { upstream: orders, release } = await holdingPosts(() => ({ status: 201, body: order }));
    const users = await startFakeUpstream(() => ({ status: 200, body: user }));
    const { app } = await startGateway([users], orders, {
      ADMISSION_WRITE_IN_FLIGHT: "1",
      ADMISSION_QUEUE: "2",
      // Waits far longer than the test takes: only the queue's count decides.
      ADMISSION_QUEUE_TIMEOUT_MS: "10000",
      ADMISSION_QUEUE_INTERVAL_MS: "10000",
      ADMISSION_WARMUP_QUEUE_MS: "10000",
      ...env,
    });
    const posts = Array.from({ length: 10 }, () =>
      app.request("/orders", { method: "POST", body: "{}", headers: json }),
    );
    await eventually(() => orders.received.length === 1);
    release();
    return (await Promise.all(posts)).map((r) => r.status);
  }

  it("queues a burst past its lanes' queues while it warms up, judged by the wait, not refused by the count", async () => {
    // A gateway that has just started, in front of services that have too: its lanes start at their floor
    // and its upstream is slow for a while; the burst waits (up to ADMISSION_WARMUP_QUEUE_MS) instead.
    expect(await burstOfOrders({})).toEqual(Array(10).fill(201));
  });

  it("queues a burst past its lanes' queues once warm too: a burst is not overload", async () => {
    expect(await burstOfOrders({ ADMISSION_WARMUP_MS: "0" })).toEqual(Array(10).fill(201));
  });

  it("refuses at once, 503 + Retry-After, what a standing queue cannot hold once warm", async () => {
    const { upstream: orders, release } = await holdingPosts(() => ({ status: 201, body: order }));
    const gateway = await startGateway([await startFakeUpstream()], orders, {
      ADMISSION_WRITE_IN_FLIGHT: "1",
      ADMISSION_QUEUE: "2",
      ADMISSION_QUEUE_TIMEOUT_MS: "10000",
      ADMISSION_QUEUE_INTERVAL_MS: "100",
      ADMISSION_WARMUP_MS: "0",
    });
    const post = () => gateway.app.request("/orders", { method: "POST", body: "{}", headers: json });
    const queued = async () =>
      /http_admission_queued\{lane="orders:write"[^}]*\} 1\b/.test(
        await gateway.metrics.registry.getSingleMetricAsString("http_admission_queued"),
      );
    const first = [post(), post()];
    await eventually(async () => orders.received.length === 1 && (await queued()));
    // The queue has not been empty for longer than its interval: overload, no longer a burst.
    await new Promise((r) => setTimeout(r, 200));
    const more = Array.from({ length: 9 }, () => post());
    const answered: Response[] = [];
    for (const p of more) Promise.resolve(p).then((r) => answered.push(r));
    // One more fits the queue of two; eight are refused while the first order is still held upstream.
    await eventually(() => answered.length === 8);
    for (const res of answered) {
      expect(res.status).toBe(503);
      expect(res.headers.get("retry-after")).toBe("1");
    }
    release();
    const statuses = (await Promise.all([...first, ...more])).map((r) => r.status);
    expect(statuses.filter((s) => s === 201)).toHaveLength(3);
    expect(orders.received).toHaveLength(3);
  });
});

/** An upstream that holds every POST until `release()`, then answers what `reply` says. */
async function holdingPosts(reply: (req: Received) => Reply) {
  let release: () => void = () => {};
  const held = new Promise<void>((resolve) => {
    release = resolve;
  });
  const upstream = await startFakeUpstream(async (req) => {
    if (req.method === "POST") await held;
    return reply(req);
  });
  return { upstream, release };
}

/** An order-service instance reporting `headroom.n` on every answer. */
async function reporting(headroom: { n: number }) {
  return startFakeUpstream((req) => ({
    status: req.method === "POST" ? 201 : 200,
    body: order,
    headers: { "x-headroom": String(headroom.n) },
  }));
}
const posts = (fake: FakeUpstream) => fake.received.filter((r) => r.method === "POST").length;

describe("overload: the order-service's headroom for new orders", () => {
  it("refuses POST /orders at the edge with 503 + Retry-After while the order-service reports no headroom, and passes the rest", async () => {
    let headroom = 0;
    let release: () => void = () => {};
    const orders = await startFakeUpstream(async (req) => {
      if (req.method === "POST")
        await new Promise<void>((resolve) => {
          release = resolve;
        });
      return {
        status: req.method === "POST" ? 201 : 200,
        body: order,
        headers: { "x-headroom": String(headroom) },
      };
    });
    const gateway = await startGateway([await startFakeUpstream()], orders, {
      UPSTREAM_HEADROOM_TTL_MS: "60000",
    });
    const post = () => gateway.app.request("/orders", { method: "POST", body: "{}", headers: json });

    // Any answer brings the report; the client never sees it.
    const read = await gateway.app.request(`/orders/${ORDER_ID}`);
    expect(read.status).toBe(200);
    expect(read.headers.has("x-headroom")).toBe(false);
    const refused = await post();
    expect(refused.status).toBe(503);
    expect(refused.headers.get("retry-after")).toBe("1");
    expect(await refused.json()).toMatchObject({ error: expect.stringMatching(/at its bound for new work/) });
    expect(orders.received.filter((r) => r.method === "POST")).toHaveLength(0);
    // Refused before anything else is looked at: a request without a token gets the same answer.
    const anonymous = await gateway.app.request("/orders", {
      method: "POST",
      body: "{}",
      headers: { ...json, authorization: "" },
    });
    expect(anonymous.status).toBe(503);
    expect(anonymous.headers.get("retry-after")).toBe("1");
    // Reads and cancels are not new work, and the order-service stays in rotation.
    expect((await gateway.app.request(`/orders/${ORDER_ID}`, { method: "DELETE" })).status).toBe(200);
    expect(gateway.orders.instances()).toEqual([{ target: `127.0.0.1:${orders.port}`, healthy: true }]);

    // Headroom for one order: the first is sent and spends it, the next is refused until a new report.
    headroom = 1;
    expect((await gateway.app.request(`/orders/${ORDER_ID}`)).status).toBe(200);
    const first = post();
    await eventually(() => orders.received.filter((r) => r.method === "POST").length === 1);
    expect((await post()).status).toBe(503);
    release();
    expect((await first).status).toBe(201);
    const sent = post();
    await eventually(() => orders.received.filter((r) => r.method === "POST").length === 2);
    release();
    expect((await sent).status).toBe(201);
    const metrics = await (await gateway.metricsApp.request("/metrics")).text();
    expect(metrics).toMatch(/gateway_upstream_headroom_shed_total\{upstream="order-service",[^}]*\} 3/);
  });

  it("believes a report of no headroom only for a while: then one order goes through and brings a new one", async () => {
    let headroom = 0;
    let answered: Promise<void> = Promise.resolve();
    const orders = await startFakeUpstream(async (req) => {
      if (req.method === "POST") await answered;
      return {
        status: req.method === "POST" ? 201 : 200,
        body: order,
        headers: { "x-headroom": String(headroom) },
      };
    });
    const gateway = await startGateway([await startFakeUpstream()], orders, {
      UPSTREAM_HEADROOM_TTL_MS: "200",
    });
    const post = () => gateway.app.request("/orders", { method: "POST", body: "{}", headers: json });
    const posted = () => orders.received.filter((r) => r.method === "POST").length;
    expect((await gateway.app.request(`/orders/${ORDER_ID}`)).status).toBe(200);
    const reportedAt = performance.now();
    expect((await post()).status).toBe(503);
    // Demand goes on, refused at the edge, while the report is believed…
    while (performance.now() - reportedAt < 150) {
      expect((await post()).status).toBe(503);
      await new Promise((r) => setTimeout(r, 20));
    }
    // …and the report outlives its belief.
    await new Promise((r) => setTimeout(r, 250 - (performance.now() - reportedAt)));

    // A burst comes: one order goes to ask, the rest are still refused while its answer is on its way.
    let release: () => void = () => {};
    answered = new Promise((resolve) => {
      release = resolve;
    });
    const refused: number[] = [];
    const burst = Array.from({ length: 20 }, async () => {
      const res = await post();
      if (res.status !== 201) refused.push(res.status);
      return res;
    });
    // The one let through may still be on its way to the upstream when the others are refused.
    await eventually(() => refused.length === 19 && posted() > 0);
    expect(refused).toEqual(Array(19).fill(503));
    expect(posted()).toBe(1);

    // Its answer reports headroom: orders flow again.
    headroom = 3;
    release();
    expect((await Promise.all(burst)).filter((r) => r.status === 201)).toHaveLength(1);
    expect((await post()).status).toBe(201);
    expect((await post()).status).toBe(201);
    expect(posted()).toBe(3);
  });

  it("forgets an old report once nothing asked for new work for as long: a burst after a quiet spell goes to the order-service", async () => {
    const headroom = { n: 0 };
    const orders = await reporting(headroom);
    const gateway = await startGateway([await startFakeUpstream()], orders, {
      UPSTREAM_HEADROOM_TTL_MS: "200",
    });
    const post = () => gateway.app.request("/orders", { method: "POST", body: "{}", headers: json });
    // The order-service was at its bound when it last answered…
    expect((await gateway.app.request(`/orders/${ORDER_ID}`)).status).toBe(200);
    expect((await post()).status).toBe(503);
    // …and its sagas drained while nobody asked for new work.
    headroom.n = 100;
    await new Promise((r) => setTimeout(r, 250));
    const burst = await Promise.all(Array.from({ length: 20 }, post));
    expect(burst.map((r) => r.status)).toEqual(Array(20).fill(201));
    expect(posts(orders)).toBe(20);

    // Likewise an old report of some headroom is not spent down as if it were current.
    headroom.n = 2;
    expect((await post()).status).toBe(201);
    headroom.n = 100;
    await new Promise((r) => setTimeout(r, 250));
    const next = await Promise.all(Array.from({ length: 10 }, post));
    expect(next.map((r) => r.status)).toEqual(Array(10).fill(201));
  });
});

describe("overload: the headroom of several order-service instances", () => {
  it("sends new orders to whichever instance reports headroom, and refuses them at the edge once neither does", async () => {
    const roomOnOne = { n: 0 };
    const roomOnTwo = { n: 10 };
    const one = await reporting(roomOnOne);
    const two = await reporting(roomOnTwo);
    const gateway = await startGateway([await startFakeUpstream()], [one, two], {
      UPSTREAM_HEADROOM_TTL_MS: "60000",
    });
    const post = () => gateway.app.request("/orders", { method: "POST", body: "{}", headers: json });
    // A read on each brings its report.
    const readBoth = async () => {
      for (let i = 0; i < 2; i++) expect((await gateway.app.request(`/orders/${ORDER_ID}`)).status).toBe(200);
    };
    await readBoth();

    // One reports none: every order goes to the other, none is refused.
    for (let i = 0; i < 4; i++) expect((await post()).status).toBe(201);
    expect([posts(one), posts(two)]).toEqual([0, 4]);

    // Neither reports any: refused here, sent to neither.
    roomOnTwo.n = 0;
    await readBoth();
    const refused = await post();
    expect(refused.status).toBe(503);
    expect(refused.headers.get("retry-after")).toBe("1");
    expect(await refused.json()).toMatchObject({ error: expect.stringMatching(/at its bound for new work/) });
    expect([posts(one), posts(two)]).toEqual([0, 4]);

    // The first reports headroom again: orders go to it.
    roomOnOne.n = 10;
    await readBoth();
    for (let i = 0; i < 3; i++) expect((await post()).status).toBe(201);
    expect([posts(one), posts(two)]).toEqual([3, 4]);
    const metrics = await (await gateway.metricsApp.request("/metrics")).text();
    expect(metrics).toMatch(/gateway_upstream_headroom_shed_total\{upstream="order-service",[^}]*\} 1/);
  });

  it("refuses a new order as at its bound, not unreachable, when the one instance with headroom cannot be reached and the other has none", async () => {
    const one = await reporting({ n: 0 });
    const two = await reporting({ n: 10 });
    const gateway = await startGateway([await startFakeUpstream()], [one, two], {
      UPSTREAM_HEADROOM_TTL_MS: "60000",
      HEALTH_INTERVAL_MS: "60000",
    });
    for (let i = 0; i < 2; i++) expect((await gateway.app.request(`/orders/${ORDER_ID}`)).status).toBe(200);
    await two.kill();

    const res = await gateway.app.request("/orders", { method: "POST", body: "{}", headers: json });
    expect(res.status).toBe(503);
    expect(res.headers.get("retry-after")).toBe("1");
    expect(await res.json()).toMatchObject({ error: expect.stringMatching(/at its bound for new work/) });
    expect(posts(one)).toBe(0);
    expect(gateway.orders.instances().map((i) => i.healthy)).toEqual([true, false]);
  });

  it("answers 502 unreachable, not at its bound, when the only instance, which reported headroom, cannot be reached", async () => {
    const only = await reporting({ n: 1 });
    const gateway = await startGateway([await startFakeUpstream()], only, {
      UPSTREAM_HEADROOM_TTL_MS: "60000",
      HEALTH_INTERVAL_MS: "60000",
    });
    expect((await gateway.app.request(`/orders/${ORDER_ID}`)).status).toBe(200);
    await only.kill();

    const res = await gateway.app.request("/orders", { method: "POST", body: "{}", headers: json });
    expect(res.status).toBe(502);
    expect(await res.json()).toMatchObject({ error: "order-service is unreachable" });
  });
});

describe("overload: the adaptive limit of a lane", () => {
  it("sheds at the gateway with 503 + Retry-After when the upstream slows down, and admits again when it is fast", async () => {
    let delayMs = 0;
    const orders = await startFakeUpstream(() => ({ status: 201, body: order, delayMs }));
    const users = await startFakeUpstream(() => ({ status: 200, body: user }));
    const gateway = await startGateway([users], orders, {
      ADMISSION_WRITE_IN_FLIGHT: "16",
      ADMISSION_MIN_IN_FLIGHT: "2",
      ADMISSION_QUEUE: "0",
      ADMISSION_WARMUP_MS: "0",
      // Fast answers in the test take a few milliseconds, slow ones ten times what fast took: only those
      // are queueing.
      ADMISSION_LATENCY_TOLERANCE: "5",
      ADMISSION_LATENCY_BASELINE_SAMPLES: "1000",
      UPSTREAM_TIMEOUT_MS: "10000",
    });
    const burst = (n: number) =>
      Promise.all(
        Array.from({ length: n }, () =>
          gateway.app.request("/orders", { method: "POST", body: "{}", headers: json }),
        ),
      );
    const limit = () => admissionLimit(gateway, "orders:write");
    const posts = () => orders.received.filter((r) => r.method === "POST").length;

    // A baseline of fast answers (some may be shed while it forms: the first answers are the slowest).
    let fastMs = 0;
    for (let i = 0; i < 40; i++) {
      const started = performance.now();
      await burst(16);
      if (i >= 30) fastMs = Math.max(fastMs, performance.now() - started);
    }

    // Slow means well past the tolerance of what fast was on this machine, however loaded it is.
    delayMs = Math.min(3000, Math.max(300, Math.ceil(fastMs * 10)));
    for (let i = 0; i < 3; i++) await burst(16);
    expect(await limit()).toBeLessThan(8);
    const before = posts();
    const slow = await burst(16);
    const shed = slow.filter((r) => r.status === 503);
    expect(shed.length).toBeGreaterThanOrEqual(8);
    for (const r of shed) {
      expect(r.headers.get("retry-after")).toBe("1");
      expect(await r.json()).toMatchObject({ error: expect.stringMatching(/^overloaded/) });
    }
    // Refused here: the upstream never saw them.
    expect(posts() - before).toBe(16 - shed.length);
    // The other lanes are not touched: reads of the same upstream go through.
    expect((await gateway.app.request(`/orders/${ORDER_ID}`)).status).toBe(201);

    delayMs = 0;
    for (let round = 0; round < 40 && (await limit()) < 16; round++) await burst(Math.ceil(await limit()));
    expect(await limit()).toBe(16);
    expect((await burst(16)).map((r) => r.status)).toEqual(Array(16).fill(201));
  });
});

describe("overload: a service refusing for want of room", () => {
  it("lowers the lane's bound on each refusal by the service's admission, and does not pass the mark on", async () => {
    let refuse = false;
    const orders = await startFakeUpstream(() =>
      refuse
        ? {
            status: 503,
            body: { error: "overloaded: too many requests in flight; retry later" },
            headers: { "retry-after": "1", [SHED_HEADER]: "admission" },
          }
        : { status: 201, body: order },
    );
    const gateway = await startGateway([await startFakeUpstream()], orders, {
      ADMISSION_WRITE_IN_FLIGHT: "16",
      ADMISSION_MIN_IN_FLIGHT: "2",
      ADMISSION_QUEUE: "0",
      ADMISSION_WARMUP_MS: "0",
    });
    const post = () => gateway.app.request("/orders", { method: "POST", body: "{}", headers: json });
    const limit = () => admissionLimit(gateway, "orders:write");
    // Answers on time with the lane full raise the bound from its floor.
    expect((await post()).status).toBe(201);
    await raiseLane(gateway, "orders:write", post);
    expect(await limit()).toBe(16);
    refuse = true;
    for (let i = 0; i < 8; i++) {
      const res = await post();
      expect(res.status).toBe(503);
      expect(res.headers.get("retry-after")).toBe("1");
      expect(res.headers.get(SHED_HEADER)).toBeNull();
    }
    // 16 × 0.9⁸ ≈ 6.9: fast as the refusals were, the service said it was sent too many at once.
    expect(await limit()).toBeLessThan(8);
  });
});

describe("a pooled client (one connection) on the gateway's port", () => {
  it("sends a good request after a body over the limit on the same connection", async () => {
    const orders = await startFakeUpstream(() => ({ status: 201, body: order }));
    const gateway = await startGateway([await startFakeUpstream()], orders);
    const server = await new Promise<Server>((resolve) => {
      const s: Server = listen({ app: gateway.app, port: 0 }, () => resolve(s));
    });
    let connections = 0;
    server.on("connection", () => connections++);
    const agent = new Agent({ connections: 1 });
    onTestFinished(async () => {
      await agent.close();
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
    });
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/orders`;
    const send = async (body: string | Readable) => {
      const headers = { ...json, authorization: `Bearer ${ADMIN_TOKEN}` };
      const res = await request(url, { method: "POST", body, headers, dispatcher: agent });
      return { status: res.statusCode, body: await res.body.json() };
    };
    expect(await send("x".repeat(4000))).toMatchObject({ status: 413 });
    expect(await send(Readable.from([Buffer.alloc(800, 32), Buffer.alloc(800, 32)]))).toMatchObject({
      status: 413,
    });
    expect(await send("{}")).toEqual({ status: 201, body: order });
    expect(connections).toBe(1);
  });
});

describe("a body in a transfer coding the gateway does not decode", () => {
  it("is answered 501 and never forwarded: Node would take off the chunks and pass the gzip on as the body", async () => {
    const orders = await startFakeUpstream(() => ({ status: 201, body: order }));
    const gateway = await startGateway([await startFakeUpstream()], orders);
    const server = await new Promise<Server>((resolve) => {
      const s: Server = listen({ app: gateway.app, port: 0 }, () => resolve(s));
    });
    onTestFinished(async () => {
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
    });
    const gzipped = gzipSync(JSON.stringify({ userId: USER_ID, amount: 30 }));
    const socket = connect((server.address() as AddressInfo).port, "127.0.0.1");
    onTestFinished(() => void socket.destroy());
    socket.write(
      `POST /orders HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${ADMIN_TOKEN}\r\nContent-Type: application/json\r\nTransfer-Encoding: gzip, chunked\r\n\r\n${gzipped.length.toString(16)}\r\n`,
    );
    socket.write(gzipped);
    socket.write("\r\n0\r\n\r\n");
    let received = "";
    socket.on("data", (d) => {
      received += d.toString();
    });
    await eventually(() => received.includes("}"));
    const [head = "", body = ""] = received.split("\r\n\r\n");
    expect(head).toMatch(/^HTTP\/1\.1 501 /);
    expect(head).toMatch(/\r\nconnection: close\r\n/i);
    expect(JSON.parse(body)).toMatchObject({
      error: expect.stringMatching(/^a Transfer-Encoding other than chunked/),
    });
    expect(orders.received).toHaveLength(0);
  });
});

describe("a client that goes away", () => {
  it("stops its call to the upstream at once, not at the upstream timeout", async () => {
    const orders = await startFakeUpstream(() => ({ body: order, delayMs: 9000 }));
    const gateway = await startGateway([await startFakeUpstream()], orders, { UPSTREAM_TIMEOUT_MS: "10000" });
    const server = await new Promise<Server>((resolve) => {
      const s: Server = listen({ app: gateway.app, port: 0 }, () => resolve(s));
    });
    onTestFinished(async () => {
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
    });
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/orders/${ORDER_ID}`;
    const gone = new AbortController();
    const sent = request(url, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` }, signal: gone.signal });
    await eventually(() => orders.received.length === 1);
    gone.abort();
    await expect(sent).rejects.toThrow();
    const outcomes = () =>
      gateway.metrics.registry.getSingleMetricAsString("gateway_upstream_requests_total");
    // Well before the upstream answers (9 s) or times out (10 s), on a loaded machine too.
    await eventually(async () => /outcome="canceled"[^}]*} 1$/m.test(await outcomes()), 6000);
  });
});
