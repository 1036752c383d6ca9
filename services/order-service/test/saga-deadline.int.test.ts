/**
 * Saga deadlines: a PENDING order past SAGA_TIMEOUT ends CANCELED with reason TIMEOUT and emits
 * `order.canceled`, and the user's money is whole whether the reservation came before the timeout or
 * after it. Two order-service instances and a user-service in this process on a real PostgreSQL and
 * Kafka; the test publishes the outbox rows itself, one at a time, to choose the order in which each
 * service sees them. An order is aged by moving its `created_at` back: the sweepers run on their timers
 * with a deadline no test waits for.
 */
import { randomUUID } from "node:crypto";
import { decodeEvent, HEADERS, type Order, TOPICS, type User } from "@saga/contracts";
import { createPgDatabase, migrateDatabase, outbox, userSchema } from "@saga/db";
import { inbox, orders } from "@saga/db/order";
import { reservations } from "@saga/db/user";
import { createKafka, type EventProducer, type KafkaClient } from "@saga/kafka";
import { type Executor, outboxMessage, outboxRow } from "@saga/messaging";
import { metricValue } from "@saga/messaging/testing";
import { createLogger, createMetrics } from "@saga/observability";
import { freshDatabase, kafkaBrokers, useFreshDatabase } from "@saga/tools/test/harness";
import { createUserService, type UserService } from "@saga/user-service";
import { and, asc, eq, inArray, isNull, sql } from "drizzle-orm";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it, onTestFinished, vi } from "vitest";
import { CANCEL_OVERDUE, cancelOverdueSagas } from "../src/domain/saga-deadline.ts";
import { createSagaMetrics } from "../src/metrics.ts";
import { createSagaDeadlines } from "../src/saga-deadlines.ts";
import type { OrderService } from "../src/service.ts";
import { freshTopicPrefix, openDatabase, startInProcess, testEnv } from "./support.ts";

const orderDatabaseUrl = useFreshDatabase("deadline_order");
const userDatabaseUrl = useFreshDatabase("deadline_user");
// Long enough that no saga of this file reaches it unless the test ages its order.
const TIMEOUT_MS = 120_000;
let prefix: string;
const orderServices: OrderService[] = [];
let userService: UserService;
let orderDb: ReturnType<typeof openDatabase>;
let userDb: ReturnType<typeof createPgDatabase<typeof userSchema>>;
let kafka: KafkaClient;
let producer: EventProducer;

beforeAll(async () => {
  prefix = await freshTopicPrefix();
  for (const instance of ["a", "b"]) {
    orderServices.push(
      await startInProcess(
        testEnv(orderDatabaseUrl(), prefix, {
          INSTANCE_ID: instance,
          SAGA_TIMEOUT: TIMEOUT_MS,
          SAGA_SWEEP_INTERVAL_MS: 100,
          // Small batches, so that a burst of overdue orders takes several statements on both instances.
          SAGA_SWEEP_BATCH: 7,
        }),
      ),
    );
  }
  userService = await createUserService(
    { ...testEnv(userDatabaseUrl(), prefix), CONSUMER_GROUP: `${prefix}user-service` },
    { logger: createLogger("user-service", process.env.TEST_LOG_LEVEL ?? "error") },
  );
  await Promise.all([...orderServices.map((s) => s.start()), userService.start()]);
  orderDb = openDatabase(orderDatabaseUrl());
  userDb = createPgDatabase(userDatabaseUrl(), userSchema, { max: 3 });
  kafka = createKafka({ brokers: kafkaBrokers(), clientId: "saga-deadline-test" });
  producer = await kafka.createProducer();
});

afterAll(async () => {
  await producer?.close();
  await kafka?.close();
  await Promise.all([...orderServices.map((s) => s.stop()), userService?.stop()]);
  await Promise.all([orderDb?.close(), userDb?.close()]);
});

const waitFor = <T>(check: () => Promise<T>, timeout = 30_000) =>
  vi.waitFor(check, { timeout, interval: 50 });

