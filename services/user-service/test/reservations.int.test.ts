import { randomUUID } from "node:crypto";
import { DLQ_HEADERS, dlqTopic, HEADERS, prefixedTopic, TOPICS, type Topic } from "@saga/contracts";
import { inbox, outbox, reservations, users } from "@saga/db/user";
import {
  type EventProducer,
  type IncomingMessage,
  type KafkaClient,
  type OutgoingMessage,
} from "@saga/kafka";
import { classifyFailure, createInbox, createMessagingMetrics, type Inbox } from "@saga/messaging";
import { eventMessage, metricValue, type OutboxPublisher } from "@saga/messaging/testing";
import { createLogger } from "@saga/observability";
import { useFreshDatabase } from "@saga/tools/test/harness";
import { and, count, eq, sql } from "drizzle-orm";
import { Registry } from "prom-client";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { orderEventConsumer } from "../src/consumers/order-events.ts";
import { applyReservationBatch } from "../src/domain/apply-reservation-batch.ts";
import { createReservationMetrics } from "../src/metrics.ts";
import type { UserService } from "../src/service.ts";
import { createUser as createUserVia, type openDatabase, startConsumerHarness } from "./support.ts";

const databaseUrl = useFreshDatabase("user_reservations");
let prefix: string;
let service: UserService;
let db: ReturnType<typeof openDatabase>;
let kafka: KafkaClient;
let producer: EventProducer;
let publisher: OutboxPublisher;

let harness: Awaited<ReturnType<typeof startConsumerHarness>>;

beforeAll(async () => {
  harness = await startConsumerHarness(databaseUrl(), "user-reservations-test");
  ({ prefix, service, db, kafka, producer, publisher } = harness);
});

afterAll(() => harness?.stop());

const waitFor = <T>(check: () => Promise<T>) => vi.waitFor(check, { timeout: 20_000, interval: 50 });

const createUser = (balance: number) => createUserVia(service, balance);

async function send(...messages: OutgoingMessage[]): Promise<void> {
  await producer.send(messages);
}

const order = (userId: string, amount: number) => ({ orderId: randomUUID(), userId, amount });
type Order = ReturnType<typeof order>;

async function reservation(orderId: string) {
  const [row] = await db.db.select().from(reservations).where(eq(reservations.orderId, orderId));
  return row;
}

async function balanceOf(userId: string) {
  const [row] = await db.db.select().from(users).where(eq(users.id, userId));
  return row?.balance;
}

async function eventsFor(orderId: string) {
  const rows = await db.db
    .select()
    .from(outbox)
    .where(eq(outbox.aggregateId, orderId))
    .orderBy(outbox.position);
  return rows.map((r) => ({ topic: r.topic, payload: JSON.parse(r.payload) }));
}

/** Waits until the consumer group has applied or absorbed the event with this id. */
async function applied(message: OutgoingMessage) {
  const eventId = message.headers[HEADERS.eventId] as string;
  await waitFor(async () => {
    const rows = await db.db.select().from(inbox).where(eq(inbox.eventId, eventId));
    expect(rows).toHaveLength(1);
  });
}

/** How many sessions of the test database wait for a lock (a row's, or an order's advisory lock). */
async function lockWaiters(): Promise<number> {
  const { rows } = await db.pool.query<{ n: number }>(
    "select count(*)::int as n from pg_stat_activity where datname = current_database() and wait_event_type = 'Lock'",
  );
  return rows[0]?.n ?? 0;
}

const metric = (name: string, labels: Record<string, string>) =>
  metricValue(service.runtime.metrics.registry, name, labels);

