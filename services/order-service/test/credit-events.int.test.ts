import { randomUUID } from "node:crypto";
import {
  DLQ_HEADERS,
  dlqTopic,
  HEADERS,
  type Order,
  prefixedTopic,
  type RejectionReason,
  TOPICS,
  type Topic,
} from "@saga/contracts";
import { migrateDatabase } from "@saga/db";
import { inbox, orders, outbox } from "@saga/db/order";
import { createKafka, type EventProducer, type KafkaClient, type OutgoingMessage } from "@saga/kafka";
import { claimEvents, inTransaction } from "@saga/messaging";
import {
  eventMessage,
  metricValue,
  type OutboxPublisher,
  startOutboxPublisher,
} from "@saga/messaging/testing";
import { freshDatabase, kafkaBrokers, useFreshDatabase } from "@saga/tools/test/harness";
import { and, eq } from "drizzle-orm";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it, onTestFinished, vi } from "vitest";
import { applyCreditBatch, WRITE_CHANGES } from "../src/domain/apply-credit-batch.ts";
import type { OrderService } from "../src/service.ts";
import { freshTopicPrefix, openDatabase, startInProcess, testEnv } from "./support.ts";

const databaseUrl = useFreshDatabase("order_credit_events");
let prefix: string;
let service: OrderService;
let db: ReturnType<typeof openDatabase>;
let kafka: KafkaClient;
let producer: EventProducer;
let publisher: OutboxPublisher;

beforeAll(async () => {
  prefix = await freshTopicPrefix();
  // A small retry budget (about 3 s), so that an answer for an order that never exists is dead-lettered
  // within a test's wait; a poison event is dead-lettered at once whatever the budget.
  service = await startInProcess(
    testEnv(databaseUrl(), prefix, {
      CONSUMER_RETRY_ATTEMPTS: 5,
      CONSUMER_RETRY_BACKOFF_MS: 200,
      CONSUMER_RETRY_BACKOFF_MAX_MS: 2000,
    }),
  );
  await service.start();
  db = openDatabase(databaseUrl());
  kafka = createKafka({ brokers: kafkaBrokers(), clientId: "order-credit-events-test" });
  producer = await kafka.createProducer();
  publisher = await startOutboxPublisher({ kafka, topicPrefix: prefix, databases: [db.db] });
});

afterAll(async () => {
  await publisher?.stop();
  await producer?.close();
  await kafka?.close();
  await service?.stop();
  await db?.close();
});

const waitFor = <T>(check: () => Promise<T>) => vi.waitFor(check, { timeout: 20_000, interval: 50 });
const metric = (name: string, labels: Record<string, string> = {}) =>
  metricValue(service.runtime.metrics.registry, name, labels);

async function placeOrder(amount = 100) {
  const res = await service.app.request("/orders", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ userId: randomUUID(), amount }),
  });
  expect(res.status).toBe(201);
  const order = (await res.json()) as Order;
  return { orderId: order.id, userId: order.userId, amount };
}

const cancel = (orderId: string) => service.app.request(`/orders/${orderId}`, { method: "DELETE" });

async function orderRow(orderId: string) {
  const [row] = await db.db.select().from(orders).where(eq(orders.id, orderId));
  return row;
}

const topicsOf = async (orderId: string) =>
  (await db.db.select().from(outbox).where(eq(outbox.aggregateId, orderId)).orderBy(outbox.position)).map(
    (r) => r.topic,
  );

async function applied(message: OutgoingMessage) {
  const eventId = message.headers[HEADERS.eventId] as string;
  await waitFor(async () =>
    expect(await db.db.select().from(inbox).where(eq(inbox.eventId, eventId))).toHaveLength(1),
  );
}

const reserved = (o: { orderId: string; userId: string; amount: number }) =>
  eventMessage(TOPICS.creditReserved, o, prefix);
const failed = (
  o: { orderId: string; userId: string; amount: number },
  reason: RejectionReason = "INSUFFICIENT_FUNDS",
) => eventMessage(TOPICS.creditReservationFailed, { ...o, reason }, prefix);

