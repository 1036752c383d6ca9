import { readFileSync } from "node:fs";
import { hostname } from "node:os";
import {
  CLIENT_TIMEOUT_MARGIN_MS,
  connectionOptions,
  DEFAULT_POOL_MAX,
  DEFAULT_SESSION_TIMEOUTS,
  type SessionTimeouts,
} from "@saga/db";
import { envMillis, httpEnvVars, MAX_TIMER_MS } from "@saga/http";
import type { KafkaOptions, RetryPolicy } from "@saga/kafka";
import {
  DEFAULT_KAFKA_CLIENT,
  DEFAULT_RETRY_POLICY,
  DEFAULT_SESSION_TIMEOUT_MS,
  KAFKA_CLIENTS,
  MAX_MESSAGE_BYTES,
  SASL_MECHANISMS,
} from "@saga/kafka";
import { z } from "zod";
import { DEFAULT_DEAD_LETTER_MAX_BYTES, MIN_DEAD_LETTER_MAX_BYTES } from "./outbox.ts";

/**
 * A service's pool has 10 connections (`DB_POOL_MAX`): more requests at once would only queue for one,
 * unbounded; a deployment that sets another pool sets the lanes with it (README, "Connection poolers and the
 * connection budget"). For the first 30 s after a start a queued request may wait up to 1 s, its queue
 * bounded by that wait (see `httpEnvVars`): the bench's fresh starts at half the capacity had reads and
 * orders refused on a full queue and after 100 ms in it while every process compiled its code
 * (bench/JOURNAL.md, sixth round). After it, a queue of 16: 64 lowered the goodput at twice the capacity.
 */
export const SERVICE_HTTP_DEFAULTS = {
  readInFlight: 8,
  writeInFlight: 8,
  queue: 16,
  warmUpMs: 30_000,
  warmUpQueueMs: 1000,
};

/**
 * Under load (events arriving faster than one per 40 ms), a consumed batch waits 20 ms for the events
 * about to arrive: at 100 sagas/s a third fewer statements and write transactions a saga, and more sagas
 * carried at saturation, for about 35 ms more a saga at 50/s, where each of its two hops waits
 * (bench/JOURNAL.md, "Session 24"). 0 starts every batch at once.
 */
export const DEFAULT_CONSUMER_LINGER_MS = 20;

/**
 * Inbox rows and idempotency keys are kept 15 days, longer than a broker with Kafka's defaults can deliver
 * a record again: until retention.ms after the last record of its segment, which closes segment.ms after
 * its first (7 + 7 days, plus the 5-minute retention check), to a group that starts again from the earliest
 * offset once its offsets expired (7 days after it emptied). Past it a redelivered event is no longer
 * recognised by its inbox row. The inbox, not the topics, is the side made longer: topics are made in
 * several places and keep the settings they were made with, and a shorter retention.ms would shorten how
 * long a stopped group can catch up without losing events.
 * https://kafka.apache.org/documentation/#topicconfigs_retention.ms
 */
const DEFAULT_INBOX_RETENTION_HOURS = 15 * 24;

/** Variables every process of the saga reads the same way. */
export const envVars = {
  port: (fallback: number) => z.coerce.number().int().min(0).max(65_535).default(fallback),
  /** A PostgreSQL URL that `connectionOptions` takes (its TLS files read): refused at start-up, by its name. */
  postgresUrl: z.string().superRefine((url, ctx) => {
    try {
      connectionOptions(url);
    } catch (err) {
      ctx.addIssue({ code: "custom", message: (err as Error).message });
    }
  }),
  kafkaBrokers: z
    .string()
    .transform((s) =>
      s
        .split(",")
        .map((b) => b.trim())
        .filter(Boolean),
    )
    .pipe(
      z
        .array(
          z
            .string()
            .regex(/^(\[[0-9a-fA-F:.]+\]|[^:\s[\]]+):\d+$/, "must be host:port ([address]:port for IPv6)"),
        )
        .min(1, "must name a broker"),
    ),
  topicPrefix: z.string().default(""),
  /** The Kafka client library behind @saga/kafka (its README has the measurements behind the default). */
  kafkaClient: z.enum(KAFKA_CLIENTS).default(DEFAULT_KAFKA_CLIENT),
  logLevel: z.enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"]).default("info"),
  /** The address to listen on: loopback by default; a container sets 0.0.0.0 to be reached on its network. */
  host: z.string().min(1).default("127.0.0.1"),
  /** The gateway's internal credential (shared secret); a service refuses its API without it. */
  internalSecret: z.string().min(32, "must be at least 32 characters").optional(),
  /**
   * The documented development switch: lets a process start without its secrets (a service then
   * answers its API to anyone who reaches it, the gateway accepts the public development key).
   */
  devMode: z.stringbool().default(false),
  /**
   * `statement_timeout` of every session of the process's pools, in ms (0: none). Longer than the idle
   * bound below, so a statement waiting for the locks of a frozen transaction is freed, not cancelled.
   * The client's own bound, a timer, waits 2 s longer (`clientQueryTimeoutMs`).
   */
  dbStatementTimeoutMs: envMillis({
    min: 0,
    max: MAX_TIMER_MS - CLIENT_TIMEOUT_MARGIN_MS,
    why: "the client waits 2000 ms longer, on a Node.js timer",
  }).default(DEFAULT_SESSION_TIMEOUTS.statementTimeoutMs),
  /** `idle_in_transaction_session_timeout` of every session of the process's pools, in ms (0: none). */
  dbIdleInTransactionTimeoutMs: envMillis({ min: 0 }).default(
    DEFAULT_SESSION_TIMEOUTS.idleInTransactionTimeoutMs,
  ),
};

