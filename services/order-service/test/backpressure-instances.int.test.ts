/**
 * The saga backlog's bound with several order-service instances. Each one counts the sagas in flight of
 * the whole system (the PENDING orders of `order_db`), so it must size its bound by the whole system's
 * throughput too, not by what its own consumer finished: in one consumer group each of N instances applies
 * about 1/N of the answers. Two instances in one group and a third whose consumer has not joined (it
 * decides none of the sagas, as one still joining, or one beyond the partitions), a user-service and a
 * stand-in relay, in this process on a real PostgreSQL and Kafka.
 */
import { randomUUID } from "node:crypto";
import { type Order, type User } from "@saga/contracts";
import { createPgDatabase, userSchema } from "@saga/db";
import { orders } from "@saga/db/order";
import { createKafka, type KafkaClient } from "@saga/kafka";
import { metricValue, type OutboxPublisher, startOutboxPublisher } from "@saga/messaging/testing";
import { createLogger } from "@saga/observability";
import { kafkaBrokers, useFreshDatabase } from "@saga/tools/test/harness";
import { createUserService, type UserService } from "@saga/user-service";
import { and, eq, inArray } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import type { OrderService } from "../src/service.ts";
import { freshTopicPrefix, openDatabase, startInProcess, testEnv } from "./support.ts";

const orderDatabaseUrl = useFreshDatabase("backlog_instances_order");
const userDatabaseUrl = useFreshDatabase("backlog_instances_user");
let prefix: string;
// a and b consume in one group; c's consumer has not joined.
let a: OrderService;
let b: OrderService;
let c: OrderService;
let userService: UserService;
let orderDb: ReturnType<typeof openDatabase>;
let userDb: ReturnType<typeof createPgDatabase<typeof userSchema>>;
let kafka: KafkaClient;
let publisher: OutboxPublisher;

beforeAll(async () => {
  prefix = await freshTopicPrefix();
  const instance = (id: string, overrides = {}) =>
    startInProcess(testEnv(orderDatabaseUrl(), prefix, { INSTANCE_ID: id, ...overrides }));
  a = await instance("a");
  b = await instance("b");
  // A floor of 1 and a target of a minute: any throughput it hears of lifts its bound above the floor.
  c = await instance("c", { SAGA_BACKLOG_MIN: 1, SAGA_TARGET_MS: 60_000 });
  userService = await createUserService(
    { ...testEnv(userDatabaseUrl(), prefix), CONSUMER_GROUP: `${prefix}user-service` },
    { logger: createLogger("user-service", process.env.TEST_LOG_LEVEL ?? "error") },
  );
  // c counts its backlog as a started instance does, but never joins the group.
  await Promise.all([a.start(), b.start(), c.backlog.start(), userService.start()]);
  await vi.waitFor(() => expect(a.runtime.isConsuming() && b.runtime.isConsuming()).toBe(true), {
    timeout: 30_000,
    interval: 50,
  });
  orderDb = openDatabase(orderDatabaseUrl());
  userDb = createPgDatabase(userDatabaseUrl(), userSchema, { max: 3 });
  kafka = createKafka({ brokers: kafkaBrokers(), clientId: "backlog-instances-test" });
  publisher = await startOutboxPublisher({ kafka, topicPrefix: prefix, databases: [orderDb.db, userDb.db] });
});

afterAll(async () => {
  await publisher?.stop();
  await kafka?.close();
  await Promise.all([a?.stop(), b?.stop(), c?.stop(), userService?.stop()]);
  await Promise.all([orderDb?.close(), userDb?.close()]);
});

const waitFor = <T>(check: () => Promise<T>, timeout = 30_000) =>
  vi.waitFor(check, { timeout, interval: 50 });

const metric = (service: OrderService, name: string) => metricValue(service.runtime.metrics.registry, name);

async function createUser(initialBalance: number): Promise<string> {
  const res = await userService.app.request("/users", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ username: `backlog-${randomUUID()}`, initialBalance }),
  });
  expect(res.status).toBe(201);
  return ((await res.json()) as User).id;
}

async function placeOrder(service: OrderService, userId: string, amount: number): Promise<string> {
  const res = await service.app.request("/orders", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ userId, amount }),
  });
  expect(res.status).toBe(201);
  return ((await res.json()) as Order).id;
}

describe("the saga backlog's bound with several order-service instances", () => {
  it("sizes every instance's bound by the sagas every instance finished, its own consumer's or not", async () => {
    const heard = "saga_finished_anywhere_total";
    const [heardBefore, finishedBefore] = await Promise.all([
      Promise.all([a, b, c].map((s) => metric(s, heard).catch(() => 0))),
      Promise.all([a, b, c].map((s) => metric(s, "saga_outcomes_total"))),
    ]);
    // Twelve sagas through a and b: eight confirmed, four refused for want of credit (the user-service's
    // answer finishes those too).
    const rich = await createUser(1_000_000);
    const poor = await createUser(10);
    const orderIds = await Promise.all(
      Array.from({ length: 12 }, (_, i) => placeOrder(i % 2 ? a : b, i % 3 === 2 ? poor : rich, 100)),
    );
    await waitFor(async () => {
      const pending = await orderDb.db
        .select()
        .from(orders)
        .where(and(inArray(orders.id, orderIds), eq(orders.status, "PENDING")));
      expect(pending).toHaveLength(0);
    });
    const final = await orderDb.db.select().from(orders).where(inArray(orders.id, orderIds));
    expect(final.filter((o) => o.status === "CONFIRMED")).toHaveLength(8);
    expect(final.filter((o) => o.cancelReason === "INSUFFICIENT_FUNDS")).toHaveLength(4);

    // a's and b's consumers applied all twelve answers between them; c's none. A consumer counts a batch's
    // outcomes once its transaction has committed, so the count may follow the orders' rows by a moment.
    await waitFor(async () => {
      const finished = await Promise.all([a, b, c].map((s) => metric(s, "saga_outcomes_total")));
      const [byA, byB, byC] = finished.map((n, i) => n - (finishedBefore[i] ?? 0));
      expect((byA ?? 0) + (byB ?? 0)).toBe(12);
      expect(byC).toBe(0);
    });

    // Yet c has seen the saga's throughput: its bound is sized by it, above the floor, as a and b's.
    await waitFor(async () => expect(await metric(c, "saga_throughput")).toBeGreaterThan(0));
    expect(await metric(c, "saga_backlog_limit")).toBeGreaterThan(1);
    // Every instance heard of every saga finished, whichever consumer applied its answer: their
    // throughputs are measured on the same sagas.
    await waitFor(async () => {
      const now = await Promise.all([a, b, c].map((s) => metric(s, heard)));
      expect(now.map((n, i) => n - (heardBefore[i] ?? 0))).toEqual([12, 12, 12]);
    });
  });
});