const orderApp = (i: number) => {
  const service = orderServices[i % orderServices.length];
  if (!service) throw new Error("the order-services did not start");
  return service.app;
};

/** Sums a metric over both order-service instances. */
const orderMetric = async (name: string, labels: Record<string, string>) =>
  (await Promise.all(orderServices.map((s) => metricValue(s.runtime.metrics.registry, name, labels)))).reduce(
    (a, b) => a + b,
    0,
  );

async function createUser(initialBalance: number): Promise<string> {
  const res = await userService.app.request("/users", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ username: `deadline-${randomUUID()}`, initialBalance }),
  });
  expect(res.status).toBe(201);
  return ((await res.json()) as User).id;
}

async function placeOrder(userId: string, amount: number, i = 0): Promise<string> {
  const res = await orderApp(i).request("/orders", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ userId, amount }),
  });
  expect(res.status).toBe(201);
  return ((await res.json()) as Order).id;
}

/** Moves the orders' creation back past the deadline, as if they had waited that long. */
async function age(orderIds: string[]) {
  await orderDb.db
    .update(orders)
    .set({ createdAt: sql`${orders.createdAt} - ${`${TIMEOUT_MS + 1000} milliseconds`}::interval` })
    .where(inArray(orders.id, orderIds));
}

async function orderRow(orderId: string) {
  const [row] = await orderDb.db.select().from(orders).where(eq(orders.id, orderId));
  return row;
}

async function balance(userId: string) {
  const res = await userService.app.request(`/users/${userId}`);
  return ((await res.json()) as User).balance;
}

async function reservation(orderId: string) {
  const [row] = await userDb.db.select().from(reservations).where(eq(reservations.orderId, orderId));
  return row;
}

/**
 * Publishes the unpublished outbox rows of one order on one topic and marks them, as the relay would:
 * the test decides which event each service sees when. Resolves with their event ids.
 */
async function publish(db: Executor, orderId: string, topic: string): Promise<string[]> {
  const rows = await db
    .select()
    .from(outbox)
    .where(and(isNull(outbox.publishedAt), eq(outbox.aggregateId, orderId), eq(outbox.topic, topic)))
    .orderBy(asc(outbox.position));
  expect(rows.length, `an unpublished ${topic} of ${orderId}`).toBeGreaterThan(0);
  await producer.send(rows.map((r) => outboxMessage(r, prefix)));
  await db
    .update(outbox)
    .set({ publishedAt: new Date() })
    .where(
      inArray(
        outbox.id,
        rows.map((r) => r.id),
      ),
    );
  return rows.map((r) => r.id);
}

/** Resolves once order-service has applied these events (their inbox rows). */
async function appliedByOrderService(eventIds: string[]) {
  await waitFor(async () =>
    expect(await orderDb.db.select().from(inbox).where(inArray(inbox.eventId, eventIds))).toHaveLength(
      eventIds.length,
    ),
  );
}

async function canceledEvents(orderId: string) {
  return orderDb.db
    .select()
    .from(outbox)
    .where(and(eq(outbox.aggregateId, orderId), eq(outbox.topic, TOPICS.orderCanceled)));
}

async function timedOut(orderId: string) {
  await waitFor(async () =>
    expect(await orderRow(orderId)).toMatchObject({ status: "CANCELED", cancelReason: "TIMEOUT" }),
  );
}

