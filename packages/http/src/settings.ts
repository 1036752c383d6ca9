import { z } from "zod";
import type { AdmissionOptions } from "./admission.ts";

const count = z.coerce.number().int().positive();
const zeroOrMore = z.coerce.number().int().min(0);

/**
 * The longest delay a Node.js timer keeps: a longer one is set to 1 ms
 * (https://nodejs.org/api/timers.html#settimeoutcallback-delay-args), so a bound meant to be long would
 * fire at once. PostgreSQL's `statement_timeout` stops there too (an int of ms).
 */
export const MAX_TIMER_MS = 2_147_483_647;

/**
 * A setting in milliseconds, for every process's schema: a whole number from `min` (1 unless given) to
 * `max` (MAX_TIMER_MS unless given; `why` says why a lower one).
 */
export function envMillis({
  min = 1,
  max = MAX_TIMER_MS,
  why = max === MAX_TIMER_MS ? "the longest a Node.js timer waits" : undefined,
}: {
  min?: number;
  max?: number;
  why?: string;
} = {}) {
  return z.coerce
    .number()
    .int()
    .min(min)
    .max(max, `must be at most ${max}${why ? ` (${why})` : ""}`);
}

/**
 * The HTTP settings every process reads from its environment (spread into its zod schema): admission
 * control, and the server's defences against slow or oversized clients. Defaults per process.
 */
export function httpEnvVars(defaults: {
  readInFlight: number;
  writeInFlight: number;
  queue: number;
  warmUpMs?: number;
  warmUpQueueMs?: number;
  warmUpQueue?: number;
}) {
  return {
    /** Requests served at once per lane (reads, writes); past it they queue. */
    ADMISSION_READ_IN_FLIGHT: count.default(defaults.readInFlight),
    ADMISSION_WRITE_IN_FLIGHT: count.default(defaults.writeInFlight),
    /** Long polls (`Prefer: wait`) at once: they hold a socket and a timer, not a database connection. */
    ADMISSION_WAIT_IN_FLIGHT: count.default(2048),
    /**
     * Requests that may wait per lane, and for how long, before they are shed with 503 + Retry-After:
     * ADMISSION_QUEUE_TIMEOUT_MS in a standing queue (not empty for ADMISSION_QUEUE_INTERVAL_MS:
     * overload), ADMISSION_QUEUE_INTERVAL_MS in a burst (the queue was empty within that time).
     */
    ADMISSION_QUEUE: zeroOrMore.default(defaults.queue),
    ADMISSION_QUEUE_TIMEOUT_MS: envMillis().default(20),
    ADMISSION_QUEUE_INTERVAL_MS: envMillis().default(100),
    /**
     * In a burst a lane's queue may hold up to this many (not fewer than ADMISSION_QUEUE; a lane with no
     * queue has none in a burst either): a burst is judged by its wait, ADMISSION_QUEUE_INTERVAL_MS, not by
     * its count. A hundred reads at once on an idle service, each a millisecond, were refused but 24 (8 served
     * and 16 queued) when the count bounded a burst too. A standing queue holds ADMISSION_QUEUE again.
     */
    ADMISSION_BURST_QUEUE: zeroOrMore.default(1024),
    /**
     * For this long after a start (a process stalls for its first compilations and cold caches, not for
     * overload), any queued request may wait ADMISSION_WARMUP_QUEUE_MS and ADMISSION_WARMUP_QUEUE may wait
     * per lane; neither is ever less than outside the warm-up, and both ease down to the lane's own over as
     * long again after it (admission.ts, `warmUpMs`). The queue is bounded by that wait rather
     * than a count (1,024 by default): a fresh start's lanes begin at their floor in front of processes
     * still cold, and at 300 orders/s queues of 64 refused a tenth to a seventh of them at the gateway
     * against under 5% with 1,024 (bench/JOURNAL.md, session 28).
     */
    ADMISSION_WARMUP_MS: envMillis({ min: 0 }).default(defaults.warmUpMs ?? 0),
    ADMISSION_WARMUP_QUEUE_MS: envMillis({ min: 0 }).default(defaults.warmUpQueueMs ?? 0),
    ADMISSION_WARMUP_QUEUE: zeroOrMore.default(defaults.warmUpQueue ?? 1024),
    /**
     * The Retry-After of a request shed under load, in seconds (the lanes', the saga backlog's, the
     * gateway's); the gateway's 503s for no instance in rotation (1) and for a token's keys unavailable (5)
     * keep their own.
     */
    RETRY_AFTER_S: count.default(1),
    /** Largest request head (request line and headers); past it Node answers 431 and closes. */
    HTTP_MAX_HEADER_BYTES: count.default(16 * 1024),
    /** A client must send its whole head within this, and its whole request within the next. */
    HTTP_HEADERS_TIMEOUT_MS: envMillis().default(10_000),
    HTTP_REQUEST_TIMEOUT_MS: envMillis().default(30_000),
  };
}

