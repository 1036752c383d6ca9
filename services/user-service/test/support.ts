import { createPgDatabase, userSchema } from "@saga/db";
import { serviceTestEnv } from "@saga/messaging/testing";
import { createLogger } from "@saga/observability";
import type { Env } from "../src/env.ts";
import { createUserService } from "../src/service.ts";

export { freshTopicPrefix } from "@saga/messaging/testing";

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