describe("a saga past its deadline", () => {
  it("is canceled with TIMEOUT and releases a reservation made before the timeout, once; a late credit-reserved changes nothing", async () => {
    const userId = await createUser(5000);
    const orderId = await placeOrder(userId, 1000);
    const timeoutsBefore = await orderMetric("saga_outcomes_total", {
      outcome: "canceled",
      reason: "TIMEOUT",
    });

    // The user-service reserves; its answer is not published (a lost or dead-lettered reply).
    await publish(orderDb.db, orderId, TOPICS.orderCreated);
    await waitFor(async () => expect(await reservation(orderId)).toMatchObject({ status: "RESERVED" }));
    expect(await balance(userId)).toBe(4000);
    expect(await orderRow(orderId)).toMatchObject({ status: "PENDING" });

    await age([orderId]);
    await timedOut(orderId);
    const [event, ...more] = await canceledEvents(orderId);
    expect(more).toEqual([]);
    // The payload the statement built in SQL is byte for byte the contract's.
    expect(event?.payload).toBe(
      outboxRow({
        topic: TOPICS.orderCanceled,
        aggregateId: orderId,
        payload: { orderId, userId, amount: 1000 },
      }).payload,
    );
    expect(event?.eventType).toBe("OrderCanceled");
    // A version 7 id, as every outbox row's (`newRowId`), not the column's random default.
    expect(event?.id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab]/);
    expect((event?.headers as Record<string, string>)[HEADERS.traceparent]).toMatch(/^00-[0-9a-f]{32}-/);
    const message = outboxMessage(event as NonNullable<typeof event>);
    expect(decodeEvent(TOPICS.orderCanceled, message.headers, message.value)).toMatchObject({
      ok: true,
      event: { payload: { orderId, userId, amount: 1000 } },
    });
    expect(await orderMetric("saga_outcomes_total", { outcome: "canceled", reason: "TIMEOUT" })).toBe(
      timeoutsBefore + 1,
    );

    await publish(orderDb.db, orderId, TOPICS.orderCanceled);
    await waitFor(async () => expect(await reservation(orderId)).toMatchObject({ status: "RELEASED" }));
    expect(await balance(userId)).toBe(5000);

    // The reply comes late: the order stays CANCELED and no money moves.
    const ignoredBefore = await orderMetric("saga_events_ignored_total", {
      topic: TOPICS.creditReserved,
      state: "CANCELED",
    });
    await appliedByOrderService(await publish(userDb.db, orderId, TOPICS.creditReserved));
    expect(await orderRow(orderId)).toMatchObject({ status: "CANCELED", cancelReason: "TIMEOUT" });
    expect(
      await orderMetric("saga_events_ignored_total", { topic: TOPICS.creditReserved, state: "CANCELED" }),
    ).toBe(ignoredBefore + 1);
    expect(await balance(userId)).toBe(5000);
    expect(await canceledEvents(orderId)).toHaveLength(1);
  });

  it("releases a reservation made after the timeout (order.created reaches the user-service first), once", async () => {
    const userId = await createUser(5000);
    const orderId = await placeOrder(userId, 1000);
    await age([orderId]);
    await timedOut(orderId);

    // Kafka delivers order.created before order.canceled: the user-service reserves a canceled order.
    await publish(orderDb.db, orderId, TOPICS.orderCreated);
    await waitFor(async () => expect(await reservation(orderId)).toMatchObject({ status: "RESERVED" }));
    expect(await balance(userId)).toBe(4000);
    await appliedByOrderService(await publish(userDb.db, orderId, TOPICS.creditReserved));
    expect(await orderRow(orderId)).toMatchObject({ status: "CANCELED", cancelReason: "TIMEOUT" });

    await publish(orderDb.db, orderId, TOPICS.orderCanceled);
    await waitFor(async () => expect(await reservation(orderId)).toMatchObject({ status: "RELEASED" }));
    expect(await balance(userId)).toBe(5000);
    expect(await canceledEvents(orderId)).toHaveLength(1);
  });

  it("moves no money when order.canceled reaches the user-service before order.created", async () => {
    const userId = await createUser(5000);
    const orderId = await placeOrder(userId, 1000);
    await age([orderId]);
    await timedOut(orderId);

    await publish(orderDb.db, orderId, TOPICS.orderCanceled);
    await waitFor(async () => expect(await reservation(orderId)).toMatchObject({ status: "CANCELED" }));
    await publish(orderDb.db, orderId, TOPICS.orderCreated);
    await waitFor(async () =>
      expect(
        await userDb.db
          .select()
          .from(outbox)
          .where(and(eq(outbox.aggregateId, orderId), eq(outbox.topic, TOPICS.creditReservationFailed))),
      ).toHaveLength(1),
    );
    expect(await balance(userId)).toBe(5000);
    await appliedByOrderService(await publish(userDb.db, orderId, TOPICS.creditReservationFailed));
    expect(await orderRow(orderId)).toMatchObject({ status: "CANCELED", cancelReason: "TIMEOUT" });
    expect(await balance(userId)).toBe(5000);
  });

  it("is canceled once when two order-service instances sweep at once", async () => {
    const userId = await createUser(0);
    const orderIds = await Promise.all(Array.from({ length: 60 }, (_, i) => placeOrder(userId, 10, i)));
    const timeoutsBefore = await orderMetric("saga_outcomes_total", {
      outcome: "canceled",
      reason: "TIMEOUT",
    });
    await age(orderIds);
    await waitFor(async () => {
      const left = await orderDb.db
        .select()
        .from(orders)
        .where(and(inArray(orders.id, orderIds), eq(orders.status, "PENDING")));
      expect(left).toHaveLength(0);
    });
    const final = await orderDb.db.select().from(orders).where(inArray(orders.id, orderIds));
    expect(final.every((o) => o.status === "CANCELED" && o.cancelReason === "TIMEOUT")).toBe(true);
    const events = await orderDb.db
      .select({ orderId: outbox.aggregateId, n: sql<number>`count(*)::int` })
      .from(outbox)
      .where(and(inArray(outbox.aggregateId, orderIds), eq(outbox.topic, TOPICS.orderCanceled)))
      .groupBy(outbox.aggregateId);
    expect(events).toHaveLength(orderIds.length);
    expect(events.every((e) => e.n === 1)).toBe(true);
    // Counted once too, whichever instance canceled it.
    expect(await orderMetric("saga_outcomes_total", { outcome: "canceled", reason: "TIMEOUT" })).toBe(
      timeoutsBefore + orderIds.length,
    );
  });

  it("reports the PENDING orders by age, and the deadline", async () => {
    const userId = await createUser(0);
    const orderId = await placeOrder(userId, 10);
    const registry = orderServices[0]?.runtime.metrics.registry;
    if (!registry) throw new Error("no order-service");
    expect(await metricValue(registry, "saga_deadline_seconds")).toBe(TIMEOUT_MS / 1000);
    // 30 s old: between 10 s and the deadline for the next 90 s.
    await orderDb.db
      .update(orders)
      .set({ createdAt: sql`${orders.createdAt} - interval '30 seconds'` })
      .where(eq(orders.id, orderId));
    await waitFor(async () => {
      expect(await metricValue(registry, "saga_pending_orders", { age: "10s-deadline" })).toBe(1);
      expect(await metricValue(registry, "saga_pending_oldest_age_seconds")).toBeGreaterThanOrEqual(30);
    });
    expect(await metricValue(registry, "saga_pending_orders", { age: "past-deadline" })).toBe(0);

    // With no sweep (they fail, say), the oldest age goes on growing rather than standing still.
    const service = orderServices[0];
    await service?.deadlines.stop();
    const before = await metricValue(registry, "saga_pending_oldest_age_seconds");
    await new Promise((r) => setTimeout(r, 1100));
    expect(await metricValue(registry, "saga_pending_oldest_age_seconds")).toBeGreaterThanOrEqual(before + 1);
    service?.deadlines.start();

    await age([orderId]);
    await timedOut(orderId);
  });
});

