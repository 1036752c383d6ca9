import { randomUUID } from "node:crypto";
import { Agent, get as httpGet, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { HEADERS, honoPath, ORDER_SERVICE_ROUTES, type Order, TOPICS } from "@saga/contracts";
import { idempotencyKeys, orders, outbox } from "@saga/db/order";
import { listen } from "@saga/http";
import { outboxRow, SERVICE_HTTP_DEFAULTS } from "@saga/messaging";
import { metricValue } from "@saga/messaging/testing";
import { createLogger } from "@saga/observability";
import { useFreshDatabase } from "@saga/tools/test/harness";
import { count, eq } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it, onTestFinished, vi } from "vitest";
import { cancelOrder } from "../src/domain/order-hot-path.ts";
import { createOrderService, type OrderService } from "../src/service.ts";
import { freshTopicPrefix, openDatabase, startInProcess, testEnv } from "./support.ts";

const databaseUrl = useFreshDatabase("order_http");
let service: OrderService;
let db: ReturnType<typeof openDatabase>;

beforeAll(async () => {
  service = await startInProcess(testEnv(databaseUrl(), await freshTopicPrefix()));
  db = openDatabase(databaseUrl());
});

afterAll(async () => {
  await service?.stop();
  await db?.close();
});

const post = (body: unknown, headers: Record<string, string> = {}) =>
  service.app.request("/orders", {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body: typeof body === "string" ? body : JSON.stringify(body),
  });
const rowCounts = async () => ({
  orders: (await db.db.select({ n: count() }).from(orders))[0]?.n,
  outbox: (await db.db.select({ n: count() }).from(outbox))[0]?.n,
});
const eventsFor = async (orderId: string) =>
  db.db.select().from(outbox).where(eq(outbox.aggregateId, orderId)).orderBy(outbox.position);

/** How many sagas ended CANCELED with their duration recorded. */
const canceledSagaDurations = () =>
  metricValue(service.runtime.metrics.registry, "saga_duration_seconds_count", { outcome: "canceled" });

async function createOrder(userId = randomUUID(), amount = 100) {
  const res = await post({ userId, amount });
  expect(res.status).toBe(201);
  return (await res.json()) as Order;
}

