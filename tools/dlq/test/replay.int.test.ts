/**
 * The failure contract end to end: a bug in the user-service's consumer (injected through its
 * dependencies) is retried up to the budget and dead-lettered; after the fix, `npm run dlq -- replay`
 * completes the saga, once, and a second replay changes nothing. The order-service and a user-service
 * run in this process with a stand-in relay; the command runs as the operator runs it.
 */
import { execFile } from "node:child_process";
import { fileURLToPath } from "node:url";
import { DLQ_HEADERS, dlqTopic, type Order, prefixedTopic, TOPICS, type User } from "@saga/contracts";
import { createPgDatabase, orderSchema, userSchema } from "@saga/db";
import { outbox as orderOutbox, orders } from "@saga/db/order";
import { deadLetters, inbox, reservations, outbox as userOutbox } from "@saga/db/user";
import { createKafka, type KafkaClient } from "@saga/kafka";
import {
  freshTopicPrefix,
  metricValue,
  type OutboxPublisher,
  startOutboxPublisher,
} from "@saga/messaging/testing";
import { createOrderService, type OrderService, parseOrderServiceEnv } from "@saga/order-service";
import { kafkaBrokers, useFreshDatabase } from "@saga/tools/test/harness";
import {
  applyReservationBatch,
  createUserService,
  parseUserServiceEnv,
  type UserService,
} from "@saga/user-service";
import { and, eq, inArray } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";

const cli = fileURLToPath(new URL("../src/cli.ts", import.meta.url));
const userDatabaseUrl = useFreshDatabase("dlq_user");
const orderDatabaseUrl = useFreshDatabase("dlq_order");
let prefix: string;
let userService: UserService;
let orderService: OrderService;
let userDb: ReturnType<typeof createPgDatabase<typeof userSchema>>;
let orderDb: ReturnType<typeof createPgDatabase<typeof orderSchema>>;
let kafka: KafkaClient;
let publisher: OutboxPublisher;

// The bad deploy: reserving credit for these users throws, as code reading a field that is not there would.
const brokenUsers = new Set<string>();
const bug = () => new TypeError("Cannot read properties of undefined (reading 'balance')");

beforeAll(async () => {
  prefix = await freshTopicPrefix();
  const common = {
    KAFKA_BROKERS: kafkaBrokers().join(","),
    KAFKA_TOPIC_PREFIX: prefix,
    PORT: "0",
    AUTH_DEV_MODE: "true",
    LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? "error",
    // A small budget: 3 attempts, 400 then 800 ms apart (long enough to see the partition stuck).
    CONSUMER_RETRY_ATTEMPTS: "3",
    CONSUMER_RETRY_BACKOFF_MS: "400",
    CONSUMER_RETRY_BACKOFF_MAX_MS: "800",
  };
  userService = await createUserService(
    parseUserServiceEnv({
      ...common,
      DATABASE_URL: userDatabaseUrl(),
      CONSUMER_GROUP: `${prefix}user-service`,
    }),
    {
      async applyReservations(tx, events, state) {
        if (events.some((e) => brokenUsers.has(e.payload.userId))) throw bug();
        return applyReservationBatch(tx, events, state);
      },
    },
  );
  orderService = await createOrderService(
    parseOrderServiceEnv({
      ...common,
      DATABASE_URL: orderDatabaseUrl(),
      CONSUMER_GROUP: `${prefix}order-service`,
      SAGA_BACKLOG_LIMIT: "10000",
      SAGA_BACKLOG_MIN: "10000",
      // The orders wait for their replay far longer than a saga's 60 s on a loaded machine: no deadline
      // may cancel them first (the deadline's own tests are the order-service's).
      SAGA_TIMEOUT: "1h",
    }),
  );
  await Promise.all([userService.start(), orderService.start()]);
  userDb = createPgDatabase(userDatabaseUrl(), userSchema, { max: 3, applicationName: "test" });
  orderDb = createPgDatabase(orderDatabaseUrl(), orderSchema, { max: 3, applicationName: "test" });
  kafka = createKafka({ brokers: kafkaBrokers(), clientId: "dlq-test" });
  publisher = await startOutboxPublisher({ kafka, topicPrefix: prefix, databases: [orderDb.db, userDb.db] });
});

