import { createPgDatabase, orderSchema } from "@saga/db";
import { serviceTestEnv } from "@saga/messaging/testing";
import { createLogger } from "@saga/observability";
import type { Env } from "../src/env.ts";
import { createOrderService } from "../src/service.ts";

export { freshTopicPrefix } from "@saga/messaging/testing";

/** The environment of a order-service instance of one test file. */
export const testEnv = (databaseUrl: string, prefix: string, overrides: Partial<Env> = {}): Env => ({
  // Far above any burst of the tests, but for the test of the bound itself.
  SAGA_BACKLOG_LIMIT: 10_000,
  SAGA_BACKLOG_MIN: 10_000,
  SAGA_TARGET_MS: 1000,
  SAGA_BACKLOG_RECOUNT_MS: 5000,
  // Far above any saga of the tests, but for the tests of the deadline itself.
  SAGA_TIMEOUT: 600_000,
  SAGA_SWEEP_INTERVAL_MS: 1000,
  SAGA_SWEEP_BATCH: 500,
  SAGA_BACKLOG_WARMUP_MS: 0,
  SAGA_BACKLOG_WARMUP_MIN_MS: 0,
  SAGA_BACKLOG_WARMUP_AGE_MS: 1,
  ...serviceTestEnv("order-service", databaseUrl, prefix, overrides),
});

/** An order-service in this process; logs only errors unless TEST_LOG_LEVEL says otherwise. */
export function startInProcess(env: Env) {
  return createOrderService(env, {
    logger: createLogger("order-service", process.env.TEST_LOG_LEVEL ?? env.LOG_LEVEL),
  });
}

/** A pool on the service's database for the tests' own reads and writes. */
export function openDatabase(url: string) {
  return createPgDatabase(url, orderSchema, { max: 3, applicationName: "test" });
}