describe("POST /orders", () => {
  it("creates a PENDING order and its order.created event in one go", async () => {
    const userId = randomUUID();
    const traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    const res = await post({ userId, amount: 1000 }, { traceparent });
    expect(res.status).toBe(201);
    const order = (await res.json()) as Order;
    expect(order).toEqual({
      id: expect.any(String),
      userId,
      amount: 1000,
      status: "PENDING",
      createdAt: expect.any(String),
    });

    const [row] = await db.db.select().from(orders).where(eq(orders.id, order.id));
    expect(row).toMatchObject({ userId, amount: 1000, status: "PENDING", cancelReason: null });
    const events = await eventsFor(order.id);
    expect(events).toHaveLength(1);
    expect(events[0]).toMatchObject({
      topic: TOPICS.orderCreated,
      eventType: "OrderCreated",
      schemaVersion: "1",
      publishedAt: null,
      payload: JSON.stringify({ orderId: order.id, userId, amount: 1000 }),
    });
    expect(events[0]?.headers[HEADERS.traceparent]).toMatch(
      /^00-4bf92f3577b34da6a3ce929d0e0e4736-[0-9a-f]{16}-01$/,
    );
  });

  it("reads a userId in capitals as the same user, in the order, its event and its Idempotency-Key", async () => {
    // Some clients print UUIDs in capitals (.NET, Swift). The user-service finds users by the event's
    // userId: an order.created that kept the capitals ended the saga USER_NOT_FOUND.
    const userId = randomUUID();
    const key = randomUUID();
    const res = await post({ userId: userId.toUpperCase(), amount: 7 }, { "idempotency-key": key });
    expect(res.status).toBe(201);
    const order = (await res.json()) as Order;
    expect(order.userId).toBe(userId);
    expect(JSON.parse((await eventsFor(order.id))[0]?.payload ?? "{}")).toMatchObject({ userId });
    const retry = await post({ userId, amount: 7 }, { "idempotency-key": key });
    expect(retry.status, "the same request, in other letters").toBe(201);
    expect(await retry.json()).toMatchObject({ id: order.id });
  });

  it.each([
    ["malformed JSON", "{", 400],
    ["a bad user UUID", { userId: "42", amount: 1 }, 400],
    ["amount 0", { userId: randomUUID(), amount: 0 }, 400],
    ["amount -1", { userId: randomUUID(), amount: -1 }, 400],
    ["amount 1.5", { userId: randomUUID(), amount: 1.5 }, 400],
    ['amount "10"', { userId: randomUUID(), amount: "10" }, 400],
    ["an unsafe amount", `{"userId":"${randomUUID()}","amount":9007199254740993}`, 400],
    [
      "an amount whose fraction a double drops",
      `{"userId":"${randomUUID()}","amount":1.0000000000000001}`,
      400,
    ],
    ["a missing amount", { userId: randomUUID() }, 400],
    ["a missing userId", { amount: 1 }, 400],
    ["null", "null", 400],
    ["a 2 MB body", { userId: randomUUID(), amount: 1, pad: "x".repeat(2 * 1024 * 1024) }, 413],
  ])("rejects %s with a JSON error and writes no row", async (_what, body, status) => {
    const before = await rowCounts();
    const res = await post(body);
    expect(res.status).toBe(status);
    expect(await res.json()).toEqual({ error: expect.any(String), requestId: expect.any(String) });
    expect(await rowCounts()).toEqual(before);
  });
});

describe("Idempotency-Key on POST /orders", () => {
  it("returns the first response to a retry, with one order and one event", async () => {
    const key = randomUUID();
    const body = { userId: randomUUID(), amount: 5 };
    const first = await post(body, { "idempotency-key": key });
    const retry = await post(body, { "idempotency-key": key });
    expect(first.status).toBe(201);
    expect(retry.status).toBe(201);
    const answered = await first.text();
    expect(await retry.text(), "the first answer, byte for byte").toBe(answered);
    const order = JSON.parse(answered) as Order;
    expect(await db.db.select().from(orders).where(eq(orders.userId, body.userId))).toHaveLength(1);
    expect(await eventsFor(order.id)).toHaveLength(1);
    expect(await db.db.select().from(idempotencyKeys).where(eq(idempotencyKeys.key, key))).toHaveLength(1);
  });

  it("creates one order when retries race", async () => {
    const key = randomUUID();
    const body = { userId: randomUUID(), amount: 5 };
    const responses = await Promise.all(
      Array.from({ length: 5 }, () => post(body, { "idempotency-key": key })),
    );
    expect(responses.map((r) => r.status)).toEqual([201, 201, 201, 201, 201]);
    const bodies = (await Promise.all(responses.map((r) => r.json()))) as Order[];
    expect(new Set(bodies.map((o) => o.id)).size).toBe(1);
    expect(await db.db.select().from(orders).where(eq(orders.userId, body.userId))).toHaveLength(1);
  });

  it("answers 422 when the key comes back with a different body, and writes nothing", async () => {
    const key = randomUUID();
    expect((await post({ userId: randomUUID(), amount: 5 }, { "idempotency-key": key })).status).toBe(201);
    const before = await rowCounts();
    const res = await post({ userId: randomUUID(), amount: 6 }, { "idempotency-key": key });
    expect(res.status).toBe(422);
    expect(await res.json()).toMatchObject({ error: expect.stringContaining("Idempotency-Key") });
    expect(await rowCounts()).toEqual(before);
  });
});

