import { hostname } from "node:os";
import { clientQueryTimeoutMs } from "@saga/db";
import { envMillis } from "@saga/http";
import { envVars, kafkajsBrokers, kafkaSecurityEnvVars, parseEnv, sessionTimeouts } from "@saga/messaging";
import { z } from "zod";

const positiveInt = z.coerce.number().int().positive();

/** Where a test may make the relay kill itself (see crash-points.ts); never set in production. */
const CRASH_POINTS = ["before-send", "after-send", "mid-mark"] as const;
export type CrashPoint = (typeof CRASH_POINTS)[number];

export const Env = z
  .object({
    PORT: envVars.port(9400),
    HOST: envVars.host,
    /** Each outbox is tailed on its own; give one or both. */
    USER_DB_URL: envVars.postgresUrl.optional(),
    ORDER_DB_URL: envVars.postgresUrl.optional(),
    KAFKA_BROKERS: envVars.kafkaBrokers,
    KAFKA_TOPIC_PREFIX: envVars.topicPrefix,
    KAFKA_CLIENT: envVars.kafkaClient,
    ...kafkaSecurityEnvVars,
    /** Names this instance in logs, metrics, the lock holder's application_name and its replication slot. */
    RELAY_ID: z.string().min(1).default(`${hostname()}-${process.pid}`),
    /**
     * `table`: read the oldest unpublished rows back from the table every round. `cdc`: send the rows
     * the replication stream carries as it delivers them, and read the table only to catch up (after
     * each (re)connection of the stream, and while it is down). See README.md, "Change data capture".
     */
    RELAY_MODE: z.enum(["table", "cdc"]).default("cdc"),
    /** Most rows read, sent and marked in one round. */
    RELAY_BATCH_SIZE: positiveInt.max(10_000).default(500),
    /**
     * Rows per marking statement. Each is its own short transaction: a crash between two leaves a
     * prefix of the batch marked, and only the rest is sent again.
     */
    RELAY_MARK_CHUNK_SIZE: positiveInt.max(10_000).default(250),
    /**
     * CDC: streamed rows acknowledged by Kafka wait up to this long to be marked, so that one statement
     * marks the rows of many sends (0: each send's rows at once). A crash re-sends what waits.
     */
    RELAY_MARK_INTERVAL_MS: envMillis({ min: 0, max: 10_000 }).default(250),
    /**
     * CDC: while rows arrive faster than one per twice this, a send waits this long for the rows about
     * to arrive, so that one lease check, visibility check and produce request carry them all (0: never).
     */
    RELAY_LINGER_MS: envMillis({ min: 0, max: 1000 }).default(10),
    /** CDC: a lingering send goes as soon as this many rows wait, before the linger's end. */
    RELAY_LINGER_ROWS: positiveInt.max(10_000).default(16),
    /**
     * CDC: how long rows received from the replication stream may hold its slot's position (and with
     * it every WAL record the server writes after it, in every database) without one of them being
     * acknowledged by Kafka: while the broker is away, or sends keep failing. Past it they are given up
     * (the table still has them, and is read before the stream is trusted again) and the position moves
     * on. Longer than a healthy relay holds it (a send, then RELAY_MARK_INTERVAL_MS until the mark).
     */
    RELAY_SLOT_HOLD_MS: envMillis().default(30_000),
    /**
     * How long the owner may wait for Kafka without an acknowledgement while rows wait to be sent (or
     * its producer connects) before it gives the outbox up to another instance: the Kafka clients retry,
     * and the relay tries again what they give up, so a broker it cannot reach would otherwise keep the
     * outbox with it, unpublished, for as long as the partition lasts. Long enough for a broker restart or a leader election to be ridden
     * out by the client's own retries (its back-off reaches 5 s); short enough that a standby that can
     * reach Kafka publishes within it.
     */
    RELAY_SEND_STALL_MS: envMillis().default(30_000),
    /** The safety-net poll while wake-ups work; a missed wake-up costs at most this much latency. */
    RELAY_POLL_INTERVAL_MS: envMillis().default(1000),
    /**
     * Published rows are deleted this long after they were published; 0: once Kafka acknowledged them,
     * instead of being marked (no record of what was published is kept, and a drain runs faster).
     */
    OUTBOX_RETENTION_SECONDS: z.coerce.number().int().min(0).default(3600),
    /** How often the owner deletes expired rows. */
    RELAY_CLEANUP_INTERVAL_MS: envMillis().default(60_000),
    DB_STATEMENT_TIMEOUT_MS: envVars.dbStatementTimeoutMs,
    DB_IDLE_IN_TRANSACTION_TIMEOUT_MS: envVars.dbIdleInTransactionTimeoutMs,
    LOG_LEVEL: envVars.logLevel,
    /**
     * Test only: `<point>[:<n>]` kills the process with SIGKILL the n-th time (default 1st) a non-empty
     * batch reaches that point. Points: before-send, after-send, mid-mark.
     */
    RELAY_TEST_CRASH_AT: z
      .string()
      .regex(
        new RegExp(`^(${CRASH_POINTS.join("|")})(:[1-9]\\d*)?$`),
        `must be <${CRASH_POINTS.join("|")}>[:n]`,
      )
      .transform((s) => {
        const [point, n] = s.split(":");
        return { point: point as CrashPoint, occurrence: n ? Number(n) : 1 };
      })
      .optional(),
  })
  .refine(kafkajsBrokers.check, kafkajsBrokers.issue)
  .refine((env) => env.USER_DB_URL || env.ORDER_DB_URL, {
    message: "set USER_DB_URL, ORDER_DB_URL or both",
    path: ["USER_DB_URL"],
  })
  // A hold no longer than the mark's wait would give up the rows of every healthy send.
  .refine((env) => env.RELAY_SLOT_HOLD_MS > env.RELAY_MARK_INTERVAL_MS, {
    message: "must be longer than RELAY_MARK_INTERVAL_MS",
    path: ["RELAY_SLOT_HOLD_MS"],
  })
  // After a failed send the stall's clock runs on through the re-read of the rows, which the loop waits
  // for up to its bound on one statement: a shorter stall would give the outbox up for a slow database.
  .refine(
    (env) => {
      const statementMs = clientQueryTimeoutMs(sessionTimeouts(env));
      return statementMs === 0 || env.RELAY_SEND_STALL_MS > statementMs;
    },
    {
      message: "must be longer than DB_STATEMENT_TIMEOUT_MS + 2000 (the loop's bound on one statement)",
      path: ["RELAY_SEND_STALL_MS"],
    },
  );
export type Env = z.infer<typeof Env>;

/** Parses the environment once; a bad or missing variable fails start-up with its name. */
export function parseRelayEnv(source: Record<string, string | undefined>): Env {
  return parseEnv(Env, source);
}

/** The outboxes this relay tails, by name. */
export function outboxesOf(env: Env): { name: "user" | "order"; url: string }[] {
  const outboxes: { name: "user" | "order"; url: string }[] = [];
  if (env.USER_DB_URL) outboxes.push({ name: "user", url: env.USER_DB_URL });
  if (env.ORDER_DB_URL) outboxes.push({ name: "order", url: env.ORDER_DB_URL });
  return outboxes;
}
