/**
 * Dead letters of messages that the dead-letter table's indexes could not take as they came: each is
 * still dead-lettered, and its partition moves on.
 */
import { randomBytes, randomUUID } from "node:crypto";
import { DLQ_HEADERS, HEADERS, TOPICS, type User } from "@saga/contracts";
import { deadLetters, inbox } from "@saga/db/user";
import { createKafka, type EventProducer, type KafkaClient, type OutgoingMessage } from "@saga/kafka";
import { eventMessage } from "@saga/messaging/testing";
import { kafkaBrokers, useFreshDatabase } from "@saga/tools/test/harness";
import { eq } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import type { UserService } from "../src/service.ts";
import { freshTopicPrefix, openDatabase, startInProcess, testEnv } from "./support.ts";

const databaseUrl = useFreshDatabase("user_dead_letters");
let prefix: string;
let service: UserService;
let db: ReturnType<typeof openDatabase>;
let kafka: KafkaClient;
let producer: EventProducer;

beforeAll(async () => {
  prefix = await freshTopicPrefix();
  service = await startInProcess(testEnv(databaseUrl(), prefix));
  await service.start();
  db = openDatabase(databaseUrl());
  kafka = createKafka({ brokers: kafkaBrokers(), clientId: "user-dead-letters-test" });
  producer = await kafka.createProducer();
});

afterAll(async () => {
  await producer?.close();
  await kafka?.close();
  await service?.stop();
  await db?.close();
});

const waitFor = <T>(check: () => Promise<T>) => vi.waitFor(check, { timeout: 20_000, interval: 50 });

async function createUser(balance: number): Promise<string> {
  const res = await service.app.request("/users", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ username: `u-${randomUUID()}`, initialBalance: balance }),
  });
  expect(res.status).toBe(201);
  return ((await res.json()) as User).id;
}

const order = (userId: string, amount: number) => ({ orderId: randomUUID(), userId, amount });

/** Waits until the consumer group has applied the event with this id. */
async function applied(message: OutgoingMessage) {
  const eventId = message.headers[HEADERS.eventId] as string;
  await waitFor(async () => {
    const rows = await db.db.select().from(inbox).where(eq(inbox.eventId, eventId));
    expect(rows).toHaveLength(1);
  });
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