/**
 * How every process that talks to Kafka reaches a broker that asks for TLS or SASL (a managed Kafka);
 * `kafkaSecurity` checks them together. None set: plaintext, no authentication, as the local broker.
 */
export const kafkaSecurityEnvVars = {
  /** TLS to every broker. */
  KAFKA_SSL: z.stringbool().default(false),
  /** A PEM file of the authorities to check the brokers' certificates against; the system's without it. */
  KAFKA_SSL_CA_FILE: z.string().min(1).optional(),
  /** Written as Kafka's sasl.mechanism (PLAIN, SCRAM-SHA-512) or in lower case. */
  KAFKA_SASL_MECHANISM: z
    .string()
    .transform((s) => s.toLowerCase())
    .pipe(
      z.enum(SASL_MECHANISMS, {
        error: `must be ${SASL_MECHANISMS.join(", ")} (what both Kafka clients sign in with)`,
      }),
    )
    .optional(),
  KAFKA_SASL_USERNAME: z.string().min(1).optional(),
  /** Never logged. */
  KAFKA_SASL_PASSWORD: z.string().min(1).optional(),
};

type KafkaSecurityEnv = z.infer<z.ZodObject<typeof kafkaSecurityEnvVars>>;

/**
 * The TLS and SASL options of a process's Kafka client, from its environment; reads the CA file. Fails
 * with the variables' names when they do not go together: SASL needs a mechanism, a user name and a
 * password; a CA file needs KAFKA_SSL=true; PLAIN sends the password as it is, so it needs TLS (SCRAM
 * never sends it, and may go without).
 */
export function kafkaSecurity(env: KafkaSecurityEnv): Pick<KafkaOptions, "tls" | "sasl"> {
  const problems: string[] = [];
  const {
    KAFKA_SASL_MECHANISM: mechanism,
    KAFKA_SASL_USERNAME: username,
    KAFKA_SASL_PASSWORD: password,
  } = env;
  if (mechanism || username || password) {
    if (!mechanism)
      problems.push("KAFKA_SASL_MECHANISM: required with KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD");
    if (!username) problems.push("KAFKA_SASL_USERNAME: required with KAFKA_SASL_MECHANISM");
    if (!password) problems.push("KAFKA_SASL_PASSWORD: required with KAFKA_SASL_MECHANISM");
  }
  if (mechanism === "plain" && !env.KAFKA_SSL)
    problems.push(
      "KAFKA_SASL_MECHANISM: plain sends the password in clear; set KAFKA_SSL=true, or use scram-sha-256 or scram-sha-512",
    );
  let ca: string | undefined;
  if (env.KAFKA_SSL_CA_FILE !== undefined) {
    if (!env.KAFKA_SSL) problems.push("KAFKA_SSL_CA_FILE: only with KAFKA_SSL=true");
    try {
      ca = readFileSync(env.KAFKA_SSL_CA_FILE, "utf8");
      if (!ca.includes("-----BEGIN CERTIFICATE-----"))
        problems.push(`KAFKA_SSL_CA_FILE: ${env.KAFKA_SSL_CA_FILE} holds no PEM certificate`);
    } catch (err) {
      problems.push(`KAFKA_SSL_CA_FILE: cannot read ${env.KAFKA_SSL_CA_FILE} (${(err as Error).message})`);
    }
  }
  if (problems.length > 0) throw new Error(`invalid environment: ${problems.join("; ")}`);
  return {
    ...(env.KAFKA_SSL && { tls: ca === undefined ? {} : { ca } }),
    ...(mechanism && username && password && { sasl: { mechanism, username, password } }),
  };
}

