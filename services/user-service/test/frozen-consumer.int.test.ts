import { randomUUID } from "node:crypto";
import { HEADERS, prefixedTopic, TOPICS, type User } from "@saga/contracts";
import { createPgDatabase, userSchema } from "@saga/db";
import { inbox, reservations, users } from "@saga/db/user";
import { createKafka } from "@saga/kafka";
import { claimEvents, sessionTimeouts } from "@saga/messaging";
import { eventMessage } from "@saga/messaging/testing";
import { kafkaBrokers, useFreshDatabase } from "@saga/tools/test/harness";
import { eq } from "drizzle-orm";
import { expect, it, onTestFinished, vi } from "vitest";
import { freshTopicPrefix, openDatabase, startInProcess, testEnv } from "./support.ts";

const databaseUrl = useFreshDatabase("user_frozen");

it("cuts off a consumer frozen mid-transaction, and the next consumer of its partition applies its event", async () => {
  const prefix = await freshTopicPrefix();
  const env = testEnv(databaseUrl(), prefix, { DB_IDLE_IN_TRANSACTION_TIMEOUT_MS: 1500 });
  const service = await startInProcess(env);
  onTestFinished(() => service.stop());
  const db = openDatabase(databaseUrl());
  onTestFinished(() => db.close());

  const created = await service.app.request("/users", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ username: `u-${randomUUID()}`, initialBalance: 5000 }),
  });
  const userId = ((await created.json()) as User).id;
  const order = { orderId: randomUUID(), userId, amount: 1000 };
  const message = eventMessage(TOPICS.orderCreated, order, prefix);
  const eventId = message.headers[HEADERS.eventId] as string;

  // A consumer that froze (or lost its network) while applying this event: a session of a pool made as
  // the service makes its own, with the event's inbox row claimed and its order's advisory lock held
  // exactly as the consumer's first statement leaves them, and then nothing more.
  const lostErrors: Error[] = [];
  const frozen = createPgDatabase(databaseUrl(), userSchema, {
    max: 1,
    applicationName: "frozen-consumer",
    timeouts: sessionTimeouts(env),
    onConnectionError: (err) => lostErrors.push(err),
  });
  onTestFinished(() => frozen.close());
  const session = await frozen.pool.connect();
  await session.query("begin");
  const claimed = await claimEvents(session, {
    consumerGroup: env.CONSUMER_GROUP,
    eventIds: [eventId],
    topics: [message.topic],
    partitions: [0],
    offsets: [0],
    aggregateIds: [order.orderId],
  });
  expect([...claimed]).toEqual([eventId]);

  // The live consumer gets the event and waits behind the frozen transaction's lock and inbox row until
  // the server ends that transaction (idle_in_transaction_session_timeout); then it applies the event.
  await service.start();
  const kafka = createKafka({ brokers: kafkaBrokers(), clientId: "frozen-consumer-test" });
  onTestFinished(() => kafka.close());
  const producer = await kafka.createProducer();
  onTestFinished(() => producer.close());
  await producer.send([message]);

  await vi.waitFor(
    async () => {
      const [row] = await db.db.select().from(reservations).where(eq(reservations.orderId, order.orderId));
      expect(row?.status).toBe("RESERVED");
    },
    { timeout: 30_000, interval: 100 },
  );
  const [user] = await db.db.select().from(users).where(eq(users.id, userId));
  expect(user?.balance).toBe(4000);
  expect(await db.db.select().from(inbox).where(eq(inbox.eventId, eventId))).toHaveLength(1);

  // The server said why it ended the frozen session, and its transaction is gone for good.
  expect(lostErrors.map((e) => (e as { code?: string }).code)).toContain("25P03");
  await expect(session.query("commit")).rejects.toThrow();
  session.release(true);

  // The partition moved on: the group's offset covers the event.
  await vi.waitFor(
    async () => {
      const lag = await kafka.consumerLag(env.CONSUMER_GROUP, [prefixedTopic(prefix, TOPICS.orderCreated)]);
      expect(lag.reduce((sum, p) => sum + p.lag, 0)).toBe(0);
    },
    { timeout: 30_000, interval: 200 },
  );
});