describe("user.credit-reserved", () => {
  it("confirms a PENDING order once, even when delivered twice, and counts the outcome", async () => {
    const o = await placeOrder();
    const confirmedBefore = await metric("saga_outcomes_total", { outcome: "confirmed" });
    const message = reserved(o);
    await producer.send([message, message]);
    await waitFor(async () =>
      expect(await metric("saga_inbox_duplicates_total", { topic: TOPICS.creditReserved })).toBeGreaterThan(
        0,
      ),
    );

    expect(await orderRow(o.orderId)).toMatchObject({ status: "CONFIRMED", cancelReason: null });
    expect(await metric("saga_outcomes_total", { outcome: "confirmed" })).toBe(confirmedBefore + 1);
    expect(await metric("saga_duration_seconds_count", { outcome: "confirmed" })).toBeGreaterThan(0);
    expect(await topicsOf(o.orderId)).toEqual([TOPICS.orderCreated]);
  });

  it("arriving after DELETE leaves the order CANCELED and is counted as ignored", async () => {
    const o = await placeOrder();
    expect((await cancel(o.orderId)).status).toBe(204);
    const ignoredBefore = await metric("saga_events_ignored_total", {
      topic: TOPICS.creditReserved,
      state: "CANCELED",
    });
    const message = reserved(o);
    await producer.send([message]);
    await applied(message);

    expect(await orderRow(o.orderId)).toMatchObject({
      status: "CANCELED",
      cancelReason: "CANCELED_BY_REQUEST",
    });
    expect(
      await metric("saga_events_ignored_total", { topic: TOPICS.creditReserved, state: "CANCELED" }),
    ).toBe(ignoredBefore + 1);
    // The order.canceled emitted by DELETE releases what was reserved; nothing more is emitted.
    expect(await topicsOf(o.orderId)).toEqual([TOPICS.orderCreated, TOPICS.orderCanceled]);
  });
});

describe("an answer for an order that does not exist", () => {
  const retries = () =>
    metric("saga_consumer_retries_total", { topic: TOPICS.creditReserved, failure: "unexpected" });

  it("is retried, and applied once the order is committed (an order not yet visible)", async () => {
    const o = { orderId: randomUUID(), userId: randomUUID(), amount: 100 };
    const [retriesBefore, dlqBefore] = [await retries(), await metric("saga_dlq_events_total")];
    const message = reserved(o);
    await producer.send([message]);
    // Tried, found no order, rolled back: no inbox row, the order not created by it either.
    await waitFor(async () => expect(await retries()).toBeGreaterThan(retriesBefore));
    expect(
      await db.db
        .select()
        .from(inbox)
        .where(eq(inbox.eventId, message.headers[HEADERS.eventId] as string)),
    ).toEqual([]);
    expect(await orderRow(o.orderId)).toBeUndefined();

    // The order's transaction commits after its answer arrived, as when the answer overtook it.
    await db.db
      .insert(orders)
      .values({ id: o.orderId, userId: o.userId, amount: o.amount, status: "PENDING" });
    await applied(message);
    expect(await orderRow(o.orderId)).toMatchObject({ status: "CONFIRMED" });
    expect(await metric("saga_dlq_events_total")).toBe(dlqBefore);
  });

  it("is dead-lettered once the retries are spent, not ignored", async () => {
    const o = { orderId: randomUUID(), userId: randomUUID(), amount: 100 };
    const topic = TOPICS.creditReservationFailed;
    const dlqBefore = await metric("saga_dlq_events_total", { topic, reason: "retries exhausted" });
    const ignoredBefore = await metric("saga_events_ignored_total", { topic });
    const message = failed(o);
    await producer.send([message]);
    await waitFor(async () =>
      expect(await metric("saga_dlq_events_total", { topic, reason: "retries exhausted" })).toBe(
        dlqBefore + 1,
      ),
    );
    const dead = await db.db
      .select()
      .from(outbox)
      .where(and(eq(outbox.topic, dlqTopic(topic)), eq(outbox.aggregateId, o.orderId)));
    expect(dead).toHaveLength(1);
    expect(dead[0]?.headers).toMatchObject({
      [DLQ_HEADERS.error]: expect.stringMatching(/does not exist/),
      [DLQ_HEADERS.originalEventId]: message.headers[HEADERS.eventId],
    });
    expect(await metric("saga_events_ignored_total", { topic })).toBe(ignoredBefore);
    expect(await orderRow(o.orderId)).toBeUndefined();
  });
});