/** `DB_STATEMENT_TIMEOUT_MS` alone, for a tool that must read it as the processes it starts do. */
export const statementTimeoutEnv = z.object({ DB_STATEMENT_TIMEOUT_MS: envVars.dbStatementTimeoutMs });

/**
 * kafkajs 2.2.4 splits a bootstrap broker at its first colon, so it cannot reach an IPv6 address (`[::1]:9092`
 * would be host "["); @platformatic/kafka reads the brackets. For the schemas of processes that use Kafka.
 */
export const kafkajsBrokers = {
  check: (env: { KAFKA_CLIENT: string; KAFKA_BROKERS: string[] }) =>
    env.KAFKA_CLIENT !== "kafkajs" || !env.KAFKA_BROKERS.some((broker) => broker.startsWith("[")),
  issue: {
    message:
      "kafkajs cannot reach an IPv6 address; name the broker by a host name, or use KAFKA_CLIENT=platformatic",
    path: ["KAFKA_BROKERS"],
  },
};

/** The session bounds a process's environment asks for (`DB_STATEMENT_TIMEOUT_MS`, `DB_IDLE_IN_TRANSACTION_TIMEOUT_MS`). */
export function sessionTimeouts(env: {
  DB_STATEMENT_TIMEOUT_MS: number;
  DB_IDLE_IN_TRANSACTION_TIMEOUT_MS: number;
}): SessionTimeouts {
  return {
    statementTimeoutMs: env.DB_STATEMENT_TIMEOUT_MS,
    idleInTransactionTimeoutMs: env.DB_IDLE_IN_TRANSACTION_TIMEOUT_MS,
  };
}

/**
 * The environment of a saga service (a process that owns a database and consumes events). Each service
 * gives its own default port and consumer group.
 */