afterAll(async () => {
  await publisher?.stop();
  await kafka?.close();
  await Promise.all([userService?.stop(), orderService?.stop()]);
  await Promise.all([userDb?.close(), orderDb?.close()]);
});

const waitFor = <T>(check: () => Promise<T> | T, timeout = 30_000) =>
  vi.waitFor(check, { timeout, interval: 20 });

/** Runs `npm run dlq -- …` as an operator would (without npm's banner). */
function dlq(args: string[], operator = "alice"): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [cli, ...args],
      {
        env: {
          ...process.env,
          USER_DB_URL: userDatabaseUrl(),
          ORDER_DB_URL: orderDatabaseUrl(),
          DLQ_OPERATOR: operator,
        },
      },
      (error, stdout, stderr) => resolve({ code: error ? Number(error.code ?? 1) : 0, stdout, stderr }),
    );
  });
}

async function createUser(initialBalance: number): Promise<string> {
  const res = await userService.app.request("/users", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ username: `dlq-${crypto.randomUUID()}`, initialBalance }),
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

const orderStatus = async (id: string) =>
  ((await (await orderService.app.request(`/orders/${id}`)).json()) as Order).status;
const balance = async (id: string) =>
  ((await (await userService.app.request(`/users/${id}`)).json()) as User).balance;
const registry = () => userService.runtime.metrics.registry;

/** The id of the `order.created` event of an order (its outbox row in order_db). */
async function createdEventId(orderId: string): Promise<string> {
  const [row] = await orderDb.db
    .select({ id: orderOutbox.id })
    .from(orderOutbox)
    .where(and(eq(orderOutbox.aggregateId, orderId), eq(orderOutbox.topic, TOPICS.orderCreated)));
  if (!row) throw new Error(`no order.created for ${orderId}`);
  return row.id;
}

/** The age series of partitions stuck retrying, from the user-service's registry. */
async function stuckPartitions() {
  const metric = registry().getSingleMetric("saga_consumer_stuck_seconds");
  return metric ? (await metric.get()).values : [];
}

