/**
 * Backpressure from the saga: no user-service answers here, so every order stays PENDING until the test
 * answers for it (as the user-service would, through Kafka) or cancels it.
 */
import { randomUUID } from "node:crypto";
import { type Order, TOPICS } from "@saga/contracts";
import { orders } from "@saga/db/order";
import { createBaseApp } from "@saga/http";
import { createKafka, type EventProducer, type KafkaClient } from "@saga/kafka";
import { eventMessage, metricValue } from "@saga/messaging/testing";
import { createLogger, createMetrics } from "@saga/observability";
import { kafkaBrokers, useFreshDatabase } from "@saga/tools/test/harness";
import { eq, inArray } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it, onTestFinished, vi } from "vitest";
import { createSagaBacklog } from "../src/backpressure.ts";
import type { OrderService } from "../src/service.ts";
import { freshTopicPrefix, openDatabase, startInProcess, testEnv } from "./support.ts";

const databaseUrl = useFreshDatabase("order_backpressure");
let prefix: string;
let service: OrderService;
let db: ReturnType<typeof openDatabase>;
let kafka: KafkaClient;
let producer: EventProducer;

beforeAll(async () => {
  prefix = await freshTopicPrefix();
  service = await startInProcess(
    testEnv(databaseUrl(), prefix, { SAGA_BACKLOG_LIMIT: 3, SAGA_BACKLOG_MIN: 3 }),
  );
  await service.start();
  db = openDatabase(databaseUrl());
  kafka = createKafka({ brokers: kafkaBrokers(), clientId: "order-backpressure-test" });
  producer = await kafka.createProducer();
});

afterAll(async () => {
  await producer?.close();
  await kafka?.close();
  await service?.stop();
  await db?.close();
});

const post = () =>
  service.app.request("/orders", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ userId: randomUUID(), amount: 10 }),
  });

async function pendingOrders() {
  return (await db.db.select().from(orders).where(eq(orders.status, "PENDING"))).length;
}