export function serviceEnvSchema(defaults: { port: number; consumerGroup: string }) {
  const variables = z.object({
    PORT: envVars.port(defaults.port),
    HOST: envVars.host,
    DATABASE_URL: envVars.postgresUrl,
    KAFKA_BROKERS: envVars.kafkaBrokers,
    KAFKA_TOPIC_PREFIX: envVars.topicPrefix,
    KAFKA_CLIENT: envVars.kafkaClient,
    ...kafkaSecurityEnvVars,
    INSTANCE_ID: z.string().min(1).default(hostname()),
    CONSUMER_GROUP: z.string().min(1).default(defaults.consumerGroup),
    LOG_LEVEL: envVars.logLevel,
    INBOX_RETENTION_HOURS: z.coerce.number().positive().default(DEFAULT_INBOX_RETENTION_HOURS),
    // The failure contract's budget: an event failing with an unexpected error (a bug) is tried this
    // often, with back-off doubling from the first delay to the last, then dead-lettered. With the
    // defaults that is about 26 s; transient failures (the database down) are retried without end.
    CONSUMER_RETRY_ATTEMPTS: z.coerce.number().int().min(1).default(DEFAULT_RETRY_POLICY.maxAttempts),
    CONSUMER_RETRY_BACKOFF_MS: envMillis().default(DEFAULT_RETRY_POLICY.backoffMs),
    CONSUMER_RETRY_BACKOFF_MAX_MS: envMillis().default(DEFAULT_RETRY_POLICY.maxBackoffMs),
    // How long a consumed batch waits for more events while they arrive faster than one per twice that:
    // fewer, larger transactions under load, each event waiting up to that long (ConsumerOptions.lingerMs).
    CONSUMER_LINGER_MS: envMillis({ min: 0, max: 1000 }).default(DEFAULT_CONSUMER_LINGER_MS),
    // The most bytes a dead letter's message on `<topic>.dlq` may take; a longer value is cut to fit
    // (deadLetterRow). At most what one message to Kafka may be, or the relay could not send it.
    DEAD_LETTER_MAX_BYTES: z.coerce
      .number()
      .int()
      .min(MIN_DEAD_LETTER_MAX_BYTES)
      .max(MAX_MESSAGE_BYTES)
      .default(DEFAULT_DEAD_LETTER_MAX_BYTES),
    DB_STATEMENT_TIMEOUT_MS: envVars.dbStatementTimeoutMs,
    DB_IDLE_IN_TRANSACTION_TIMEOUT_MS: envVars.dbIdleInTransactionTimeoutMs,
    // Connections of the service's pool, which its API and its consumer share. The admission lanes'
    // defaults (SERVICE_HTTP_DEFAULTS) are sized for the default: raise ADMISSION_READ_IN_FLIGHT and
    // ADMISSION_WRITE_IN_FLIGHT with it (README, "Connection poolers and the connection budget").
    DB_POOL_MAX: z.coerce.number().int().positive().default(DEFAULT_POOL_MAX),
    ...httpEnvVars(SERVICE_HTTP_DEFAULTS),
    INTERNAL_SECRET: envVars.internalSecret,
    AUTH_DEV_MODE: envVars.devMode,
  });
  // The order design.md's "Bounded work" relies on. A consumer frozen mid-transaction (SIGSTOP, a long
  // pause) keeps its session: only the idle bound ends its transaction and frees its locks, and it must do
  // so before Kafka gives its partitions to another member, whose statements would otherwise wait for
  // those locks until they time out (57014, retried), the partition stuck.
  return (
    variables
      .refine(kafkajsBrokers.check, kafkajsBrokers.issue)
      .refine((env) => env.DB_IDLE_IN_TRANSACTION_TIMEOUT_MS > 0, {
        message:
          "must not be 0 (none): a consumer frozen mid-transaction would hold its locks for ever after Kafka gives its partitions to another member",
        path: ["DB_IDLE_IN_TRANSACTION_TIMEOUT_MS"],
      })
      .refine((env) => env.DB_IDLE_IN_TRANSACTION_TIMEOUT_MS < DEFAULT_SESSION_TIMEOUT_MS, {
        message: `must be shorter than the consumer group's session timeout (${DEFAULT_SESSION_TIMEOUT_MS} ms), after which Kafka gives a frozen consumer's partitions to another member`,
        path: ["DB_IDLE_IN_TRANSACTION_TIMEOUT_MS"],
      })
      // A statement waiting for the locks of a frozen transaction is then freed by the server, not cancelled.
      .refine(
        (env) =>
          env.DB_STATEMENT_TIMEOUT_MS === 0 ||
          env.DB_IDLE_IN_TRANSACTION_TIMEOUT_MS < env.DB_STATEMENT_TIMEOUT_MS,
        {
          message:
            "must be shorter than DB_STATEMENT_TIMEOUT_MS, so that a statement waiting for a frozen transaction's locks gets them rather than being cancelled",
          path: ["DB_IDLE_IN_TRANSACTION_TIMEOUT_MS"],
        },
      )
  );
}

export type ServiceEnv = z.infer<ReturnType<typeof serviceEnvSchema>>;

/** The consumer's retry policy from a service's environment. */
export function retryPolicy(
  env: Pick<
    ServiceEnv,
    "CONSUMER_RETRY_ATTEMPTS" | "CONSUMER_RETRY_BACKOFF_MS" | "CONSUMER_RETRY_BACKOFF_MAX_MS"
  >,
): RetryPolicy {
  return {
    maxAttempts: env.CONSUMER_RETRY_ATTEMPTS,
    backoffMs: env.CONSUMER_RETRY_BACKOFF_MS,
    maxBackoffMs: Math.max(env.CONSUMER_RETRY_BACKOFF_MS, env.CONSUMER_RETRY_BACKOFF_MAX_MS),
  };
}

/**
 * A service's secret or the development switch: without either it would answer its API to anyone, so
 * it must not start.
 */
export function requireInternalSecret(env: Pick<ServiceEnv, "INTERNAL_SECRET" | "AUTH_DEV_MODE">): void {
  if (env.INTERNAL_SECRET === undefined && !env.AUTH_DEV_MODE) {
    throw new Error(
      "invalid environment: INTERNAL_SECRET: required (the gateway's internal credential) unless AUTH_DEV_MODE=true",
    );
  }
}

/** Parses the environment once; a bad or missing variable fails with its name, an empty one is unset. */
export { parseEnv } from "@saga/http";