describe("GET /orders/:id and GET /orders?userId=", () => {
  it("reads an order back, and a user's orders oldest first", async () => {
    const userId = randomUUID();
    const a = await createOrder(userId, 1);
    const b = await createOrder(userId, 2);
    await createOrder();

    const one = await service.app.request(`/orders/${a.id}`);
    expect(one.status).toBe(200);
    expect(await one.json()).toEqual(a);
    const list = await service.app.request(`/orders?userId=${userId}`);
    expect(list.status).toBe(200);
    expect(await list.json()).toEqual([a, b]);
    expect(await (await service.app.request(`/orders?userId=${randomUUID()}`)).json()).toEqual([]);
  });

  it("answers every read of a burst of 100 at once on a warm, idle instance: a burst is not overload", async () => {
    // The lanes' defaults (8 reads at once, 16 queued; the tests' own queue is longer), its warm-up over,
    // served on a port. A queue not empty for the interval is standing, bounded by its count again: the
    // interval is long here, as in the gateway's burst tests, so that a machine slow enough to take 100 ms
    // over the burst does not make it overload (a fresh-clone CI run answered some of it 503 so).
    const warm = await startInProcess({
      ...testEnv(databaseUrl(), await freshTopicPrefix(), {
        ADMISSION_QUEUE: SERVICE_HTTP_DEFAULTS.queue,
        ADMISSION_QUEUE_INTERVAL_MS: 10_000,
        ADMISSION_WARMUP_MS: 0,
      }),
      INSTANCE_ID: "burst",
    });
    onTestFinished(() => warm.stop());
    const server = await new Promise<Server>((resolve) => {
      const s: Server = listen({ app: warm.app, port: 0 }, () => resolve(s));
    });
    onTestFinished(async () => {
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
    });
    const port = (server.address() as AddressInfo).port;
    const { id } = await createOrder();
    // A hundred clients, each on a connection of its own, already open.
    const agent = new Agent({ keepAlive: true, maxSockets: 100 });
    onTestFinished(() => agent.destroy());
    const get = (path: string) =>
      new Promise<number>((resolve, reject) => {
        httpGet({ host: "127.0.0.1", port, path, agent }, (res) => {
          res.resume();
          res.on("end", () => resolve(res.statusCode ?? 0));
        }).on("error", reject);
      });
    await Promise.all(Array.from({ length: 100 }, () => get("/health")));
    // Each sends a read of the same order at once.
    const statuses = await Promise.all(Array.from({ length: 100 }, () => get(`/orders/${id}`)));
    expect(statuses).toEqual(Array(100).fill(200));
  });

  it("lets a user read only its own order: another's answers exactly as an unknown id, GET and HEAD", async () => {
    // The gateway forwards a user's read once, with the user's id and role, and passes this answer on.
    const owner = randomUUID();
    const order = await createOrder(owner, 5);
    const asUser = (subject: string, method: string) => ({
      method,
      headers: { "x-auth-subject": subject, "x-auth-role": "user" },
    });
    const seen = async (res: Response) => ({
      status: res.status,
      headers: [...res.headers].filter(([name]) => name !== "x-request-id"),
      body: (await res.text()).replace(/"requestId":"[^"]*"/, ""),
    });
    for (const method of ["GET", "HEAD"]) {
      const other = await seen(
        await service.app.request(`/orders/${order.id}`, asUser(randomUUID(), method)),
      );
      const unknown = await seen(await service.app.request(`/orders/${randomUUID()}`, asUser(owner, method)));
      expect(other, method).toEqual(unknown);
      expect(other.status).toBe(404);
      // Its own, named as the gateway's token may spell it.
      const own = await service.app.request(`/orders/${order.id}`, asUser(owner.toUpperCase(), method));
      expect(own.status).toBe(200);
    }
    const own = await service.app.request(`/orders/${order.id}`, asUser(owner, "GET"));
    expect(await own.json()).toEqual(order);
    // An admin reads anyone's.
    const asAdmin = { headers: { "x-auth-subject": "ops", "x-auth-role": "admin" } };
    expect(await (await service.app.request(`/orders/${order.id}`, asAdmin)).json()).toEqual(order);
  });

  it.each([
    ["/orders/not-a-uuid", 400],
    [`/orders/${randomUUID()}`, 404],
    ["/orders", 400],
    ["/orders?userId=42", 400],
  ])("answers GET %s with %i and a JSON error", async (path, status) => {
    const res = await service.app.request(path);
    expect(res.status).toBe(status);
    expect(await res.json()).toMatchObject({ error: expect.any(String) });
  });
});

