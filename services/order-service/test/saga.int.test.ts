/**
 * The whole saga: the order-service and two user-service instances in one consumer group, in this
 * process, with a stand-in relay publishing both outboxes.
 */
import { randomUUID } from "node:crypto";
import { type Order, TOPICS, type User } from "@saga/contracts";
import { createPgDatabase, userSchema } from "@saga/db";
import { orders, outbox } from "@saga/db/order";
import { reservations, users } from "@saga/db/user";
import { createKafka, type KafkaClient } from "@saga/kafka";
import { metricValue, type OutboxPublisher, startOutboxPublisher } from "@saga/messaging/testing";
import { createLogger } from "@saga/observability";
import { kafkaBrokers, useFreshDatabase } from "@saga/tools/test/harness";
import { createUserService, type UserService } from "@saga/user-service";
import { and, eq, inArray, sum } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import type { OrderService } from "../src/service.ts";
import { freshTopicPrefix, openDatabase, startInProcess, testEnv } from "./support.ts";

const orderDatabaseUrl = useFreshDatabase("saga_order");
const userDatabaseUrl = useFreshDatabase("saga_user");
let prefix: string;
let orderService: OrderService;
const userServices: UserService[] = [];
let orderDb: ReturnType<typeof openDatabase>;
let userDb: ReturnType<typeof createPgDatabase<typeof userSchema>>;
let kafka: KafkaClient;
let publisher: OutboxPublisher;

beforeAll(async () => {
  prefix = await freshTopicPrefix();
  orderService = await startInProcess(testEnv(orderDatabaseUrl(), prefix));
  const logger = createLogger("user-service", process.env.TEST_LOG_LEVEL ?? "error");
  for (const instance of ["a", "b"]) {
    const userService = await createUserService(
      {
        ...testEnv(userDatabaseUrl(), prefix),
        INSTANCE_ID: instance,
        CONSUMER_GROUP: `${prefix}user-service`,
      },
      { logger },
    );
    userServices.push(userService);
  }
  await Promise.all([orderService.start(), ...userServices.map((s) => s.start())]);
  // Both user-service instances hold partitions before any event flows.
  await vi.waitFor(() => expect(userServices.every((s) => s.runtime.isConsuming())).toBe(true), {
    timeout: 30_000,
    interval: 50,
  });
  orderDb = openDatabase(orderDatabaseUrl());
  userDb = createPgDatabase(userDatabaseUrl(), userSchema, { max: 3 });
  kafka = createKafka({ brokers: kafkaBrokers(), clientId: "saga-test" });
  publisher = await startOutboxPublisher({ kafka, topicPrefix: prefix, databases: [orderDb.db, userDb.db] });
});

afterAll(async () => {
  await publisher?.stop();
  await kafka?.close();
  await Promise.all([orderService?.stop(), ...userServices.map((s) => s.stop())]);
  await Promise.all([orderDb?.close(), userDb?.close()]);
});

const waitFor = <T>(check: () => Promise<T>, timeout = 20_000) =>
  vi.waitFor(check, { timeout, interval: 50 });
/** The user-service instance `i`'s app; both serve the same database. */
function userApp(i: 0 | 1) {
  const service = userServices[i];
  if (!service) throw new Error(`user-service ${i} did not start`);
  return service.app;
}

async function createUser(initialBalance: number): Promise<string> {
  const res = await userApp(0).request("/users", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ username: `saga-${randomUUID()}`, initialBalance }),
  });
  expect(res.status).toBe(201);
  return ((await res.json()) as User).id;
}

async function placeOrder(userId: string, amount: number): Promise<string> {
  const res = await orderService.app.request("/orders", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ userId, amount }),
  });
  expect(res.status).toBe(201);
  return ((await res.json()) as Order).id;
}

async function orderStatus(orderId: string) {
  const res = await orderService.app.request(`/orders/${orderId}`);
  return ((await res.json()) as Order).status;
}

async function balance(userId: string) {
  // Read through the other instance than the one that created the user.
  const res = await userApp(1).request(`/users/${userId}`);
  return ((await res.json()) as User).balance;
}

async function reservation(orderId: string) {
  const [row] = await userDb.db.select().from(reservations).where(eq(reservations.orderId, orderId));
  return row;
}

const userMetric = async (name: string, labels: Record<string, string>) =>
  (await Promise.all(userServices.map((s) => metricValue(s.runtime.metrics.registry, name, labels)))).reduce(
    (a, b) => a + b,
    0,
  );

