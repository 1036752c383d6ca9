import { createPgDatabase, userSchema } from "@saga/db";
import { createLogger } from "@saga/observability";
import { kafkaBrokers } from "@saga/tools/test/harness";
import type { Env } from "../src/env.ts";
import { createUserService } from "../src/service.ts";

export { freshTopicPrefix } from "@saga/messaging/testing";

/** The environment of a user-service instance of one test file. */
export function testEnv(databaseUrl: string, prefix: string, overrides: Partial<Env> = {}): Env {
  return {
    PORT: 0,
    DATABASE_URL: databaseUrl,
    KAFKA_BROKERS: kafkaBrokers(),
    KAFKA_TOPIC_PREFIX: prefix,
    INSTANCE_ID: "test-1",
    CONSUMER_GROUP: `${prefix}user-service`,
    LOG_LEVEL: "error",
    INBOX_RETENTION_HOURS: 168,
    ...overrides,
  };
}

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