describe("user.credit-reservation-failed", () => {
  it("cancels a PENDING order with the reason, once, even when delivered twice", async () => {
    const o = await placeOrder();
    const message = failed(o, "USER_NOT_FOUND");
    const canceledBefore = await metric("saga_outcomes_total", {
      outcome: "canceled",
      reason: "USER_NOT_FOUND",
    });
    await producer.send([message, message]);
    await waitFor(async () =>
      expect(
        await metric("saga_inbox_duplicates_total", { topic: TOPICS.creditReservationFailed }),
      ).toBeGreaterThan(0),
    );

    expect(await orderRow(o.orderId)).toMatchObject({ status: "CANCELED", cancelReason: "USER_NOT_FOUND" });
    expect(await metric("saga_outcomes_total", { outcome: "canceled", reason: "USER_NOT_FOUND" })).toBe(
      canceledBefore + 1,
    );
    // Nothing was reserved, so there is nothing to release: no order.canceled.
    expect(await topicsOf(o.orderId)).toEqual([TOPICS.orderCreated]);
    // DELETE of the canceled order changes nothing either.
    expect((await cancel(o.orderId)).status).toBe(204);
    expect(await topicsOf(o.orderId)).toEqual([TOPICS.orderCreated]);
  });

  it("does not undo a CONFIRMED order", async () => {
    const o = await placeOrder();
    const first = reserved(o);
    const late = failed(o);
    await producer.send([first]);
    await applied(first);
    await producer.send([late]);
    await applied(late);
    expect(await orderRow(o.orderId)).toMatchObject({ status: "CONFIRMED" });
  });
});

describe("a batch whose write does not match its plan", () => {
  it("commits nothing, its inbox row included, although COMMIT went out with that write", async () => {
    const o = await placeOrder();
    expect((await cancel(o.orderId)).status).toBe(204);
    const eventId = randomUUID();
    // Planned from a status read wrong (PENDING, where the order is CANCELED): the write's precondition
    // (`status = 'PENDING'`) changes nothing, and its own count check must fail it, so that the COMMIT
    // sent with it rolls back what the transaction wrote before (the inbox row of the claim).
    const batch = inTransaction(service.runtime.db.pool, async (tx) => {
      await claimEvents(tx, {
        consumerGroup: "a-test",
        eventIds: [eventId],
        topics: [TOPICS.creditReserved],
        partitions: [0],
        offsets: [0],
        aggregateIds: [o.orderId],
      });
      return applyCreditBatch(
        tx,
        [{ topic: TOPICS.creditReserved, orderId: o.orderId }],
        new Map([[o.orderId, "PENDING"]]),
      );
    });

    await expect(batch).rejects.toThrow(/credit batch changed 0 orders, planned 1/);
    expect(await db.db.select().from(inbox).where(eq(inbox.eventId, eventId))).toEqual([]);
    expect(await orderRow(o.orderId)).toMatchObject({ status: "CANCELED" });
  });
});

describe("a batch's write", () => {
  it("probes each order by its primary key, not every PENDING order through the partial index", async () => {
    const url = await freshDatabase("order_credit_plan");
    await migrateDatabase(url, "order");
    const pool = new pg.Pool({ connectionString: url, max: 1 });
    // The database is dropped WITH (FORCE) as the test ends: a client closing then hears 57P01.
    pool.on("connect", (client) => client.on("error", () => {}));
    pool.on("error", () => {});
    onTestFinished(() => pool.end());
    // Many decided orders and a few sagas under way, as the table is most of the time.
    await pool.query(
      `insert into orders (user_id, amount, status, created_at)
       select gen_random_uuid(), 100, case when g <= 200 then 'PENDING' else 'CONFIRMED' end, now()
       from generate_series(1, 20000) g`,
    );
    await pool.query("analyze orders");
    // As the service plans it: once per session, generically (db/src/pg-client.ts).
    const { rows } = await pool.query<{ "QUERY PLAN": string }>(
      `explain (generic_plan, costs off) ${WRITE_CHANGES}`,
    );
    const plan = rows.map((r) => r["QUERY PLAN"]).join("\n");
    expect(plan).toMatch(/Index Scan using orders_pkey on orders o\n\s+Index Cond: \(id = c\.id\)/);
    expect(plan).not.toContain("orders_pending_created_at_idx");
  });
});