describe("order.created", () => {
  it("reserves the amount: RESERVED, balance debited, user.credit-reserved emitted", async () => {
    const userId = await createUser(5000);
    const o = order(userId, 1000);
    const traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    await send(eventMessage(TOPICS.orderCreated, o, prefix, { traceparent }));
    await waitFor(async () => expect(await reservation(o.orderId)).toMatchObject({ status: "RESERVED" }));

    expect(await balanceOf(userId)).toBe(4000);
    expect(await reservation(o.orderId)).toMatchObject({ userId, amount: 1000, reason: null });
    expect(await eventsFor(o.orderId)).toEqual([{ topic: TOPICS.creditReserved, payload: o }]);
    // The emitted event continues the trace of the one that caused it, with a span of its own.
    const [row] = await db.db.select().from(outbox).where(eq(outbox.aggregateId, o.orderId));
    expect(row?.headers[HEADERS.traceparent]).toMatch(
      /^00-4bf92f3577b34da6a3ce929d0e0e4736-[0-9a-f]{16}-01$/,
    );
    expect(row?.headers[HEADERS.traceparent]).not.toBe(traceparent);
  });

  // W3C: a receiver that cannot use a traceparent ignores it. An event is no less applicable for its
  // trace header: refusing it would dead-letter the event and let its saga time out (an older writer's,
  // during a rolling upgrade, or another producer's).
  it.each([
    ["of version ff, which W3C forbids", "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"],
    ["malformed", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7"],
  ])("with a traceparent %s is applied, and its answer starts a trace of its own", async (_name, trace) => {
    const userId = await createUser(5000);
    const o = order(userId, 10);
    await send(eventMessage(TOPICS.orderCreated, o, prefix, { traceparent: trace }));
    await waitFor(async () => expect(await reservation(o.orderId)).toMatchObject({ status: "RESERVED" }));

    const [row] = await db.db.select().from(outbox).where(eq(outbox.aggregateId, o.orderId));
    expect(row?.topic).toBe(TOPICS.creditReserved);
    expect(row?.headers[HEADERS.traceparent]).toMatch(/^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/);
    expect(row?.headers[HEADERS.traceparent]).not.toContain("4bf92f3577b34da6a3ce929d0e0e4736");
  });

  it.each([
    ["INSUFFICIENT_FUNDS", 999, 1000],
    ["USER_NOT_FOUND", undefined, 1],
  ])(
    "rejects with %s, moves no money and emits user.credit-reservation-failed",
    async (reason, balance, amount) => {
      const userId = balance === undefined ? randomUUID() : await createUser(balance);
      const o = order(userId, amount);
      await send(eventMessage(TOPICS.orderCreated, o, prefix));
      await waitFor(async () =>
        expect(await reservation(o.orderId)).toMatchObject({ status: "REJECTED", reason }),
      );

      expect(await balanceOf(userId)).toBe(balance);
      expect(await eventsFor(o.orderId)).toEqual([
        { topic: TOPICS.creditReservationFailed, payload: { ...o, reason } },
      ]);
      expect(await metric("saga_reservations_total", { result: "rejected", reason })).toBeGreaterThan(0);
    },
  );

  it("applies a redelivered order.created once", async () => {
    const userId = await createUser(5000);
    const o = order(userId, 1000);
    const created = eventMessage(TOPICS.orderCreated, o, prefix);
    const duplicatesBefore = await metric("saga_inbox_duplicates_total", { topic: TOPICS.orderCreated });
    await send(created, created);
    await applied(created);
    await waitFor(async () =>
      expect(await metric("saga_inbox_duplicates_total", { topic: TOPICS.orderCreated })).toBe(
        duplicatesBefore + 1,
      ),
    );

    expect(await balanceOf(userId)).toBe(4000);
    expect(await eventsFor(o.orderId)).toHaveLength(1);
  });
});

describe("order.canceled", () => {
  it("releases a reservation exactly once, even when delivered twice", async () => {
    const userId = await createUser(5000);
    const o = order(userId, 1000);
    await send(eventMessage(TOPICS.orderCreated, o, prefix));
    await waitFor(async () => expect(await reservation(o.orderId)).toMatchObject({ status: "RESERVED" }));
    expect(await balanceOf(userId)).toBe(4000);

    const canceled = eventMessage(TOPICS.orderCanceled, o, prefix);
    const duplicatesBefore = await metric("saga_inbox_duplicates_total", { topic: TOPICS.orderCanceled });
    await send(canceled, canceled);
    await waitFor(async () =>
      expect(await metric("saga_inbox_duplicates_total", { topic: TOPICS.orderCanceled })).toBe(
        duplicatesBefore + 1,
      ),
    );

    expect(await reservation(o.orderId)).toMatchObject({ status: "RELEASED" });
    expect(await balanceOf(userId)).toBe(5000);
    // Releasing emits nothing: the order-service already canceled the order.
    expect(await eventsFor(o.orderId)).toEqual([{ topic: TOPICS.creditReserved, payload: o }]);
  });

  it("a second order.canceled with another event id is ignored as not fitting, not credited again", async () => {
    const userId = await createUser(300);
    const o = order(userId, 300);
    await send(eventMessage(TOPICS.orderCreated, o, prefix));
    await waitFor(async () => expect(await reservation(o.orderId)).toMatchObject({ status: "RESERVED" }));
    const ignoredBefore = await metric("saga_events_ignored_total", {
      topic: TOPICS.orderCanceled,
      state: "RELEASED",
    });
    const first = eventMessage(TOPICS.orderCanceled, o, prefix);
    const second = eventMessage(TOPICS.orderCanceled, o, prefix);
    await send(first, second);
    await applied(second);

    expect(await balanceOf(userId)).toBe(300);
    expect(
      await metric("saga_events_ignored_total", { topic: TOPICS.orderCanceled, state: "RELEASED" }),
    ).toBe(ignoredBefore + 1);
  });

  it("arriving before order.created records CANCELED, and the later order.created moves no money", async () => {
    const userId = await createUser(5000);
    const o = order(userId, 1000);
    await send(eventMessage(TOPICS.orderCanceled, o, prefix));
    await waitFor(async () => expect(await reservation(o.orderId)).toMatchObject({ status: "CANCELED" }));
    expect(await balanceOf(userId)).toBe(5000);

    await send(eventMessage(TOPICS.orderCreated, o, prefix));
    await waitFor(async () =>
      expect(await reservation(o.orderId)).toMatchObject({ reason: "ORDER_CANCELED" }),
    );

    expect(await reservation(o.orderId)).toMatchObject({ status: "CANCELED" });
    expect(await balanceOf(userId)).toBe(5000);
    expect(await eventsFor(o.orderId)).toEqual([
      { topic: TOPICS.creditReservationFailed, payload: { ...o, reason: "ORDER_CANCELED" } },
    ]);
  });

  it("for a REJECTED reservation changes no balance", async () => {
    const userId = await createUser(10);
    const o = order(userId, 11);
    await send(eventMessage(TOPICS.orderCreated, o, prefix));
    await waitFor(async () => expect(await reservation(o.orderId)).toMatchObject({ status: "REJECTED" }));
    const canceled = eventMessage(TOPICS.orderCanceled, o, prefix);
    await send(canceled);
    await applied(canceled);

    expect(await reservation(o.orderId)).toMatchObject({ status: "REJECTED", reason: "INSUFFICIENT_FUNDS" });
    expect(await balanceOf(userId)).toBe(10);
  });
});

describe("poison messages", () => {
  // A poison message with a usable event id is dead-lettered once however often it is delivered; one
  // without is identified by its offset, so a second copy would be a message of its own: send it once.
  const poisons: [Topic, (o: ReturnType<typeof order>) => OutgoingMessage, RegExp, number][] = [
    [
      TOPICS.orderCreated,
      (o) => ({ ...eventMessage(TOPICS.orderCreated, o, prefix), value: "{not json" }),
      /not JSON/,
      2,
    ],
    [
      TOPICS.orderCanceled,
      (o) => {
        const m = eventMessage(TOPICS.orderCanceled, o, prefix);
        const { [HEADERS.eventId]: _, ...headers } = m.headers;
        return { ...m, headers, value: JSON.stringify({ ...o, amount: -5 }) };
      },
      /event-id/,
      1,
    ],
  ];

  it.each(poisons)(
    "on %s go to the DLQ through the outbox, once, and the next event is applied",
    async (topic, poison, error, copies) => {
      const userId = await createUser(100);
      const o = order(userId, 60);
      const bad = poison(o);
      const dlqBefore = await metric("saga_dlq_events_total", { topic });
      // The valid event behind the poison, on the same partition (same key), is still applied.
      const next = eventMessage(topic, o, prefix);
      await send(...Array.from({ length: copies }, () => bad), next);
      await applied(next);
      expect(await reservation(o.orderId)).toMatchObject({
        status: topic === TOPICS.orderCreated ? "RESERVED" : "CANCELED",
      });

      const dead = await db.db
        .select()
        .from(outbox)
        .where(and(eq(outbox.topic, dlqTopic(topic)), eq(outbox.aggregateId, o.orderId)));
      expect(dead).toHaveLength(1);
      expect(dead[0]).toMatchObject({ payload: bad.value, eventType: bad.headers[HEADERS.eventType] });
      expect(dead[0]?.headers).toMatchObject({
        [DLQ_HEADERS.error]: expect.stringMatching(error),
        [DLQ_HEADERS.originalTopic]: prefixedTopic(prefix, topic),
        [DLQ_HEADERS.consumerGroup]: `${prefix}user-service`,
      });
      expect(await metric("saga_dlq_events_total", { topic })).toBe(dlqBefore + 1);

      // Once the relay has published it, it is on the Kafka dead-letter topic.
      await waitFor(async () => {
        const [row] = await db.db
          .select()
          .from(outbox)
          .where(eq(outbox.id, dead[0]?.id ?? ""));
        expect(row?.publishedAt).not.toBeNull();
      });
      const onKafka = await kafka.readToEnd([prefixedTopic(prefix, dlqTopic(topic))]);
      const published = onKafka.find((m) => m.headers[HEADERS.eventId] === dead[0]?.id);
      expect(published).toMatchObject({ key: o.orderId, value: bad.value });
      expect(published?.headers[DLQ_HEADERS.error]).toMatch(error);
    },
  );
});

describe("batches", () => {
  it("applies a burst of interleaved events on every partition exactly once, without a batch failing", async () => {
    const [a, b] = [await createUser(10_000), await createUser(10_000)];
    // Orders of both users interleaved, so that concurrent batches debit and credit both.
    const orders = Array.from({ length: 60 }, (_, i) => order(i % 2 ? a : b, 10 + (i % 7)));
    const created = orders.map((o) => eventMessage(TOPICS.orderCreated, o, prefix));
    const canceled = orders.filter((_, i) => i % 3 === 0);
    const fallbacksBefore = await metric("saga_inbox_batch_fallbacks_total", {});
    // Redeliveries inside the burst, and cancels that reach some orders before their creation.
    await send(
      ...created,
      ...created.slice(0, 10),
      ...canceled.map((o) => eventMessage(TOPICS.orderCanceled, o, prefix)),
    );
    for (const m of created) await applied(m);
    await waitFor(async () => {
      const rows = await db.db
        .select({ n: count() })
        .from(reservations)
        .where(
          and(
            sql`${reservations.orderId} = any(${sql.param(orders.map((o) => o.orderId))}::uuid[])`,
            sql`${reservations.status} in ('RELEASED', 'CANCELED')`,
          ),
        );
      expect(rows[0]?.n).toBe(canceled.length);
    });

    const kept = (userId: string) =>
      orders.filter((o, i) => o.userId === userId && i % 3 !== 0).reduce((sum, o) => sum + o.amount, 0);
    expect(await balanceOf(a)).toBe(10_000 - kept(a));
    expect(await balanceOf(b)).toBe(10_000 - kept(b));
    for (const o of orders) expect(await eventsFor(o.orderId)).toHaveLength(1);
    expect(await metric("saga_inbox_batch_fallbacks_total", {})).toBe(fallbacksBefore);
  });
});

describe("one consumed batch", () => {
  // The service's inbox and handlers fed directly, so that these events are one batch for certain
  // (through Kafka, how many messages one fetch returns is the broker's choice).
  let registry: Registry;
  let batchInbox: Inbox;
  let offset = 0;
  beforeAll(() => {
    registry = new Registry();
    const metrics = { ...createMessagingMetrics(registry), ...createReservationMetrics(registry) };
    batchInbox = createInbox({
      db: service.runtime.db,
      consumerGroup: `${prefix}user-service`,
      topicPrefix: prefix,
      ...orderEventConsumer(metrics),
      logger: createLogger("user-service", "silent"),
      metrics,
    });
  });
  const consumed = (m: OutgoingMessage): IncomingMessage => ({
    ...m,
    partition: 0,
    offset: String(offset++),
    timestamp: Date.now(),
  });
  const created = (o: Order) => eventMessage(TOPICS.orderCreated, o, prefix);
  const canceled = (o: Order) => eventMessage(TOPICS.orderCanceled, o, prefix);
  const ledgerOf = async (orders: Order[]) =>
    Promise.all(orders.map(async (o) => ({ ...(await reservation(o.orderId)) }))).then((rows) =>
      rows.map(({ status, reason, amount }) => ({ status, reason, amount })),
    );
  const emittedOf = async (orders: Order[]) =>
    Promise.all(
      orders.map(async (o) => (await eventsFor(o.orderId)).map((e) => [e.topic, e.payload.reason])),
    ).then((lists) => lists.flat());

  it("applies several orders of one user whose sum exceeds the balance exactly as one by one would", async () => {
    // Two users with the same balance get the same events: one user's as a single batch, the other's
    // one event per transaction. Both must end the same: first 600 reserved, 500 rejected, 300
    // reserved, 200 rejected; the cancel of the first gives its 600 back, so a last 700 fits.
    const [batched, sequential] = [await createUser(1000), await createUser(1000)];
    const script = (userId: string) => {
      const orders = [600, 500, 300, 200, 700].map((amount) => order(userId, amount));
      const [first, second, third, fourth, last] = orders as [Order, Order, Order, Order, Order];
      const messages = [first, second, third, fourth].map(created);
      messages.push(canceled(first), created(last));
      return { orders, messages };
    };
    const a = script(batched);
    const b = script(sequential);
    const fallbacks = await metricValue(registry, "saga_inbox_batch_fallbacks_total", {});

    await batchInbox.handleBatch(a.messages.map(consumed));
    for (const m of b.messages) await batchInbox.handle(consumed(m));

    const expected = [
      { status: "RELEASED", reason: null, amount: 600 },
      { status: "REJECTED", reason: "INSUFFICIENT_FUNDS", amount: 500 },
      { status: "RESERVED", reason: null, amount: 300 },
      { status: "REJECTED", reason: "INSUFFICIENT_FUNDS", amount: 200 },
      { status: "RESERVED", reason: null, amount: 700 },
    ];
    expect(await ledgerOf(a.orders)).toEqual(expected);
    expect(await ledgerOf(b.orders)).toEqual(expected);
    expect(await balanceOf(batched)).toBe(0);
    expect(await balanceOf(sequential)).toBe(0);
    const emitted = [
      [TOPICS.creditReserved, undefined],
      [TOPICS.creditReservationFailed, "INSUFFICIENT_FUNDS"],
      [TOPICS.creditReserved, undefined],
      [TOPICS.creditReservationFailed, "INSUFFICIENT_FUNDS"],
      [TOPICS.creditReserved, undefined],
    ];
    expect(await emittedOf(a.orders)).toEqual(emitted);
    expect(await emittedOf(b.orders)).toEqual(emitted);
    expect(await metricValue(registry, "saga_inbox_batch_fallbacks_total", {})).toBe(fallbacks);
  });

  it("commits nothing of a batch whose write does not match its plan, although COMMIT went out with it", async () => {
    const userId = await createUser(100);
    const o = order(userId, 500);
    const message = created(o);
    // Planned from a balance read wrong (1,000 where the database holds 100): the write's guard
    // (`balance + change >= 0`) debits nothing, and its own count check must fail it, so that the COMMIT
    // sent with it rolls back the ledger row, the outbox row and the inbox row of the batch.
    const metrics = {
      ...createMessagingMetrics(new Registry()),
      ...createReservationMetrics(new Registry()),
    };
    const misread = createInbox({
      db: service.runtime.db,
      consumerGroup: `${prefix}user-service`,
      topicPrefix: prefix,
      ...orderEventConsumer(metrics, (tx, events, state) =>
        applyReservationBatch(tx, events, { ...state, balances: new Map([[userId, 1000]]) }),
      ),
      logger: createLogger("user-service", "silent"),
      metrics,
    });

    await expect(misread.handle(consumed(message))).rejects.toThrow(
      /reservation batch wrote 0 balances and 1 ledger rows, planned 1 and 1/,
    );
    expect(await balanceOf(userId)).toBe(100);
    expect(await reservation(o.orderId)).toBeUndefined();
    expect(await eventsFor(o.orderId)).toEqual([]);
    const eventId = message.headers[HEADERS.eventId] as string;
    expect(await db.db.select().from(inbox).where(eq(inbox.eventId, eventId))).toEqual([]);
  });

  it("applies an order.canceled that races its order.created after it, though its aggregate-id is in capitals", async () => {
    // decodeEvent takes the header in any case (other producers print UUIDs in capitals); the inbox must
    // still lock the order the cancel names, or the cancel reads the ledger before the reservation
    // commits and records CANCELED over RESERVED, keeping the 300 debited for good.
    const userId = await createUser(1000);
    const o = order(userId, 300);
    let planned!: () => void;
    const creating = new Promise<void>((resolve) => (planned = resolve));
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    const metrics = {
      ...createMessagingMetrics(new Registry()),
      ...createReservationMetrics(new Registry()),
    };
    const gated = createInbox({
      db: service.runtime.db,
      consumerGroup: `${prefix}user-service`,
      topicPrefix: prefix,
      ...orderEventConsumer(metrics, async (tx, events, state) => {
        if (events.some((e) => e.topic === TOPICS.orderCreated)) {
          planned();
          await held;
        }
        return applyReservationBatch(tx, events, state);
      }),
      logger: createLogger("user-service", "silent"),
      metrics,
    });
    const cancel = canceled(o);
    const shouted = {
      ...cancel,
      headers: { ...cancel.headers, [HEADERS.aggregateId]: o.orderId.toUpperCase() },
    };

    const reserving = gated.handle(consumed(created(o)));
    await creating; // its transaction holds the order's lock and the user's row
    const canceling = gated.handle(consumed(shouted));
    await waitFor(async () => expect(await lockWaiters()).toBeGreaterThan(0));
    release();
    await Promise.all([reserving, canceling]);

    expect(await reservation(o.orderId)).toMatchObject({ status: "RELEASED", amount: 300 });
    expect(await balanceOf(userId)).toBe(1000);
  });

  it("refuses a plan made from a ledger row that has changed since, and applies the event afresh when tried again", async () => {
    const userId = await createUser(1000);
    const o = order(userId, 300);
    await batchInbox.handle(consumed(created(o)));
    expect(await balanceOf(userId)).toBe(700);
    // A cancel planned from a read that saw no row yet ("record-cancel"): written, CANCELED would replace
    // RESERVED and the 300 would never come back. The write must match nothing and fail its count check.
    const metrics = {
      ...createMessagingMetrics(new Registry()),
      ...createReservationMetrics(new Registry()),
    };
    const stale = createInbox({
      db: service.runtime.db,
      consumerGroup: `${prefix}user-service`,
      topicPrefix: prefix,
      ...orderEventConsumer(metrics, (tx, events, state) =>
        applyReservationBatch(tx, events, { ...state, ledger: new Map() }),
      ),
      logger: createLogger("user-service", "silent"),
      metrics,
    });
    const cancel = consumed(canceled(o));

    const failure = await stale.handle(cancel).catch((err: unknown) => err);
    expect(failure).toBeInstanceOf(Error);
    expect((failure as Error).message).toMatch(/wrote 0 balances and 0 ledger rows, planned 0 and 1/);
    // Retried as an unexpected failure (not poison): the next attempt reads the ledger again.
    expect(classifyFailure(failure)).toBe("unexpected");
    expect(await reservation(o.orderId)).toMatchObject({ status: "RESERVED" });
    expect(await balanceOf(userId)).toBe(700);

    await batchInbox.handle(cancel);
    expect(await reservation(o.orderId)).toMatchObject({ status: "RELEASED" });
    expect(await balanceOf(userId)).toBe(1000);
  });

  it("absorbs duplicates within the batch and of events applied before, applying each event once", async () => {
    const userId = await createUser(1000);
    const [x, y, z] = [order(userId, 100), order(userId, 200), order(userId, 300)];
    const before = created(z);
    await batchInbox.handle(consumed(before));
    expect(await balanceOf(userId)).toBe(700);

    const cx = created(x);
    const cancelY = canceled(y);
    // x twice, a cancel of y before its creation and twice, z's creation applied before, and y.
    await batchInbox.handleBatch([cx, cx, cancelY, before, created(y), cancelY, cx].map(consumed));

    expect(await reservation(x.orderId)).toMatchObject({ status: "RESERVED", amount: 100 });
    expect(await reservation(y.orderId)).toMatchObject({ status: "CANCELED", reason: "ORDER_CANCELED" });
    expect(await reservation(z.orderId)).toMatchObject({ status: "RESERVED", amount: 300 });
    expect(await balanceOf(userId)).toBe(600);
    expect(await eventsFor(x.orderId)).toEqual([{ topic: TOPICS.creditReserved, payload: x }]);
    expect(await eventsFor(y.orderId)).toEqual([
      { topic: TOPICS.creditReservationFailed, payload: { ...y, reason: "ORDER_CANCELED" } },
    ]);
    expect(await eventsFor(z.orderId)).toHaveLength(1);
    const inboxRows = await db.db
      .select({ n: count() })
      .from(inbox)
      .where(
        sql`${inbox.eventId} = any(${sql.param(
          [cx, cancelY, before].map((m) => m.headers[HEADERS.eventId] as string),
        )}::text[])`,
      );
    expect(inboxRows[0]?.n).toBe(3);
    expect(await metricValue(registry, "saga_inbox_duplicates_total", { topic: TOPICS.orderCreated })).toBe(
      3,
    );
    expect(await metricValue(registry, "saga_inbox_duplicates_total", { topic: TOPICS.orderCanceled })).toBe(
      1,
    );
  });
});

describe("resilience", () => {
  it("keeps applying every event exactly once while its database connections are killed", async () => {
    const userId = await createUser(30 * 10);
    const messages = Array.from({ length: 30 }, () =>
      eventMessage(TOPICS.orderCreated, order(userId, 10), prefix),
    );
    const kill = () =>
      db.db.execute(sql`
        select pg_terminate_backend(pid) from pg_stat_activity
        where datname = current_database() and application_name = 'user-service/test-1'`);
    for (let i = 0; i < messages.length; i += 10) {
      await send(...messages.slice(i, i + 10));
      await kill();
    }
    for (const m of messages) await applied(m);

    expect(await balanceOf(userId)).toBe(0);
    const rows = await db.db.select({ n: count() }).from(reservations).where(eq(reservations.userId, userId));
    expect(rows[0]?.n).toBe(30);
  });
});
