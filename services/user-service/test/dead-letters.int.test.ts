/**
 * Dead letters of messages that the broker's limits or the dead-letter table's indexes could not take as
 * they came: each is still dead-lettered, and its partition, and the outbox behind it, move on.
 */
import { randomBytes, randomUUID } from "node:crypto";
import { DLQ_HEADERS, dlqTopic, HEADERS, prefixedTopic, TOPICS } from "@saga/contracts";
import { deadLetters, inbox, outbox } from "@saga/db/user";
import {
  type EventProducer,
  type IncomingMessage,
  type KafkaClient,
  messageBytes,
  type OutgoingMessage,
} from "@saga/kafka";
import { createInbox, createMessagingMetrics, PoisonEventError, replayDeadLetter } from "@saga/messaging";
import { eventMessage, type OutboxPublisher } from "@saga/messaging/testing";
import { createLogger } from "@saga/observability";
import { useFreshDatabase } from "@saga/tools/test/harness";
import { and, eq } from "drizzle-orm";
import { Registry } from "prom-client";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { orderEventConsumer } from "../src/consumers/order-events.ts";
import { createReservationMetrics } from "../src/metrics.ts";
import type { UserService } from "../src/service.ts";
import { createUser as createUserVia, type openDatabase, startConsumerHarness } from "./support.ts";

const databaseUrl = useFreshDatabase("user_dead_letters");
let prefix: string;
let service: UserService;
let db: ReturnType<typeof openDatabase>;
let kafka: KafkaClient;
let producer: EventProducer;
let publisher: OutboxPublisher;

let harness: Awaited<ReturnType<typeof startConsumerHarness>>;

beforeAll(async () => {
  harness = await startConsumerHarness(databaseUrl(), "user-dead-letters-test");
  ({ prefix, service, db, kafka, producer, publisher } = harness);
});

afterAll(() => harness?.stop());

const waitFor = <T>(check: () => Promise<T>) => vi.waitFor(check, { timeout: 20_000, interval: 50 });

const createUser = (balance: number) => createUserVia(service, balance);

const order = (userId: string, amount: number) => ({ orderId: randomUUID(), userId, amount });

/** Waits until the consumer group has applied the event with this id. */
async function applied(message: OutgoingMessage) {
  const eventId = message.headers[HEADERS.eventId] as string;
  await waitFor(async () => {
    const rows = await db.db.select().from(inbox).where(eq(inbox.eventId, eventId));
    expect(rows).toHaveLength(1);
  });
}

/** Waits until the outbox row is published, and returns its message as read from Kafka. */
async function publishedMessage(id: string, topic: string): Promise<IncomingMessage | undefined> {
  await waitFor(async () => {
    const [row] = await db.db.select().from(outbox).where(eq(outbox.id, id));
    expect(row?.publishedAt).not.toBeNull();
  });
  const onKafka = await kafka.readToEnd([prefixedTopic(prefix, topic)]);
  return onKafka.find((m) => m.headers[HEADERS.eventId] === id);
}

describe("a poison message with a dlq-replay-of that is no dead letter's id", () => {
  it("is dead-lettered under its event id, and the event behind it on its partition is applied", async () => {
    // The header as long as anything a producer may send: as part of the claim key it made the row
    // larger than a btree index entry can be (2,704 bytes), the insert failed, and it was tried for ever.
    const o = order(await createUser(100), 5);
    const bad = eventMessage(TOPICS.orderCreated, o, prefix);
    const forged = randomBytes(6000).toString("base64");
    const next = eventMessage(TOPICS.orderCreated, o, prefix);
    await producer.send([
      { ...bad, value: "{not json", headers: { ...bad.headers, [DLQ_HEADERS.replayOf]: forged } },
      next,
    ]);

    await applied(next);
    const letters = await db.db.select().from(deadLetters).where(eq(deadLetters.messageKey, o.orderId));
    expect(letters).toHaveLength(1);
    expect(letters[0]).toMatchObject({
      claimKey: bad.headers[HEADERS.eventId],
      reason: "poison",
      payload: "{not json",
    });
    // Kept as consumed, for a person to read; only the claim ignores it.
    expect(letters[0]?.headers[DLQ_HEADERS.replayOf]).toBe(forged);
  });
});