describe("DELETE of a CONFIRMED order", () => {
  it("cancels it and emits order.canceled to release the reservation", async () => {
    const o = await placeOrder(250);
    const message = reserved(o);
    await producer.send([message]);
    await applied(message);
    const canceledBefore = await metric("saga_outcomes_total", {
      outcome: "canceled",
      reason: "CANCELED_BY_REQUEST",
    });
    const durationsBefore = await metric("saga_duration_seconds_count", { outcome: "canceled" });
    expect((await cancel(o.orderId)).status).toBe(204);
    expect(await metric("saga_outcomes_total", { outcome: "canceled", reason: "CANCELED_BY_REQUEST" })).toBe(
      canceledBefore + 1,
    );
    // A compensation: the saga ended when the order was confirmed, so no second duration is recorded.
    expect(await metric("saga_duration_seconds_count", { outcome: "canceled" })).toBe(durationsBefore);

    expect(await orderRow(o.orderId)).toMatchObject({
      status: "CANCELED",
      cancelReason: "CANCELED_BY_REQUEST",
    });
    expect(await topicsOf(o.orderId)).toEqual([TOPICS.orderCreated, TOPICS.orderCanceled]);
  });
});

describe("poison messages", () => {
  const poisons: [
    Topic,
    (o: { orderId: string; userId: string; amount: number }) => OutgoingMessage,
    RegExp,
  ][] = [
    [
      TOPICS.creditReserved,
      (o) => ({ ...reserved(o), value: JSON.stringify({ ...o, amount: 1.5 }) }),
      /amount/,
    ],
    [
      TOPICS.creditReservationFailed,
      (o) => ({ ...failed(o), headers: { ...failed(o).headers, [HEADERS.eventType]: "OrderCreated" } }),
      /does not belong/,
    ],
  ];

  it.each(poisons)(
    "on %s go to the DLQ through the outbox, once, and the next event is applied",
    async (topic, poison, error) => {
      const o = await placeOrder();
      const bad = poison(o);
      const dlqBefore = await metric("saga_dlq_events_total", { topic });
      const next = topic === TOPICS.creditReserved ? reserved(o) : failed(o);
      await producer.send([bad, bad, next]);
      await applied(next);

      expect(await orderRow(o.orderId)).toMatchObject({
        status: topic === TOPICS.creditReserved ? "CONFIRMED" : "CANCELED",
      });
      const dead = await db.db
        .select()
        .from(outbox)
        .where(and(eq(outbox.topic, dlqTopic(topic)), eq(outbox.aggregateId, o.orderId)));
      expect(dead).toHaveLength(1);
      expect(dead[0]).toMatchObject({ payload: bad.value });
      expect(dead[0]?.headers).toMatchObject({
        [DLQ_HEADERS.error]: expect.stringMatching(error),
        [DLQ_HEADERS.originalEventId]: bad.headers[HEADERS.eventId],
        [DLQ_HEADERS.consumerGroup]: `${prefix}order-service`,
      });
      expect(await metric("saga_dlq_events_total", { topic })).toBe(dlqBefore + 1);

      await waitFor(async () =>
        expect(
          (
            await db.db
              .select()
              .from(outbox)
              .where(eq(outbox.id, dead[0]?.id ?? ""))
          )[0]?.publishedAt,
        ).not.toBeNull(),
      );
      const onKafka = await kafka.readToEnd([prefixedTopic(prefix, dlqTopic(topic))]);
      expect(onKafka.find((m) => m.headers[HEADERS.eventId] === dead[0]?.id)).toMatchObject({
        key: o.orderId,
        value: bad.value,
      });
    },
  );
});
