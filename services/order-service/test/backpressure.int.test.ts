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
import { eq } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
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

    // Reads and cancels are not limited; a cancel ends a saga and makes room.
    const [first, second] = accepted as [Order, Order];
    expect((await service.app.request(`/orders/${first.id}`)).status).toBe(200);
    expect((await service.app.request(`/orders/${first.id}`, { method: "DELETE" })).status).toBe(204);
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
});

describe("the saga backlog's warm-up after a start", () => {
  /** A backlog on the test's database in front of a handler that accepts every order. */
  async function guarded(warmUpMs: number, limits: { limit: number; warmUpLimit: number }) {
    const metrics = createMetrics("order-service", "warm-up-test");
    const backlog = createSagaBacklog({
      db: db.db,
      ...limits,
      minLimit: 1,
      targetMs: 1000,
      recountMs: 60_000,
      retryAfterS: 1,
      warmUpMs,
      logger: createLogger("order-service", "silent"),
      registry: metrics.registry,
    });
    await backlog.start();
    const app = createBaseApp({
      logger: createLogger("order-service", "silent"),
      metrics,
      ready: async () => {},
    });
    app.post("/orders", backlog.admitNewOrders, (c) => c.json({}, 201));
    const statuses = async (n: number) => {
      const out: number[] = [];
      for (let i = 0; i < n; i++) out.push((await app.request("/orders", { method: "POST" })).status);
      return out;
    };
    const bound = () => metricValue(metrics.registry, "saga_backlog_limit");
    return { backlog, statuses, bound };
  }

  it("takes the warm-up bound while warming, and slow sagas do not lower it; afterwards they do", async () => {
    const pending = await pendingOrders();
    const warm = await guarded(60_000, { limit: pending + 1, warmUpLimit: pending + 3 });
    expect(await warm.statuses(4)).toEqual([201, 201, 201, 503]);
    // Sagas that took 5 s while everything was cold: the bound stays.
    for (let i = 0; i < 50; i++) warm.backlog.finished(5);
    expect(await warm.bound()).toBe(pending + 3);
    // Once sagas run on time in a row, the path is warm: the warm-up bound no longer holds.
    for (let i = 0; i < 50; i++) warm.backlog.finished(0.1);
    expect(await warm.bound()).toBeLessThan(pending + 3);
    warm.backlog.stop();

    const settled = await guarded(0, { limit: pending + 20, warmUpLimit: pending + 40 });
    expect(await settled.bound()).toBe(pending + 20);
    for (let i = 0; i < 50; i++) settled.backlog.finished(5);
    expect(await settled.bound()).toBeLessThan(pending + 20);
    settled.backlog.stop();
  });
});