describe("backpressure from the saga", () => {
  it("counts an order once in the backlog, however often its Idempotency-Key is replayed", async () => {
    const backlog = () => metricValue(service.runtime.metrics.registry, "saga_backlog");
    const before = await backlog();
    const body = JSON.stringify({ userId: randomUUID(), amount: 10 });
    const headers = { "content-type": "application/json", "idempotency-key": randomUUID() };
    const answers = [];
    for (let i = 0; i < 3; i++)
      answers.push(await service.app.request("/orders", { method: "POST", headers, body }));
    expect(answers.map((r) => r.status)).toEqual([201, 201, 201]);
    expect(await backlog(), "one order pending, not three").toBe(before + 1);
    const { id } = (await answers[0]?.json()) as Order;
    expect((await service.app.request(`/orders/${id}`, { method: "DELETE" })).status).toBe(204);
    expect(await backlog()).toBe(before);
  });

  it("refuses new orders with 503 + Retry-After at the bound, keeps reads and cancels, and accepts again as sagas finish", async () => {
    const accepted: Order[] = [];
    for (let i = 0; i < 3; i++) {
      const res = await post();
      expect(res.status).toBe(201);
      accepted.push((await res.json()) as Order);
    }

    const refused = await post();
    expect(refused.status).toBe(503);
    expect(refused.headers.get("retry-after")).toBe("1");
    expect(await refused.json()).toMatchObject({
      error: expect.stringMatching(/saga backlog is at its bound/),
    });
    expect(await pendingOrders()).toBe(3);
    expect(await metricValue(service.runtime.metrics.registry, "saga_backlog_shed_total")).toBe(1);
    expect(await metricValue(service.runtime.metrics.registry, "saga_backlog")).toBe(3);
    // Every answer tells the gateway how many new orders would be accepted now: none.
    expect(refused.headers.get("x-headroom")).toBe("0");

    // Reads and cancels are not limited; a cancel ends a saga and makes room.
    const [first, second] = accepted as [Order, Order];
    const read = await service.app.request(`/orders/${first.id}`);
    expect(read.status).toBe(200);
    expect(read.headers.get("x-headroom")).toBe("0");
    expect((await service.app.request(`/orders/${first.id}`, { method: "DELETE" })).status).toBe(204);
    expect((await service.app.request(`/orders/${second.id}`)).headers.get("x-headroom")).toBe("1");
    expect((await post()).status).toBe(201);
    expect((await post()).status).toBe(503);

    // The user-service's answer drains the backlog through the consumer.
    await producer.send([
      eventMessage(
        TOPICS.creditReserved,
        { orderId: second.id, userId: second.userId, amount: second.amount },
        prefix,
      ),
    ]);
    await vi.waitFor(async () => expect((await post()).status).toBe(201), { timeout: 20_000, interval: 100 });
    expect(await pendingOrders()).toBe(3);
  });

  it("makes room for a cancel, the client's or the deadline's, but does not count it as a saga finished: cancels do not raise the bound", async () => {
    const { registry } = service.runtime.metrics;
    // The sagas finished per second that the bound is sized by.
    const throughput = await metricValue(registry, "saga_throughput");

    // The deadline cancels every order still pending (here, made overdue)…
    const overdue = await db.db
      .update(orders)
      .set({ createdAt: new Date(Date.now() - 3_600_000) })
      .where(eq(orders.status, "PENDING"))
      .returning({ id: orders.id });
    expect(overdue.length).toBeGreaterThan(0);
    // …in this sweep, or in the service's own, which runs every second and may come first.
    await service.deadlines.sweep();
    const timedOut = await db.db
      .select()
      .from(orders)
      .where(
        inArray(
          orders.id,
          overdue.map((o) => o.id),
        ),
      );
    expect(timedOut.every((o) => o.status === "CANCELED" && o.cancelReason === "TIMEOUT")).toBe(true);
    expect(await metricValue(registry, "saga_backlog")).toBe(0);
    // …and clients cancel as fast as they order.
    for (let i = 0; i < 10; i++) {
      const res = await post();
      expect(res.status).toBe(201);
      const { id } = (await res.json()) as Order;
      expect((await service.app.request(`/orders/${id}`, { method: "DELETE" })).status).toBe(204);
    }
    // A recount of the database that began before a cancel may land after it, one order too high, until
    // the next.
    await vi.waitFor(async () => expect(await metricValue(registry, "saga_backlog")).toBe(0), {
      timeout: 15_000,
      interval: 100,
    });
    expect(await metricValue(registry, "saga_throughput")).toBe(throughput);
  });
  it("counts only counts heard on the sagas-finished channel: a stray NOTIFY of anything else leaves the rate as it was", async () => {
    const { registry } = service.runtime.metrics;
    const heard = await metricValue(registry, "saga_finished_anywhere_total");
    for (const payload of ["nope", "12x", "", "-3", "1e9"])
      await db.pool.query("select pg_notify('sagas_finished', $1)", [payload]);
    // A count after them, heard once they all were (one connection, in order).
    await db.pool.query("select pg_notify('sagas_finished', '2')");
    await vi.waitFor(
      async () => expect(await metricValue(registry, "saga_finished_anywhere_total")).toBe(heard + 2),
      { timeout: 5000, interval: 50 },
    );
    expect(Number.isFinite(await metricValue(registry, "saga_throughput"))).toBe(true);
  });
});