describe("the order saga", () => {
  it("confirms an order the user can pay: user 5000, order 1000 → CONFIRMED, balance 4000", async () => {
    const userId = await createUser(5000);
    const orderId = await placeOrder(userId, 1000);
    await waitFor(async () => expect(await orderStatus(orderId)).toBe("CONFIRMED"));

    expect(await balance(userId)).toBe(4000);
    expect(await reservation(orderId)).toMatchObject({ status: "RESERVED", amount: 1000, userId });
    const [row] = await orderDb.db.select().from(orders).where(eq(orders.id, orderId));
    expect(row).toMatchObject({ status: "CONFIRMED", cancelReason: null });
  });

  it("cancels an order above the balance and moves no money, also when it is deleted afterwards", async () => {
    const userId = await createUser(500);
    const orderId = await placeOrder(userId, 501);
    await waitFor(async () => expect(await orderStatus(orderId)).toBe("CANCELED"));

    expect(await balance(userId)).toBe(500);
    expect(await reservation(orderId)).toMatchObject({ status: "REJECTED", reason: "INSUFFICIENT_FUNDS" });
    const [row] = await orderDb.db.select().from(orders).where(eq(orders.id, orderId));
    expect(row).toMatchObject({ status: "CANCELED", cancelReason: "INSUFFICIENT_FUNDS" });

    const deleted = await orderService.app.request(`/orders/${orderId}`, { method: "DELETE" });
    expect(deleted.status).toBe(204);
    expect(await orderStatus(orderId)).toBe("CANCELED");
    // Canceling a canceled order emits nothing, so there is nothing for the user-service to do.
    const emitted = await orderDb.db.select().from(outbox).where(eq(outbox.aggregateId, orderId));
    expect(emitted.map((e) => e.topic)).toEqual([TOPICS.orderCreated]);
    expect(await balance(userId)).toBe(500);
  });

  it("compensates a deleted CONFIRMED order exactly once, even when order.canceled is delivered twice", async () => {
    const userId = await createUser(5000);
    const orderId = await placeOrder(userId, 1000);
    await waitFor(async () => expect(await orderStatus(orderId)).toBe("CONFIRMED"));
    expect(await balance(userId)).toBe(4000);

    expect((await orderService.app.request(`/orders/${orderId}`, { method: "DELETE" })).status).toBe(204);
    await waitFor(async () => expect(await reservation(orderId)).toMatchObject({ status: "RELEASED" }));
    expect(await balance(userId)).toBe(5000);
    expect(await orderStatus(orderId)).toBe("CANCELED");

    // The relay may publish a row twice (a crash between send and mark): the inbox absorbs it.
    const [canceled] = await orderDb.db
      .select()
      .from(outbox)
      .where(and(eq(outbox.aggregateId, orderId), eq(outbox.topic, TOPICS.orderCanceled)));
    const duplicatesBefore = await userMetric("saga_inbox_duplicates_total", { topic: TOPICS.orderCanceled });
    await publisher.republish(orderDb.db, canceled?.id ?? "");
    await waitFor(async () =>
      expect(await userMetric("saga_inbox_duplicates_total", { topic: TOPICS.orderCanceled })).toBe(
        duplicatesBefore + 1,
      ),
    );
    expect(await balance(userId)).toBe(5000);
    expect(await reservation(orderId)).toMatchObject({ status: "RELEASED" });
  });

  it("never overdraws: 50 concurrent orders of 100 against 1000 on two instances → 10 CONFIRMED, balance 0", async () => {
    const userId = await createUser(1000);
    const appliedBefore = await Promise.all(
      userServices.map((s) =>
        metricValue(s.runtime.metrics.registry, "saga_events_applied_total", { topic: TOPICS.orderCreated }),
      ),
    );
    const orderIds = await Promise.all(Array.from({ length: 50 }, () => placeOrder(userId, 100)));
    await waitFor(async () => {
      const pending = await orderDb.db
        .select()
        .from(orders)
        .where(and(inArray(orders.id, orderIds), eq(orders.status, "PENDING")));
      expect(pending).toHaveLength(0);
    }, 60_000);

    const final = await orderDb.db.select().from(orders).where(inArray(orders.id, orderIds));
    expect(final.filter((o) => o.status === "CONFIRMED")).toHaveLength(10);
    expect(final.filter((o) => o.status === "CANCELED")).toHaveLength(40);
    expect(await balance(userId)).toBe(0);

    // The ledger agrees: CONFIRMED exactly when RESERVED, and the balance is the initial one minus those.
    const ledger = await userDb.db.select().from(reservations).where(inArray(reservations.orderId, orderIds));
    const reservedIds = new Set(ledger.filter((r) => r.status === "RESERVED").map((r) => r.orderId));
    expect(new Set(final.filter((o) => o.status === "CONFIRMED").map((o) => o.id))).toEqual(reservedIds);
    const [debited] = await userDb.db
      .select({ total: sum(reservations.amount) })
      .from(reservations)
      .where(and(eq(reservations.userId, userId), eq(reservations.status, "RESERVED")));
    const [user] = await userDb.db.select().from(users).where(eq(users.id, userId));
    expect((user?.initialBalance ?? 0) - Number(debited?.total)).toBe(user?.balance);

    // Both instances took part.
    const appliedAfter = await Promise.all(
      userServices.map((s) =>
        metricValue(s.runtime.metrics.registry, "saga_events_applied_total", { topic: TOPICS.orderCreated }),
      ),
    );
    expect(appliedAfter.map((n, i) => n - (appliedBefore[i] ?? 0)).every((n) => n > 0)).toBe(true);
  });
});