describe("cancelOverdueSagas", () => {
  const traceparent = `00-${"a".repeat(32)}-${"b".repeat(16)}-01`;

  async function sweepDatabase() {
    const url = await freshDatabase("deadline_sweep");
    await migrateDatabase(url, "order");
    const pools = [0, 1].map(() => {
      const pool = new pg.Pool({ connectionString: url, max: 2 });
      // The database is dropped WITH (FORCE) as the test ends: a connection still closing then hears
      // 57P01 outside any query, which nobody is left to handle; the pool passes an idle client's error
      // on as its own (seen once: an uncaught 57P01 failed the run). Errors of queries still reject them.
      pool.on("connect", (client) => client.on("error", () => {}));
      pool.on("error", () => {});
      return pool;
    });
    onTestFinished(() => Promise.all(pools.map((p) => p.end())).then(() => {}));
    return { pools: pools as [pg.Pool, pg.Pool] };
  }

  /** Inserts `n` orders created `secondsAgo` seconds ago with one statement. */
  async function insertOrders(pool: pg.Pool, n: number, secondsAgo: number, status = "PENDING") {
    const { rows } = await pool.query<{ id: string }>(
      `insert into orders (user_id, amount, status, created_at)
       select gen_random_uuid(), 100, $2, now() - $3 * interval '1 second' from generate_series(1, $1)
       returning id`,
      [n, status, secondsAgo],
    );
    return rows.map((r) => r.id);
  }

  it("cancels each overdue order once with two sweepers at once, and leaves the rest alone", async () => {
    const { pools } = await sweepDatabase();
    const [a, b] = pools;
    const overdue = await insertOrders(a, 300, 3600);
    const young = await insertOrders(a, 5, 1);
    const confirmed = await insertOrders(a, 5, 3600, "CONFIRMED");

    // Each sweeper goes on until a statement finds nothing; batches of 10 make them meet often.
    const sweeper = async (pool: pg.Pool) => {
      let canceled = 0;
      for (;;) {
        const { canceledSagaSeconds } = await cancelOverdueSagas(pool, {
          timeoutMs: 60_000,
          batch: 10,
          traceparent,
        });
        canceled += canceledSagaSeconds.length;
        if (canceledSagaSeconds.length === 0) return canceled;
      }
    };
    const counts = await Promise.all([sweeper(a), sweeper(b), sweeper(a), sweeper(b)]);
    expect(counts.reduce((x, y) => x + y, 0)).toBe(overdue.length);

    const { rows: statuses } = await a.query<{ status: string; reason: string | null; n: number }>(
      `select status, cancel_reason as reason, count(*)::int as n from orders group by 1, 2 order by 1, 2`,
    );
    expect(statuses).toEqual([
      { status: "CANCELED", reason: "TIMEOUT", n: 300 },
      { status: "CONFIRMED", reason: null, n: 5 },
      { status: "PENDING", reason: null, n: 5 },
    ]);
    const { rows: events } = await a.query<{ aggregate_id: string; n: number }>(
      `select aggregate_id, count(*)::int as n from outbox where topic = 'order.canceled' group by 1`,
    );
    expect(events.map((e) => e.aggregate_id).sort()).toEqual([...overdue].sort());
    expect(events.every((e) => e.n === 1)).toBe(true);
    for (const id of [...young, ...confirmed])
      expect(events.find((e) => e.aggregate_id === id)).toBeUndefined();
  });

  it("leaves an order whose aggregate lock is held (a consumer or DELETE deciding it) to the next sweep", async () => {
    const { pools } = await sweepDatabase();
    const [a, b] = pools;
    const [held, free] = await insertOrders(a, 2, 3600);
    const holder = await b.connect();
    try {
      await holder.query("begin");
      await holder.query("select pg_advisory_xact_lock(hashtextextended($1, 0))", [held]);
      const first = await cancelOverdueSagas(a, { timeoutMs: 60_000, batch: 10, traceparent });
      expect(first.canceledSagaSeconds).toHaveLength(1);
      // The held order is still PENDING and past the deadline: the gauges see it.
      expect(first.pendingAges).toHaveLength(1);
      expect(first.pendingAges[0]).toBeGreaterThan(3600);
      const { rows } = await a.query("select id, status from orders order by status");
      expect(rows).toEqual([
        { id: free, status: "CANCELED" },
        { id: held, status: "PENDING" },
      ]);
      await holder.query("commit");
    } finally {
      holder.release();
    }
    const second = await cancelOverdueSagas(a, { timeoutMs: 60_000, batch: 10, traceparent });
    expect(second).toEqual({ canceledSagaSeconds: [expect.any(Number)], pendingAges: [] });
  });

  it("names in its sweep's line the trace its order.canceled events carry", async () => {
    const { pools } = await sweepDatabase();
    const [a] = pools;
    const overdue = await insertOrders(a, 3, 3600);
    const logged: Record<string, unknown>[] = [];
    const { registry } = createMetrics("order-service", "sweeping");
    const deadlines = createSagaDeadlines({
      pool: a,
      timeoutMs: 60_000,
      intervalMs: 60_000,
      batch: 10,
      saga: createSagaMetrics(registry),
      logger: createLogger("order-service", "info", {
        destination: { write: (line: string) => void logged.push(JSON.parse(line)) },
      }),
      registry,
    });
    expect(await deadlines.sweep()).toBe(3);
    const { rows } = await a.query<{ trace: string }>(
      `select distinct substr(headers->>'traceparent', 4, 32) as trace from outbox
       where topic = 'order.canceled' and aggregate_id = any($1)`,
      [overdue],
    );
    // One trace for the sweep: an order's own is not at hand (design.md, Saga deadline).
    expect(rows).toHaveLength(1);
    expect(logged.filter((l) => l.msg === "canceled sagas past their deadline")).toEqual([
      expect.objectContaining({ canceled: 3, traceId: rows[0]?.trace }),
    ]);
  });

  it("finds overdue orders by the partial index, whatever the number of finished ones", async () => {
    const { pools } = await sweepDatabase();
    const [a] = pools;
    await a.query(
      `insert into orders (user_id, amount, status, created_at)
       select gen_random_uuid(), 100, 'CONFIRMED', now() - interval '1 day' from generate_series(1, 20000)`,
    );
    await insertOrders(a, 3, 10);
    await a.query("analyze orders");
    const { rows } = await a.query<{ "QUERY PLAN": string }>(`explain ${CANCEL_OVERDUE}`, [
      60_000,
      10,
      "TIMEOUT",
      "order.canceled",
      "OrderCanceled",
      "1",
      "{}",
    ]);
    const plan = rows.map((r) => r["QUERY PLAN"]).join("\n");
    expect(plan).toContain("orders_pending_created_at_idx");
    expect(plan).not.toMatch(/Seq Scan on orders/);
  });
});