describe("a poison message larger than a Kafka message may be", () => {
  it("goes to the DLQ cut to DEAD_LETTER_MAX_BYTES, is kept whole in dead_letters, refused for replay, and the outbox behind it is published", async () => {
    // What a message sent compressed by another producer is to the consumer: 1.5 MB once decompressed,
    // though the broker took it (a few KB on the wire). Fed to the service's inbox directly, because our
    // producers do not compress; the consumer hands such a message over in the same way.
    const registry = new Registry();
    const metrics = { ...createMessagingMetrics(registry), ...createReservationMetrics(registry) };
    const serviceInbox = createInbox({
      db: service.runtime.db,
      consumerGroup: `${prefix}user-service`,
      topicPrefix: prefix,
      ...orderEventConsumer(metrics),
      logger: createLogger("user-service", "silent"),
      metrics,
      deadLetterMaxBytes: service.runtime.env.DEAD_LETTER_MAX_BYTES,
    });
    const userId = await createUser(100);
    const o = order(userId, 5);
    const value = `{${"x".repeat(1_500_000)}`;
    const poison: IncomingMessage = {
      ...eventMessage(TOPICS.orderCreated, o, prefix),
      value,
      partition: 0,
      offset: "0",
      timestamp: Date.now(),
    };
    const error = await serviceInbox.handle(poison).catch((err: unknown) => err);
    expect(error).toBeInstanceOf(PoisonEventError);
    await serviceInbox.deadLetter(poison, { reason: "poison", error, attempts: 1 });

    const [letter] = await db.db.select().from(deadLetters).where(eq(deadLetters.messageKey, o.orderId));
    expect(letter?.payload).toBe(value);

    // An order behind it: its credit-reserved row follows the dead letter's in the outbox.
    const later = order(userId, 7);
    const next = eventMessage(TOPICS.orderCreated, later, prefix);
    await producer.send([next]);
    await applied(next);
    const [reserved] = await db.db
      .select()
      .from(outbox)
      .where(and(eq(outbox.aggregateId, later.orderId), eq(outbox.topic, TOPICS.creditReserved)));
    expect(await publishedMessage(reserved?.id ?? "", TOPICS.creditReserved)).toBeDefined();

    const published = await publishedMessage(letter?.id ?? "", dlqTopic(TOPICS.orderCreated));
    expect(published?.key).toBe(o.orderId);
    expect(published?.headers[DLQ_HEADERS.valueTruncated]).toBe(String(Buffer.byteLength(value)));
    expect(published?.value).toBe(value.slice(0, published?.value?.length));
    const size = messageBytes({
      key: published?.key ?? "",
      value: published?.value ?? "",
      headers: published?.headers as Record<string, string>,
    });
    expect(size).toBeLessThanOrEqual(service.runtime.env.DEAD_LETTER_MAX_BYTES);
    expect(size).toBeGreaterThan(service.runtime.env.DEAD_LETTER_MAX_BYTES - 1000);

    // Sent back whole, it would be a message the broker refuses, and the outbox would wait behind it.
    const replay = await replayDeadLetter(service.runtime.db, letter?.id ?? "", "alice");
    expect(replay).toMatchObject({ status: "too large", bytes: expect.any(Number) });
    const [after] = await db.db
      .select()
      .from(deadLetters)
      .where(eq(deadLetters.id, letter?.id ?? ""));
    expect(after?.replayedAt).toBeNull();
    const replays = await db.db
      .select()
      .from(outbox)
      .where(and(eq(outbox.aggregateId, o.orderId), eq(outbox.topic, TOPICS.orderCreated)));
    expect(replays).toHaveLength(0);
  });
});

describe("the line that says a message was dead-lettered", () => {
  it("names its order and its trace, and cuts its error as the dead letter does", async () => {
    const logged: Record<string, unknown>[] = [];
    const registry = new Registry();
    const metrics = { ...createMessagingMetrics(registry), ...createReservationMetrics(registry) };
    const serviceInbox = createInbox({
      db: service.runtime.db,
      consumerGroup: `${prefix}user-service`,
      topicPrefix: prefix,
      ...orderEventConsumer(metrics),
      logger: createLogger("user-service", "warn", {
        destination: { write: (line: string) => void logged.push(JSON.parse(line)) },
      }),
      metrics,
    });
    const o = order(await createUser(100), 5);
    const traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    const poison: IncomingMessage = {
      ...eventMessage(TOPICS.orderCreated, o, prefix, { traceparent }),
      value: "{not json",
      partition: 0,
      offset: "0",
      timestamp: Date.now(),
    };
    await serviceInbox.deadLetter(poison, {
      reason: "retries exhausted",
      error: new Error(`a defect ${"x".repeat(5000)}`),
      attempts: 10,
    });
    const [line] = logged.filter((l) => String(l.msg).startsWith("event dead-lettered"));
    expect(line).toMatchObject({ orderId: o.orderId, traceId: "4bf92f3577b34da6a3ce929d0e0e4736" });
    // At most 2,000 characters, as the dead letter's row and header have it: a line, not a dump.
    const [letter] = await db.db.select().from(deadLetters).where(eq(deadLetters.messageKey, o.orderId));
    expect(letter?.error).toHaveLength(2000);
    expect(line?.error).toBe(letter?.error);
  });
});