describe("the saga backlog's bound: what the saga has shown it finishes, and a warm-up after a start", () => {
  /** A backlog on the test's database in front of a handler that accepts every order. */
  async function guarded(opts: {
    minLimit: number;
    warmUpMs: number;
    warmUpAgeMs: number;
    warmUpMinMs?: number;
    targetMs?: number;
    recountMs?: number;
  }) {
    const metrics = createMetrics("order-service", "bound-test");
    const backlog = createSagaBacklog({
      db: db.db,
      limit: 1000,
      targetMs: 1000,
      recountMs: 60_000,
      retryAfterS: 1,
      logger: createLogger("order-service", "silent"),
      registry: metrics.registry,
      warmUpMinMs: 0,
      ...opts,
    });
    await backlog.start();
    onTestFinished(() => backlog.stop());
    const app = createBaseApp({
      logger: createLogger("order-service", "silent"),
      metrics,
      ready: async () => {},
    });
    app.use(backlog.reportHeadroom);
    app.post("/orders", backlog.admitNewOrders, (c) => c.json({}, 201));
    const statuses = async (n: number) => {
      const out: number[] = [];
      for (let i = 0; i < n; i++) out.push((await app.request("/orders", { method: "POST" })).status);
      return out;
    };
    const gauge = (name: string) => metricValue(metrics.registry, name);
    return { backlog, app, statuses, gauge };
  }

  it("sizes the bound by the sagas finished per second times the target, and never below its floor", async () => {
    const pending = await pendingOrders();
    const guard = await guarded({ minLimit: pending + 2, warmUpMs: 0, warmUpAgeMs: 1 });
    // No saga finished yet: the floor.
    expect(await guard.gauge("saga_backlog_limit")).toBe(pending + 2);
    expect(await guard.statuses(3)).toEqual([201, 201, 503]);
    // The saga shows it finishes 30 a second (150 within one 5-second span, heard of in one batch, on any
    // instance): that many in flight finish within the target of 1 s.
    guard.backlog.finishedAnywhere(150);
    const perSecond = await guard.gauge("saga_throughput");
    expect(perSecond).toBe(30);
    expect(await guard.gauge("saga_finished_anywhere_total")).toBe(150);
    const bound = Math.max(Math.round(perSecond), pending + 2);
    expect(await guard.gauge("saga_backlog_limit")).toBe(bound);
    const backlog = await guard.gauge("saga_backlog");
    const room = bound - backlog;
    const res = await guard.app.request("/orders/none");
    expect(res.headers.get("x-headroom")).toBe(String(room));
    expect(await guard.statuses(room + 1)).toEqual([...Array(room).fill(201), 503]);
  });

  it("while warming, holds the bound only once an order has been pending for the warm-up age", async () => {
    // Sagas left PENDING by the test above are older than any warm-up age: none here.
    await db.db.update(orders).set({ status: "CANCELED" }).where(eq(orders.status, "PENDING"));
    const guard = await guarded({ minLimit: 1, warmUpMs: 60_000, warmUpAgeMs: 2000 });
    // The bound is 1, but every order in flight is younger than the warm-up age: a cold path, not overload.
    expect(await guard.statuses(5)).toEqual([201, 201, 201, 201, 201]);
    // …and the gateway is told so: it would refuse new orders at its edge on a headroom of 0.
    expect(Number((await guard.app.request("/orders/none")).headers.get("x-headroom"))).toBeGreaterThan(0);
    await new Promise((r) => setTimeout(r, 2100));
    // They have waited 2 s and are still PENDING: the saga does not keep up, and the bound holds.
    expect(await guard.statuses(1)).toEqual([503]);
    expect((await guard.app.request("/orders/none")).headers.get("x-headroom")).toBe("0");
    // Once they finish, orders are accepted again; 50 sagas in a row on time end the warm-up.
    for (let i = 0; i < 5; i++) guard.backlog.finished(5);
    expect(await guard.statuses(1)).toEqual([201]);
    for (let i = 0; i < 50; i++) guard.backlog.finished(0.1);
    // Warm: the bound holds against young orders too.
    const room = (await guard.gauge("saga_backlog_limit")) - (await guard.gauge("saga_backlog"));
    expect(await guard.statuses(room + 1)).toEqual([...Array(room).fill(201), 503]);
  });

  it("while warming, takes the orders another instance accepted lately for young too, and holds the bound once one has waited the warm-up age", async () => {
    await db.db.update(orders).set({ status: "CANCELED" }).where(eq(orders.status, "PENDING"));
    // Three orders another order-service instance has just accepted, still in flight.
    const others = await db.db
      .insert(orders)
      .values(
        Array.from({ length: 3 }, () => ({ userId: randomUUID(), amount: 10, status: "PENDING" as const })),
      )
      .returning();
    const warm = { minLimit: 1, warmUpMs: 60_000, warmUpAgeMs: 30_000 };
    const guard = await guarded(warm);
    expect(await guard.gauge("saga_backlog")).toBe(3);
    // Past the bound of 1, but no order in flight is older than the warm-up age: a cold path, not overload.
    expect(await guard.statuses(2)).toEqual([201, 201]);
    expect(Number((await guard.app.request("/orders/none")).headers.get("x-headroom"))).toBeGreaterThan(0);

    // One of the other instance's orders has waited the warm-up age: the bound holds.
    await db.db
      .update(orders)
      .set({ createdAt: new Date(Date.now() - 60_000) })
      .where(eq(orders.id, others[0]?.id ?? ""));
    const later = await guarded(warm);
    expect(await later.statuses(1)).toEqual([503]);
    expect((await later.app.request("/orders/none")).headers.get("x-headroom")).toBe("0");
  });

  it("does not end the warm-up before its minimum, however many sagas run on time", async () => {
    await db.db.update(orders).set({ status: "CANCELED" }).where(eq(orders.status, "PENDING"));
    const guard = await guarded({ minLimit: 1, warmUpMs: 60_000, warmUpMinMs: 1500, warmUpAgeMs: 60_000 });
    for (let i = 0; i < 60; i++) guard.backlog.finished(0.1);
    // Sixty sagas on time within the warm-up's first 1.5 s: orders past the bound are still accepted.
    const room = (await guard.gauge("saga_backlog_limit")) - (await guard.gauge("saga_backlog"));
    expect(room).toBeGreaterThan(0);
    expect(await guard.statuses(room + 1)).toEqual(Array(room + 1).fill(201));
    await new Promise((r) => setTimeout(r, 1600));
    // Past the minimum, the next saga ends the warm-up, late as it is (the path has shown it runs on time:
    // late now is overload, which the bound is for), and the bound holds against young orders.
    guard.backlog.finished(5);
    const left = (await guard.gauge("saga_backlog_limit")) - (await guard.gauge("saga_backlog"));
    expect(await guard.statuses(Math.max(0, left) + 1)).toEqual([...Array(Math.max(0, left)).fill(201), 503]);
  });

  it("remembers the rate the saga has shown through a quiet spell: a warm system idle for a minute accepts a burst it finishes within the target", async () => {
    await db.db.update(orders).set({ status: "CANCELED" }).where(eq(orders.status, "PENDING"));
    // The test's clock: a quiet minute passes at once.
    vi.useFakeTimers({ toFake: ["performance"] });
    onTestFinished(() => {
      vi.useRealTimers();
    });
    const guard = await guarded({ minLimit: 40, targetMs: 500, warmUpMs: 0, warmUpAgeMs: 1 });
    // The saga finished 500 a second (2,500 within one 5-second span): 250 in flight finish within 500 ms.
    guard.backlog.finishedAnywhere(2500);
    expect(await guard.gauge("saga_backlog_limit")).toBe(250);
    // A minute with no order at all: it says nothing of what the saga can do.
    vi.advanceTimersByTime(60_000);
    // Fifty orders at once, a tenth of a second's work for the saga: all accepted.
    const burst = await Promise.all(
      Array.from({ length: 50 }, () => guard.app.request("/orders", { method: "POST" })),
    );
    expect(burst.map((r) => r.status)).toEqual(Array(50).fill(201));
    expect(await guard.gauge("saga_backlog")).toBe(50);
    expect(await guard.gauge("saga_backlog_limit")).toBe(250);
    expect((await guard.app.request("/orders/none")).headers.get("x-headroom")).toBe("200");
    // Then one of them takes a second, past the target: the saga is not what it was a minute ago, and the
    // bound is the floor again, below the backlog.
    guard.backlog.finished(1);
    expect(await guard.gauge("saga_backlog_limit")).toBe(40);
    expect(await guard.statuses(1)).toEqual([503]);
  });

  it("forgets that rate once the backlog is late: a saga that has stopped is refused new orders past the floor", async () => {
    await db.db.update(orders).set({ status: "CANCELED" }).where(eq(orders.status, "PENDING"));
    vi.useFakeTimers({ toFake: ["performance"] });
    onTestFinished(() => {
      vi.useRealTimers();
    });
    const guard = await guarded({ minLimit: 40, targetMs: 500, warmUpMs: 0, warmUpAgeMs: 1, recountMs: 100 });
    guard.backlog.finishedAnywhere(2500);
    vi.advanceTimersByTime(60_000);
    // Then 45 orders, accepted by another instance, have been PENDING for 10 s: the saga has stopped
    // (a user-service away), and none of them finishes to say so.
    await db.db.insert(orders).values(
      Array.from({ length: 45 }, () => ({
        userId: randomUUID(),
        amount: 10,
        status: "PENDING" as const,
        createdAt: new Date(Date.now() - 10_000),
      })),
    );
    // The next count finds them late: the bound is the floor again, and the backlog is past it.
    await vi.waitFor(
      async () => {
        expect(await guard.gauge("saga_backlog")).toBe(45);
        expect(await guard.gauge("saga_backlog_limit")).toBe(40);
      },
      { timeout: 10_000, interval: 50 },
    );
    expect(await guard.statuses(1)).toEqual([503]);
    expect((await guard.app.request("/orders/none")).headers.get("x-headroom")).toBe("0");
    expect(await pendingOrders()).toBe(45);
  });
});