/**
 * Parses a process's environment once with its schema; a bad or missing variable fails with its name.
 * An empty value (or only spaces) is read as unset, so the variable's default applies, and a required one
 * is missing: Compose's `${VAR}` of an unset VAR, an empty Helm value and a `VAR=` line all pass "", which
 * `z.coerce.number()` would read as 0 (a retention of 0, a statement timeout of none, port 0).
 */
export function parseEnv<T extends z.ZodType>(
  schema: T,
  source: Record<string, string | undefined>,
): z.infer<T> {
  const set = Object.fromEntries(
    Object.entries(source).map(([name, value]) => [name, value?.trim() === "" ? undefined : value]),
  );
  const parsed = schema.safeParse(set);
  if (parsed.success) return parsed.data;
  const problems = parsed.error.issues.map((issue) => {
    const name = issue.path.join(".");
    const missing = issue.code === "invalid_type" && issue.path.length === 1 && set[name] === undefined;
    return `${name || "(environment)"}: ${missing ? "required (unset or empty)" : issue.message}`;
  });
  throw new Error(`invalid environment: ${problems.join("; ")}`);
}

/** Every HTTP setting at its default, for code that builds an environment by hand (tests). */
export const httpEnvDefaults = (defaults: Parameters<typeof httpEnvVars>[0]): HttpEnv =>
  z.object(httpEnvVars(defaults)).parse({});

type HttpEnv = {
  [K in keyof ReturnType<typeof httpEnvVars>]: number;
};

export type ServerLimits = { maxHeaderBytes: number; headersTimeoutMs: number; requestTimeoutMs: number };

/** The parsed settings, in the shapes `createBaseApp` and `serveUntilSignal` take. */
export function httpSettings(env: HttpEnv): {
  admission: Omit<AdmissionOptions, "metrics" | "laneOf">;
  server: ServerLimits;
} {
  return {
    admission: {
      limits: {
        read: { maxInFlight: env.ADMISSION_READ_IN_FLIGHT, maxQueue: env.ADMISSION_QUEUE },
        write: { maxInFlight: env.ADMISSION_WRITE_IN_FLIGHT, maxQueue: env.ADMISSION_QUEUE },
        wait: { maxInFlight: env.ADMISSION_WAIT_IN_FLIGHT, maxQueue: 0 },
      },
      queueTimeoutMs: env.ADMISSION_QUEUE_TIMEOUT_MS,
      queueIntervalMs: env.ADMISSION_QUEUE_INTERVAL_MS,
      burstMaxQueue: env.ADMISSION_BURST_QUEUE,
      warmUpMs: env.ADMISSION_WARMUP_MS,
      warmUpQueueMs: env.ADMISSION_WARMUP_QUEUE_MS,
      warmUpMaxQueue: env.ADMISSION_WARMUP_QUEUE,
      retryAfterS: env.RETRY_AFTER_S,
    },
    server: {
      maxHeaderBytes: env.HTTP_MAX_HEADER_BYTES,
      headersTimeoutMs: env.HTTP_HEADERS_TIMEOUT_MS,
      requestTimeoutMs: env.HTTP_REQUEST_TIMEOUT_MS,
    },
  };
}
