import { randomUUID } from "node:crypto";
import type { User } from "@saga/contracts";
import { createPgDatabase, userSchema } from "@saga/db";
import { createKafka } from "@saga/kafka";
import { freshTopicPrefix, serviceTestEnv, startOutboxPublisher } from "@saga/messaging/testing";
import { createLogger } from "@saga/observability";
import { kafkaBrokers } from "@saga/tools/test/harness";
import { expect } from "vitest";
import type { Env } from "../src/env.ts";
import { createUserService, type UserService } from "../src/service.ts";

export { freshTopicPrefix };

/** The environment of a user-service instance of one test file. */
export const testEnv = (databaseUrl: string, prefix: string, overrides: Partial<Env> = {}): Env =>
  serviceTestEnv("user-service", databaseUrl, prefix, overrides);

/** A user-service in this process; logs only errors unless TEST_LOG_LEVEL says otherwise. */
export function startInProcess(env: Env) {
  return createUserService(env, {
    logger: createLogger("user-service", process.env.TEST_LOG_LEVEL ?? env.LOG_LEVEL),
  });
}

/** A pool on the service's database for the tests' own reads and writes. */
export function openDatabase(url: string) {
  return createPgDatabase(url, userSchema, { max: 3, applicationName: "test" });
}

/**
 * What a consumer test file runs against: a user-service in this process on its own database and topics,
 * a pool on that database, a producer to feed its topics, and a publisher of its outbox.
 */
export async function startConsumerHarness(
  databaseUrl: string,
  clientId: string,
  overrides: Partial<Env> = {},
) {
  const prefix = await freshTopicPrefix();
  const service = await startInProcess(testEnv(databaseUrl, prefix, overrides));
  await service.start();
  const db = openDatabase(databaseUrl);
  const kafka = createKafka({ brokers: kafkaBrokers(), clientId });
  const producer = await kafka.createProducer();
  const publisher = await startOutboxPublisher({ kafka, topicPrefix: prefix, databases: [db.db] });
  return {
    prefix,
    service,
    db,
    kafka,
    producer,
    publisher,
    async stop() {
      await publisher.stop();
      await producer.close();
      await kafka.close();
      await service.stop();
      await db.close();
    },
  };
}

/** A user created through the service's API with `balance`; its id. */
export async function createUser(service: UserService, balance: number): Promise<string> {
  const res = await service.app.request("/users", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ username: `u-${randomUUID()}`, initialBalance: balance }),
  });
  expect(res.status).toBe(201);
  return ((await res.json()) as User).id;
}
