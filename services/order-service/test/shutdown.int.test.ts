import { randomUUID } from "node:crypto";
import { fileURLToPath } from "node:url";
import { type Order, TOPICS } from "@saga/contracts";
import { migrateDatabase } from "@saga/db";
import { inbox, orders, outbox } from "@saga/db/order";
import { createKafka, type EventProducer, type KafkaClient } from "@saga/kafka";
import { eventMessage, type ServiceProcess, spawnService } from "@saga/messaging/testing";
import { freePort } from "@saga/tools/infra";
import { kafkaBrokers, useFreshDatabase } from "@saga/tools/test/harness";
import { count, eq } from "drizzle-orm";
import { afterAll, beforeAll, expect, it, vi } from "vitest";
import { freshTopicPrefix, openDatabase } from "./support.ts";

const serviceDir = fileURLToPath(new URL("..", import.meta.url));
const databaseUrl = useFreshDatabase("order_shutdown");
let prefix: string;
let db: ReturnType<typeof openDatabase>;
let kafka: KafkaClient;
let producer: EventProducer;
const processes: ServiceProcess[] = [];

beforeAll(async () => {
  prefix = await freshTopicPrefix();
  await migrateDatabase(databaseUrl(), "order");
  db = openDatabase(databaseUrl());
  kafka = createKafka({ brokers: kafkaBrokers(), clientId: "order-shutdown-test" });
  producer = await kafka.createProducer();
});

afterAll(async () => {
  for (const p of processes) p.kill();
  await producer?.close();
  await kafka?.close();
  await db?.close();
});

async function start(): Promise<{ service: ServiceProcess; url: string }> {
  const service = spawnService(serviceDir, {
    PORT: "0",
    DATABASE_URL: databaseUrl(),
    KAFKA_BROKERS: kafkaBrokers().join(","),
    KAFKA_TOPIC_PREFIX: prefix,
    CONSUMER_GROUP: `${prefix}order-service`,
    INSTANCE_ID: "shutdown-test",
    LOG_LEVEL: "info",
    // Neither the saga bound (no user-service answers: every order stays PENDING) nor shedding a burst
    // on a loaded machine is what this test is about.
    SAGA_BACKLOG_LIMIT: "1000",
    // The floor too: with no saga ever finishing, the bound is the floor once an order has waited 5 s,
    // which a loaded machine's 150 orders outlasted (70 of 150 accepted, seen in a full run).
    SAGA_BACKLOG_MIN: "1000",
    ADMISSION_QUEUE: "1000",
    ADMISSION_QUEUE_TIMEOUT_MS: "30000",
  });
  processes.push(service);
  const listening = await service.logLine((l) => l.msg === "listening");
  await service.logLine((l) => l.msg === "consuming");
  return { service, url: `http://127.0.0.1:${listening.port}` };
}

const countOf = async (table: typeof orders | typeof inbox) =>
  (await db.db.select({ n: count() }).from(table))[0]?.n ?? 0;
const confirmed = async () =>
  (await db.db.select({ n: count() }).from(orders).where(eq(orders.status, "CONFIRMED")))[0]?.n ?? 0;

async function placeOrder(url: string): Promise<Order | undefined> {
  try {
    const res = await fetch(`${url}/orders`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ userId: randomUUID(), amount: 10 }),
    });
    return res.status === 201 ? ((await res.json()) as Order) : undefined;
  } catch {
    return undefined; // refused: the process is shutting down
  }
}

it("stops within 5 s on SIGTERM under HTTP and event load; after a restart nothing is lost or applied twice", async () => {
  let { service, url } = await start();
  const first: Order[] = [];
  for (let i = 0; i < 15; i++) {
    const batch = await Promise.all(Array.from({ length: 10 }, () => placeOrder(url)));
    first.push(...batch.filter((o): o is Order => o !== undefined));
  }
  expect(first).toHaveLength(150);

  // Credit for every order, produced while the process stops and restarts. The last 30 wait for the
  // stop, so that some are always left for the restarted process, however fast this one applies.
  let terminated!: () => void;
  const stopping = new Promise<void>((resolve) => (terminated = resolve));
  const producing = (async () => {
    for (let i = 0; i < first.length; i += 15) {
      if (i >= first.length - 30) await stopping;
      await producer.send(
        first
          .slice(i, i + 15)
          .map((o) =>
            eventMessage(
              TOPICS.creditReserved,
              { orderId: o.id, userId: o.userId, amount: o.amount },
              prefix,
            ),
          ),
      );
      await new Promise((resolve) => setTimeout(resolve, 30));
    }
  })();
  producing.catch(() => {}); // awaited below; a failed assertion before that must not leave it unhandled
  // And requests in flight when SIGTERM arrives.
  let loading = true;
  const accepted: Order[] = [];
  const httpLoad = (async () => {
    while (loading) {
      const batch = await Promise.all(Array.from({ length: 4 }, () => placeOrder(url)));
      accepted.push(...batch.filter((o): o is Order => o !== undefined));
    }
  })();
  await vi.waitFor(async () => expect(await confirmed()).toBeGreaterThanOrEqual(20), {
    timeout: 30_000,
    interval: 20,
  });

  const stopped = await service.terminate();
  terminated();
  loading = false;
  await httpLoad;
  expect(stopped, service.output()).toMatchObject({ code: 0 });
  expect(stopped.ms).toBeLessThan(5000);
  expect(await confirmed()).toBeLessThan(first.length);

  ({ service, url } = await start());
  await producing;
  await vi.waitFor(async () => expect(await countOf(inbox)).toBe(first.length), {
    timeout: 60_000,
    interval: 100,
  });
  await service.terminate();

  // Every credit event applied exactly once: each first-phase order CONFIRMED, one inbox row each.
  expect(await confirmed()).toBe(first.length);
  const rows = await db.db.select().from(orders);
  // Every answered POST has its order, and every order its one order.created event: the request's
  // transaction held both or neither, also when SIGTERM came in the middle.
  const ids = new Set(rows.map((r) => r.id));
  expect(accepted.every((o) => ids.has(o.id))).toBe(true);
  const events = await db.db.select().from(outbox).where(eq(outbox.topic, TOPICS.orderCreated));
  expect(events).toHaveLength(rows.length);
  expect(new Set(events.map((e) => e.aggregateId))).toEqual(ids);
});

it("stops cleanly on SIGTERM before its consumer has joined: exit 0 and `stopped`, no error", async () => {
  // Nothing listens there: the consumer's start waits for a broker (its topics first) until the signal.
  const noBroker = `127.0.0.1:${await freePort()}`;
  const service = spawnService(serviceDir, {
    PORT: "0",
    DATABASE_URL: databaseUrl(),
    KAFKA_BROKERS: noBroker,
    KAFKA_TOPIC_PREFIX: prefix,
    CONSUMER_GROUP: `${prefix}order-service`,
    INSTANCE_ID: "shutdown-before-join",
    LOG_LEVEL: "info",
  });
  processes.push(service);
  // It listens once its hot path is warm, which needs no broker.
  await service.logLine((l) => l.msg === "listening");

  const stopped = await service.terminate();
  expect(stopped, service.output()).toMatchObject({ code: 0 });
  // Its last lines may still be on their way through the pipe.
  await vi.waitFor(() => expect(service.output()).toContain('"msg":"stopped"'));
  // Neither an error logged nor a stack trace printed.
  expect(service.output()).not.toMatch(/"level":(50|60)|^\s+at /m);
});
