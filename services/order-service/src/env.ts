import { envMillis, MAX_TIMER_MS } from "@saga/http";
import { parseEnv, serviceEnvSchema } from "@saga/messaging";
import { z } from "zod";

const UNIT_MS = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 } as const;

/** A duration such as `60s`, `1500ms`, `5m` or `1h` (a bare number is seconds), in milliseconds. */
const duration = z
  .string()
  .trim()
  .regex(/^\d+(\.\d+)?(ms|s|m|h)?$/, "must be a duration such as 60s, 1500ms or 5m")
  .transform((s) => {
    const [, value = "", unit = "s"] = /^([\d.]+)(ms|s|m|h)?$/.exec(s) ?? [];
    return Number(value) * UNIT_MS[unit as keyof typeof UNIT_MS];
  })
  .pipe(z.number().positive("must be longer than 0").max(MAX_TIMER_MS, `must be at most ${MAX_TIMER_MS} ms`));

export const Env = serviceEnvSchema({ port: 8091, consumerGroup: "order-service" })
  .extend({
    /**
     * Sagas in flight (PENDING orders) past which POST /orders answers 503 + Retry-After: the most sagas
     * finished per second by every instance (the best 5-second rate the saga has shown, kept through a
     * quiet spell, which says nothing of what it can do; a saga that takes longer than SAGA_TARGET_MS, or an
     * order a count finds PENDING longer, brings it down to the best of the last 30 s), times
     * SAGA_TARGET_MS (Little's law: what finishes within the target at the rate the saga has shown), never
     * more than SAGA_BACKLOG_LIMIT (memory, and the saga deadline) nor less than SAGA_BACKLOG_MIN (a system
     * whose saga has shown no rate yet takes a burst that size). 500 ms of sagas in flight keeps an accepted
     * order's saga within about a second under overload.
     */
    SAGA_BACKLOG_LIMIT: z.coerce.number().int().positive().default(2000),
    SAGA_BACKLOG_MIN: z.coerce.number().int().positive().default(40),
    SAGA_TARGET_MS: envMillis().default(500),
    /**
     * After a start, until 50 sagas in a row ran within SAGA_TARGET_MS and SAGA_BACKLOG_WARMUP_MIN_MS passed
     * (for SAGA_BACKLOG_WARMUP_MS at most), the bound holds only once an order has been
     * PENDING for SAGA_BACKLOG_WARMUP_AGE_MS: the saga has shown no throughput yet, and the first sagas
     * through a cold broker and cold consumers take seconds (saga p99 2.8 s in the bench's fresh-start
     * phase on a busy machine). Fifty sagas on time alone are half a second at 100 orders/s, and a cold
     * path stalls after them too: the bench's fresh start at half the capacity was refused orders by the
     * bound from its 1st to its 26th second (bench/JOURNAL.md, "Overload, fifth round").
     */
    SAGA_BACKLOG_WARMUP_MS: envMillis({ min: 0 }).default(60_000),
    SAGA_BACKLOG_WARMUP_MIN_MS: envMillis({ min: 0 }).default(30_000),
    SAGA_BACKLOG_WARMUP_AGE_MS: envMillis().default(5000),
    /** How often the backlog is counted again in the database (between counts it is kept in memory). */
    SAGA_BACKLOG_RECOUNT_MS: envMillis().default(5000),
    /**
     * The saga deadline, in milliseconds once parsed: an order still PENDING this long after its creation
     * is canceled with reason TIMEOUT and emits `order.canceled`. 60 s is three times the slowest saga p99
     * the bench measured under overload (19.6 s, bench/JOURNAL.md), so it ends sagas that something stopped
     * (a dead-lettered reply, a user-service down), not slow ones.
     */
    SAGA_TIMEOUT: duration
      .refine(
        (ms) => ms >= 1000,
        "must be at least 1s: a shorter deadline cancels sagas that are slow, not stopped (a fresh start's take seconds)",
      )
      .default(60_000),
    /** How often the sweeper looks for sagas past the deadline (a saga ends at most this much late). */
    SAGA_SWEEP_INTERVAL_MS: envMillis().default(5000),
    /** Orders canceled per statement of a sweep; a full batch is followed by another at once. */
    SAGA_SWEEP_BATCH: z.coerce.number().int().positive().max(10_000).default(500),
  })
  // The backlog bound admits orders whose sagas it expects to finish within SAGA_TARGET_MS: a deadline
  // within it would cancel sagas that are on time.
  .refine((env) => env.SAGA_TIMEOUT > env.SAGA_TARGET_MS, {
    message:
      "must be longer than SAGA_TARGET_MS, within which the backlog bound expects an accepted saga to end",
    path: ["SAGA_TIMEOUT"],
  });
export type Env = z.infer<typeof Env>;

/** Parses the order-service's environment; a bad variable fails start-up with its name. */
export const parseOrderServiceEnv = (source: Record<string, string | undefined>): Env =>
  parseEnv(Env, source);
