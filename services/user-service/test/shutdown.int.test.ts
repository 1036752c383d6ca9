import { randomUUID } from "node:crypto";
import { fileURLToPath } from "node:url";
import { TOPICS } from "@saga/contracts";
import { migrateDatabase } from "@saga/db";
import { inbox, outbox, reservations, users } from "@saga/db/user";
import { createKafka, type EventProducer, type KafkaClient } from "@saga/kafka";
import { eventMessage, type ServiceProcess, spawnService } from "@saga/messaging/testing";
import { freePort } from "@saga/tools/infra";
import { kafkaBrokers, useFreshDatabase } from "@saga/tools/test/harness";
import { count, eq } from "drizzle-orm";
import { afterAll, beforeAll, expect, it, vi } from "vitest";
import { freshTopicPrefix, openDatabase } from "./support.ts";

const serviceDir = fileURLToPath(new URL("..", import.meta.url));
const databaseUrl = useFreshDatabase("user_shutdown");
let prefix: string;
let db: ReturnType<typeof openDatabase>;
let kafka: KafkaClient;
let producer: EventProducer;
const processes: ServiceProcess[] = [];

beforeAll(async () => {
  prefix = await freshTopicPrefix();
  await migrateDatabase(databaseUrl(), "user");
  db = openDatabase(databaseUrl());
  kafka = createKafka({ brokers: kafkaBrokers(), clientId: "user-shutdown-test" });
  producer = await kafka.createProducer();
});

afterAll(async () => {
  for (const p of processes) p.kill();
  await producer?.close();
  await kafka?.close();
  await db?.close();
});

async function start(): Promise<ServiceProcess> {
  const service = spawnService(serviceDir, {
    PORT: "0",
    DATABASE_URL: databaseUrl(),
    KAFKA_BROKERS: kafkaBrokers().join(","),
    KAFKA_TOPIC_PREFIX: prefix,
    CONSUMER_GROUP: `${prefix}user-service`,
    INSTANCE_ID: "shutdown-test",
    LOG_LEVEL: "info",
  });
  processes.push(service);
  await service.logLine((l) => l.msg === "consuming");
  return service;
}

const applied = async () =>
  (
    await db.db
      .select({ n: count() })
      .from(inbox)
      .where(eq(inbox.consumerGroup, `${prefix}user-service`))
  )[0]?.n ?? 0;

it("stops within 5 s on SIGTERM during load, and after a restart every event is applied exactly once", async () => {
  const events = 300;
  const amount = 7;
  const [user] = await db.db
    .insert(users)
    .values({ username: `load-${randomUUID()}`, initialBalance: events * amount, balance: events * amount })
    .returning();
  if (!user) throw new Error("no user");
  const orderIds = Array.from({ length: events }, () => randomUUID());

  let service = await start();
  // Keep producing while the process is stopped and restarted: it must stop mid-stream.
  const producing = (async () => {
    for (let i = 0; i < events; i += 20) {
      const batch = orderIds.slice(i, i + 20);
      await producer.send(
        batch.map((orderId) =>
          eventMessage(TOPICS.orderCreated, { orderId, userId: user.id, amount }, prefix),
        ),
      );
      await new Promise((resolve) => setTimeout(resolve, 30));
    }
  })();
  producing.catch(() => {}); // awaited below; a failed assertion before that must not leave it unhandled
  await vi.waitFor(async () => expect(await applied()).toBeGreaterThanOrEqual(40), {
    timeout: 30_000,
    interval: 20,
  });

  const stopped = await service.terminate();
  const appliedAtStop = await applied();
  expect(stopped, service.output()).toMatchObject({ code: 0 });
  expect(stopped.ms).toBeLessThan(5000);
  expect(appliedAtStop).toBeLessThan(events);

  service = await start();
  await producing;
  await vi.waitFor(async () => expect(await applied()).toBe(events), { timeout: 60_000, interval: 100 });
  await service.terminate();

  // Exactly once: one reservation and one emitted event per order, and the balance debited once each.
  const reserved = await db.db.select().from(reservations).where(eq(reservations.userId, user.id));
  expect(reserved).toHaveLength(events);
  expect(reserved.every((r) => r.status === "RESERVED")).toBe(true);
  const [after] = await db.db.select().from(users).where(eq(users.id, user.id));
  expect(after?.balance).toBe(0);
  const emitted = await db.db
    .select({ n: count() })
    .from(outbox)
    .where(eq(outbox.topic, TOPICS.creditReserved));
  expect(emitted[0]?.n).toBe(events);
});

it("stops cleanly on SIGTERM before its consumer has joined: exit 0 and `stopped`, no error", async () => {
  // Nothing listens there: the consumer's start waits for a broker (its topics first) until the signal.
  const noBroker = `127.0.0.1:${await freePort()}`;
  const service = spawnService(serviceDir, {
    PORT: "0",
    DATABASE_URL: databaseUrl(),
    KAFKA_BROKERS: noBroker,
    KAFKA_TOPIC_PREFIX: prefix,
    CONSUMER_GROUP: `${prefix}user-service`,
    INSTANCE_ID: "shutdown-before-join",
    LOG_LEVEL: "info",
  });
  processes.push(service);
  await service.logLine((l) => l.msg === "listening");

  const stopped = await service.terminate();
  expect(stopped, service.output()).toMatchObject({ code: 0 });
  // Its last lines may still be on their way through the pipe.
  await vi.waitFor(() => expect(service.output()).toContain('"msg":"stopped"'));
  // Neither an error logged nor a stack trace printed.
  expect(service.output()).not.toMatch(/"level":(50|60)|^\s+at /m);
});