describe("DELETE /orders/:id", () => {
  it("cancels a PENDING order and emits order.canceled; a second DELETE changes nothing", async () => {
    const order = await createOrder(randomUUID(), 42);
    const durationsBefore = await canceledSagaDurations();
    const traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    const res = await service.app.request(`/orders/${order.id.toUpperCase()}`, {
      method: "DELETE",
      headers: { traceparent },
    });
    expect(res.status).toBe(204);
    const [row] = await db.db.select().from(orders).where(eq(orders.id, order.id));
    expect(row).toMatchObject({ status: "CANCELED", cancelReason: "CANCELED_BY_REQUEST" });
    const events = await eventsFor(order.id);
    expect(events.map((e) => e.topic)).toEqual([TOPICS.orderCreated, TOPICS.orderCanceled]);
    // The event the statement wrote is, byte for byte, the one `outboxRow` makes of the contract's payload.
    const expected = outboxRow({
      topic: TOPICS.orderCanceled,
      aggregateId: order.id,
      payload: { orderId: order.id, userId: order.userId, amount: 42 },
    });
    expect(events[1]).toMatchObject({
      // A version 7 id, as every outbox row's (`newRowId`), not the column's random default.
      id: expect.stringMatching(/^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab]/),
      aggregateId: order.id,
      eventType: expected.eventType,
      schemaVersion: expected.schemaVersion,
      payload: expected.payload,
    });
    // The request's trace continues in the event: same trace, a span of its own.
    expect(events[1]?.headers[HEADERS.traceparent]).toMatch(
      /^00-4bf92f3577b34da6a3ce929d0e0e4736-[0-9a-f]{16}-01$/,
    );
    // Leaving PENDING ended the saga: its duration is recorded.
    expect(await canceledSagaDurations()).toBe(durationsBefore + 1);

    const again = await service.app.request(`/orders/${order.id}`, { method: "DELETE" });
    expect(again.status).toBe(204);
    expect(await eventsFor(order.id)).toHaveLength(2);
    expect(await (await service.app.request(`/orders/${order.id}`)).json()).toMatchObject({
      status: "CANCELED",
    });
  });

  it("waits for a writer that holds the order and decides on what it committed", async () => {
    const order = await createOrder(randomUUID(), 7);
    const durationsBefore = await canceledSagaDurations();
    // A consumer confirming the order: its aggregate lock, then the row, committed only later.
    const writer = await db.pool.connect();
    try {
      await writer.query("begin");
      await writer.query("select pg_advisory_xact_lock(hashtextextended($1, 0))", [order.id]);
      await writer.query("update orders set status = 'CONFIRMED' where id = $1", [order.id]);
      let answered = false;
      const deleted = Promise.resolve(service.app.request(`/orders/${order.id}`, { method: "DELETE" })).then(
        (res) => {
          answered = true;
          return res;
        },
      );
      await new Promise((r) => setTimeout(r, 300));
      expect(answered).toBe(false);
      await writer.query("commit");
      expect((await deleted).status).toBe(204);
    } finally {
      writer.release();
    }
    const [row] = await db.db.select().from(orders).where(eq(orders.id, order.id));
    expect(row).toMatchObject({ status: "CANCELED", cancelReason: "CANCELED_BY_REQUEST" });
    expect((await eventsFor(order.id)).map((e) => e.topic)).toEqual([
      TOPICS.orderCreated,
      TOPICS.orderCanceled,
    ]);
    // It canceled a CONFIRMED order (a compensation), not a PENDING one: the saga had ended already.
    expect(await canceledSagaDurations()).toBe(durationsBefore);
  });

  it("answers ignored, CANCELED, when a writer it waited for canceled the order", async () => {
    const order = await createOrder(randomUUID(), 7);
    // A credit batch canceling the order (reservation failed): its aggregate lock, then the row.
    const writer = await db.pool.connect();
    try {
      await writer.query("begin");
      await writer.query("select pg_advisory_xact_lock(hashtextextended($1, 0))", [order.id]);
      await writer.query(
        "update orders set status = 'CANCELED', cancel_reason = 'INSUFFICIENT_FUNDS' where id = $1",
        [order.id],
      );
      const canceling = cancelOrder(
        service.runtime.db.pool,
        order.id,
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
      );
      // The cancel's statement took its snapshot (the order PENDING) and waits for the lock.
      await vi.waitFor(
        async () => {
          const { rows } = await writer.query<{ n: number }>(
            `select count(*)::int as n from pg_locks
             where locktype = 'advisory' and not granted
               and database = (select oid from pg_database where datname = current_database())`,
          );
          expect(rows[0]?.n).toBe(1);
        },
        { timeout: 20_000, interval: 20 },
      );
      await writer.query("commit");
      expect(await canceling).toEqual({ kind: "ignored", state: "CANCELED" });
    } finally {
      writer.release();
    }
    const [row] = await db.db.select().from(orders).where(eq(orders.id, order.id));
    expect(row).toMatchObject({ status: "CANCELED", cancelReason: "INSUFFICIENT_FUNDS" });
    expect((await eventsFor(order.id)).map((e) => e.topic)).toEqual([TOPICS.orderCreated]);
  });

  it("lets a user cancel only its own order: another's answers exactly as an unknown id, and nothing is written", async () => {
    // The gateway sends a user's cancel as it is, with the user's id and role, and passes this answer on.
    const owner = randomUUID();
    const order = await createOrder(owner, 5);
    const asUser = (subject: string) => ({
      method: "DELETE",
      headers: { "x-auth-subject": subject, "x-auth-role": "user" },
    });
    const seen = async (res: Response) => ({
      status: res.status,
      headers: [...res.headers].filter(([name]) => name !== "x-request-id"),
      body: (await res.text()).replace(/"requestId":"[^"]*"/, ""),
    });
    const before = await rowCounts();
    const other = await seen(await service.app.request(`/orders/${order.id}`, asUser(randomUUID())));
    const unknown = await seen(await service.app.request(`/orders/${randomUUID()}`, asUser(owner)));
    expect(other).toEqual(unknown);
    expect(other.status).toBe(404);
    expect(await rowCounts()).toEqual(before);
    expect((await eventsFor(order.id)).map((e) => e.topic)).toEqual([TOPICS.orderCreated]);

    // Its own, named as the gateway's token may spell it.
    expect((await service.app.request(`/orders/${order.id}`, asUser(owner.toUpperCase()))).status).toBe(204);
    const [row] = await db.db.select().from(orders).where(eq(orders.id, order.id));
    expect(row).toMatchObject({ status: "CANCELED", cancelReason: "CANCELED_BY_REQUEST" });
    // Canceled already: as for any caller, nothing more to do; still another's for anyone else.
    expect((await service.app.request(`/orders/${order.id}`, asUser(owner))).status).toBe(204);
    expect((await service.app.request(`/orders/${order.id}`, asUser(randomUUID()))).status).toBe(404);
    // An admin cancels anyone's.
    const another = await createOrder();
    const asAdmin = { method: "DELETE", headers: { "x-auth-subject": "ops", "x-auth-role": "admin" } };
    expect((await service.app.request(`/orders/${another.id}`, asAdmin)).status).toBe(204);
  });

  it("answers 404 for an unknown order and 400 for a malformed id, writing nothing", async () => {
    const before = await rowCounts();
    expect((await service.app.request(`/orders/${randomUUID()}`, { method: "DELETE" })).status).toBe(404);
    expect((await service.app.request("/orders/1", { method: "DELETE" })).status).toBe(400);
    expect(await rowCounts()).toEqual(before);
  });
});