it("stops at its deadline while a sweep waits on a frozen database", async () => {
  const url = await freshDatabase("deadline_stop");
  await migrateDatabase(url, "order");
  const service = await startInProcess(
    testEnv(url, prefix, { INSTANCE_ID: "stopping", SAGA_TIMEOUT: TIMEOUT_MS, SAGA_SWEEP_INTERVAL_MS: 50 }),
  );
  await service.start();
  // The orders table locked, as a frozen or overwhelmed server would leave a sweep: it waits, unanswered.
  const locker = new pg.Client({ connectionString: url });
  await locker.connect();
  onTestFinished(() => locker.end());
  await locker.query("begin");
  await locker.query("lock table orders in access exclusive mode");
  await waitFor(async () => {
    const { rows } = await locker.query(
      "select count(*)::int as n from pg_stat_activity where datname = current_database() and wait_event_type = 'Lock'",
    );
    expect(rows[0]?.n).toBeGreaterThan(0);
  });
  let unlocked = false;
  const unlock = setTimeout(() => {
    unlocked = true;
    void locker.query("commit");
  }, 8_000);
  onTestFinished(() => clearTimeout(unlock));

  await service.stop(AbortSignal.timeout(500));
  expect(unlocked, "stopped before the sweep could go on").toBe(false);
});