describe("an unexpected error in a consumer", () => {
  it("is retried up to the budget, dead-lettered, and after the fix replayed once: the saga completes", async () => {
    const userId = await createUser(5000);
    brokenUsers.add(userId);
    const dlqBefore = await metricValue(registry(), "saga_dlq_events_total", { reason: "retries exhausted" });
    const [first, second] = [await placeOrder(userId, 1000), await placeOrder(userId, 300)];

    // While it retries, its partition shows as stuck on an unexpected failure, with the event's age.
    await waitFor(async () => {
      const stuck = await stuckPartitions();
      expect(stuck).toContainEqual(
        expect.objectContaining({
          labels: expect.objectContaining({ topic: TOPICS.orderCreated, failure: "unexpected" }),
          value: expect.any(Number),
        }),
      );
      expect(stuck.every((s) => s.value >= 0)).toBe(true);
    });

    // Then both orders' events are dead-lettered with the reason and the last error, and nothing moved.
    const eventIds = [await createdEventId(first), await createdEventId(second)];
    const dead = await waitFor(async () => {
      const rows = await userDb.db.select().from(deadLetters).where(inArray(deadLetters.eventId, eventIds));
      expect(rows).toHaveLength(2);
      return rows;
    });
    for (const d of dead) {
      expect(d).toMatchObject({
        topic: TOPICS.orderCreated,
        sourceTopic: prefixedTopic(prefix, TOPICS.orderCreated),
        consumerGroup: `${prefix}user-service`,
        reason: "retries exhausted",
        attempts: 3,
        error: expect.stringMatching(/^TypeError: Cannot read properties of undefined/),
        replayedAt: null,
      });
    }
    // Counted once its transaction committed: the row may be seen a moment before the count.
    await waitFor(async () =>
      expect(await metricValue(registry(), "saga_dlq_events_total", { reason: "retries exhausted" })).toBe(
        dlqBefore + 2,
      ),
    );
    await waitFor(async () => expect(await stuckPartitions()).toEqual([]));
    expect([await orderStatus(first), await orderStatus(second)]).toEqual(["PENDING", "PENDING"]);
    expect(await balance(userId)).toBe(5000);
    expect(await userDb.db.select().from(reservations).where(eq(reservations.userId, userId))).toEqual([]);
    // The event ids stay free in the inbox, for the replay.
    expect(await userDb.db.select().from(inbox).where(inArray(inbox.eventId, eventIds))).toEqual([]);

    // The dead letters reach <topic>.dlq through the outbox, with the reason.
    const deadFirst = dead.find((d) => d.eventId === eventIds[0]);
    const deadSecond = dead.find((d) => d.eventId === eventIds[1]);
    if (!deadFirst || !deadSecond) throw new Error("dead letters missing");
    await waitFor(async () => {
      const onKafka = await kafka.readToEnd([prefixedTopic(prefix, dlqTopic(TOPICS.orderCreated))]);
      const published = onKafka.find((m) => m.headers["event-id"] === deadFirst.id);
      expect(published?.headers).toMatchObject({
        [DLQ_HEADERS.reason]: "retries exhausted",
        [DLQ_HEADERS.attempts]: "3",
        [DLQ_HEADERS.originalEventId]: eventIds[0],
      });
      expect(published?.key).toBe(first);
    });

    // The operator sees them…
    const listed = await dlq(["list", "--topic", TOPICS.orderCreated, "--pending"]);
    expect(listed.code).toBe(0);
    expect(listed.stdout).toContain(deadFirst.id);
    expect(listed.stdout).toContain(deadSecond.id);
    expect(listed.stdout).toMatch(/retries exhausted \(3 attempts\)\s+pending\s+TypeError/);

    // …the fix is deployed, and the first is replayed by its id: applied once, the saga completes.
    brokenUsers.delete(userId);
    const replayed = await dlq(["replay", deadFirst.id], "alice");
    expect(replayed).toMatchObject({ code: 0 });
    expect(replayed.stdout).toContain(`replayed ${deadFirst.id}`);
    await waitFor(async () => expect(await orderStatus(first)).toBe("CONFIRMED"));
    expect(await balance(userId)).toBe(4000);
    expect(await orderStatus(second)).toBe("PENDING");

    // The rest of the topic's dead letters since a time: only the second is still pending.
    const bulk = await dlq(["replay", "--topic", TOPICS.orderCreated, "--since", "10m"], "bob");
    expect(bulk.code).toBe(0);
    expect(bulk.stdout).toContain(`replayed ${deadSecond.id}`);
    expect(bulk.stdout).not.toContain(deadFirst.id);
    await waitFor(async () => expect(await orderStatus(second)).toBe("CONFIRMED"));
    expect(await balance(userId)).toBe(3700);

    // Each replay is recorded: who, when, and the outbox row that carried it.
    const [recordFirst] = await userDb.db.select().from(deadLetters).where(eq(deadLetters.id, deadFirst.id));
    expect(recordFirst).toMatchObject({ replayedBy: "alice", replayedAt: expect.any(Date) });
    const shown = await dlq(["show", deadSecond.id]);
    expect(JSON.parse(shown.stdout)).toMatchObject({
      database: "user_db",
      replayedBy: "bob",
      reason: "retries exhausted",
    });

    // A second replay is refused and changes nothing; the bulk form finds nothing left.
    const again = await dlq(["replay", deadFirst.id], "carol");
    expect(again.code).toBe(1);
    expect(again.stderr).toMatch(/refused: .* already replayed .* by alice/);
    const bulkAgain = await dlq(["replay", "--topic", TOPICS.orderCreated, "--since", "10m"]);
    expect(bulkAgain.stderr).toMatch(/^replayed 0 dead letters/);

    // And were the replay sent twice (a relay that crashed before marking it), the inbox absorbs it.
    const duplicatesBefore = await metricValue(registry(), "saga_inbox_duplicates_total", {
      topic: TOPICS.orderCreated,
    });
    await publisher.republish(userDb.db, recordFirst?.replayOutboxId ?? "");
    await waitFor(async () =>
      expect(
        await metricValue(registry(), "saga_inbox_duplicates_total", { topic: TOPICS.orderCreated }),
      ).toBe(duplicatesBefore + 1),
    );
    expect(await balance(userId)).toBe(3700);
    const ledger = await userDb.db.select().from(reservations).where(eq(reservations.userId, userId));
    expect(ledger.map((r) => [r.orderId, r.status, r.amount]).sort()).toEqual(
      [
        [first, "RESERVED", 1000],
        [second, "RESERVED", 300],
      ].sort(),
    );
    expect(await userDb.db.select().from(inbox).where(inArray(inbox.eventId, eventIds))).toHaveLength(2);
    const [final] = await orderDb.db.select().from(orders).where(eq(orders.id, first));
    expect(final).toMatchObject({ status: "CONFIRMED", cancelReason: null });
  });

  it("refuses bad input to the command and changes nothing", async () => {
    const before = await userDb.db.select().from(deadLetters);
    // Independent commands that change nothing: run at once.
    const [badId, noSince, badSince, unknownId, unknownCommand] = await Promise.all([
      dlq(["replay", "not-a-uuid"]),
      dlq(["replay", "--topic", TOPICS.orderCreated]),
      dlq(["list", "--since", "yesterday"]),
      dlq(["replay", crypto.randomUUID()]),
      dlq(["frobnicate"]),
    ]);
    expect(badId).toMatchObject({ code: 2, stderr: expect.stringMatching(/not a dead letter's id/) });
    expect(noSince).toMatchObject({ code: 2, stderr: expect.stringMatching(/--topic and --since/) });
    expect(badSince).toMatchObject({ code: 2, stderr: expect.stringMatching(/ISO 8601/) });
    expect(unknownId).toMatchObject({ code: 1, stderr: expect.stringMatching(/no dead letter/) });
    expect(unknownCommand).toMatchObject({ code: 2, stderr: expect.stringMatching(/unknown command/) });
    expect(await userDb.db.select().from(deadLetters)).toEqual(before);
  });

  it("refuses to replay a dead letter larger than a Kafka message may be, and leaves it pending", async () => {
    // As the consumer records a message another producer sent compressed: 1.5 MB once read. Sent back
    // whole, the broker would refuse it at every attempt, and the outbox would wait behind it for ever.
    const id = crypto.randomUUID();
    const orderId = crypto.randomUUID();
    await userDb.db.insert(deadLetters).values({
      id,
      consumerGroup: `${prefix}user-service`,
      claimKey: id,
      topic: TOPICS.orderCanceled,
      sourceTopic: prefixedTopic(prefix, TOPICS.orderCanceled),
      partition: 0,
      offset: 0,
      eventId: crypto.randomUUID(),
      messageKey: orderId,
      headers: { "event-type": "OrderCanceled", "schema-version": "1", "aggregate-id": orderId },
      payload: `{${"x".repeat(1_500_000)}`,
      reason: "poison",
      error: "value is not JSON",
      attempts: 1,
    });
    const outboxBefore = await userDb.db.select({ id: userOutbox.id }).from(userOutbox);

    const one = await dlq(["replay", id]);
    expect(one.code).toBe(1);
    expect(one.stderr).toMatch(
      new RegExp(
        `refused: dead letter ${id} would be a message of \\d+ bytes, more than Kafka takes \\(1000000\\); it stays pending`,
      ),
    );
    const bulk = await dlq(["replay", "--topic", TOPICS.orderCanceled, "--since", "10m"]);
    expect(bulk.code).toBe(1);
    expect(bulk.stderr).toContain(`refused: dead letter ${id}`);
    expect(bulk.stderr).toMatch(/replayed 0 dead letters .* refused 1 too large to send/);

    const [record] = await userDb.db.select().from(deadLetters).where(eq(deadLetters.id, id));
    expect(record).toMatchObject({ replayedAt: null, replayedBy: null, replayOutboxId: null });
    expect(await userDb.db.select({ id: userOutbox.id }).from(userOutbox)).toEqual(outboxBefore);
  });
});