describe("operations endpoints", () => {
  it("is live, ready with its database and Kafka, and serves the saga metrics", async () => {
    expect(await (await service.app.request("/health")).json()).toEqual({ status: "UP" });
    expect((await service.app.request("/ready")).status).toBe(200);
    const metrics = await (await service.app.request("/metrics")).text();
    expect(metrics).toContain("saga_outcomes_total");
    expect(metrics).toContain("saga_duration_seconds");
  });
});

describe("the routes of the API document", () => {
  it("serves exactly its operations of the document, besides the probes and metrics", () => {
    const served = service.app.routes.filter((r) => r.method !== "ALL").map((r) => `${r.method} ${r.path}`);
    expect([...new Set(served)].sort()).toEqual(
      [
        ...ORDER_SERVICE_ROUTES.map((r) => `${r.method.toUpperCase()} ${honoPath(r.path)}`),
        "GET /health",
        "GET /ready",
        "GET /metrics",
      ].sort(),
    );
  });

  it("answers another method on a known path 405 with Allow, and writes nothing", async () => {
    const order = await createOrder();
    const before = await rowCounts();
    const patch = await service.app.request(`/orders/${order.id}`, {
      method: "PATCH",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ status: "CONFIRMED" }),
    });
    expect(patch.status).toBe(405);
    expect(patch.headers.get("allow")).toBe("DELETE, GET, HEAD");
    expect(await patch.json()).toMatchObject({
      error: `PATCH is not allowed on /orders/${order.id}; allowed: DELETE, GET, HEAD`,
    });
    const put = await service.app.request("/orders", { method: "PUT" });
    expect(put.status).toBe(405);
    expect(put.headers.get("allow")).toBe("GET, HEAD, POST");
    expect(await rowCounts()).toEqual(before);
    const read = await service.app.request(`/orders/${order.id}`);
    expect(((await read.json()) as Order).status).toBe("PENDING");
  });
});

