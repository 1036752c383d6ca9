import { parseEnv, serviceEnvSchema } from "@saga/messaging";
import { z } from "zod";

export const Env = serviceEnvSchema({ port: 8091, consumerGroup: "order-service" }).extend({
  /**
   * Sagas in flight (PENDING orders) past which POST /orders answers 503 + Retry-After, at most and at
   * least: between the two the bound adapts to keep sagas within SAGA_TARGET_MS. At the saga's
   * throughput on the bench machine (60–90 sagas/s) 40 is about 0.5 s of sagas.
   */
  SAGA_BACKLOG_LIMIT: z.coerce.number().int().positive().default(40),
  SAGA_BACKLOG_MIN: z.coerce.number().int().positive().default(8),
  SAGA_TARGET_MS: z.coerce.number().int().positive().default(1000),
  /**
   * After a start, until 50 sagas in a row ran within SAGA_TARGET_MS (for SAGA_BACKLOG_WARMUP_MS at most),
   * the bound is at least SAGA_BACKLOG_WARMUP_LIMIT and slow sagas do not lower it: the first sagas through
   * a cold broker and cold consumers take seconds. 100 at 70 sagas/s (half the quiet bench machine's
   * capacity) is 1.4 s of sagas.
   */
  SAGA_BACKLOG_WARMUP_MS: z.coerce.number().int().min(0).default(60_000),
  SAGA_BACKLOG_WARMUP_LIMIT: z.coerce.number().int().positive().default(100),
  /** How often the backlog is counted again in the database (between counts it is kept in memory). */
  SAGA_BACKLOG_RECOUNT_MS: z.coerce.number().int().positive().default(5000),
});
export type Env = z.infer<typeof Env>;

/** Parses the order-service's environment; a bad variable fails start-up with its name. */
export const parseOrderServiceEnv = (source: Record<string, string | undefined>): Env =>
  parseEnv(Env, source);