describe("the debug lines of orders", () => {
  it("name the trace of the order created and canceled, the one its events carry", async () => {
    const lines: Record<string, unknown>[] = [];
    const debug = await createOrderService(testEnv(databaseUrl(), await freshTopicPrefix()), {
      logger: createLogger("order-service", "debug", {
        destination: { write: (line: string) => void lines.push(JSON.parse(line)) },
      }),
    });
    onTestFinished(() => debug.stop());
    const traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    const res = await debug.app.request("/orders", {
      method: "POST",
      headers: { "content-type": "application/json", traceparent },
      body: JSON.stringify({ userId: randomUUID(), amount: 5 }),
    });
    expect(res.status).toBe(201);
    const { id } = (await res.json()) as Order;
    // A cancel with no traceparent starts a trace of its own, which its line names as its event does.
    expect((await debug.app.request(`/orders/${id}`, { method: "DELETE" })).status).toBe(204);

    const [created, canceled] = (await eventsFor(id)).map((e) =>
      e.headers[HEADERS.traceparent]?.slice(3, 35),
    );
    expect(created).toBe("4bf92f3577b34da6a3ce929d0e0e4736");
    expect(canceled).toMatch(/^[0-9a-f]{32}$/);
    const logged = lines.filter((l) => l.msg === "order created" || l.msg === "order canceled");
    expect(logged.map((l) => [l.msg, l.traceId])).toEqual([
      ["order created", created],
      ["order canceled", canceled],
    ]);
  });
});
