import { dlqTopic, prefixedTopic } from "@saga/contracts";
import { createPgDatabase, migrateDatabase, type PgDatabase, type ServiceDatabase } from "@saga/db";
import { AppError } from "@saga/http";
import { createKafka, type EventConsumer, type KafkaClient } from "@saga/kafka";
import { createLogger, createMetrics, type Logger, type Metrics } from "@saga/observability";
import { withTimeout } from "@saga/runtime";
import {
  kafkaSecurity,
  requireInternalSecret,
  retryPolicy,
  type ServiceEnv,
  sessionTimeouts,
} from "./env.ts";
import { isRetriableError, unknownOutcome } from "./errors.ts";
import { type Periodic, startLagMonitor, startRetention } from "./housekeeping.ts";
import { type InboxOptions, startInboxConsumer } from "./inbox.ts";
import { createMessagingMetrics, type MessagingMetrics } from "./metrics.ts";
import { readiness } from "./runtime.ts";

export type ServiceRuntime<TSchema extends Record<string, unknown>> = {
  env: ServiceEnv;
  logger: Logger;
  metrics: Metrics;
  messagingMetrics: MessagingMetrics;
  /** The pool (`db.db`) and its transactions (`db.transaction`). */
  db: PgDatabase<TSchema>;
  kafka: KafkaClient;
  /**
   * Resolves when the database and a Kafka broker answer and, once `startConsuming` was called, the
   * consumer has joined its group: a service is not ready to take orders whose saga cannot move yet.
   */
  ready: () => Promise<void>;
  /**
   * Joins the consumer group for these topics and starts the inbox pruning and lag reporting. A `stop()`
   * meanwhile cuts it short: it then resolves, consuming nothing (a SIGTERM while the broker is away).
   */
  startConsuming(consume: Pick<InboxOptions, "topics" | "applyBatch">): Promise<void>;
  /** True while the consumer is a member of its group. */
  isConsuming(): boolean;
  /**
   * Finishes the event in hand, commits its offset, leaves the group and closes the pools; a consumer
   * still joining is waited for first, so that it leaves the group too. When `signal`
   * aborts first (the process's shutdown deadline), every step still waited for is cut short: the
   * consumer drops its connections, the pool stops waiting for its clients.
   */
  stop(signal?: AbortSignal): Promise<void>;
};

/**
 * Everything a saga service needs besides its routes and handlers: logger, metrics, its migrated
 * database, the Kafka client, and the inbox consumer with its housekeeping.
 */
export async function createServiceRuntime<TSchema extends Record<string, unknown>>(opts: {
  service: string;
  database: ServiceDatabase;
  schema: TSchema;
  env: ServiceEnv;
  logger?: Logger;
}): Promise<ServiceRuntime<TSchema>> {
  const { service, database, schema, env } = opts;
  const logger = (opts.logger ?? createLogger(service, env.LOG_LEVEL)).child({ instance: env.INSTANCE_ID });
  const metrics = createMetrics(service, env.INSTANCE_ID);
  const messagingMetrics = createMessagingMetrics(metrics.registry);
  requireInternalSecret(env);
  const kafkaTlsAndSasl = kafkaSecurity(env);
  if (env.INTERNAL_SECRET === undefined) {
    logger.warn(
      "AUTH_DEV_MODE: no INTERNAL_SECRET, so this service answers its API to anyone who reaches it; never in production",
    );
  }

  const { unknownMigrations } = await migrateDatabase(env.DATABASE_URL, database);
  if (unknownMigrations > 0) {
    logger.warn(
      { unknownMigrations },
      "the database has migrations newer than this version's: a newer version migrated it, and this one may fail on its schema (docs/design.md, Upgrading)",
    );
  }
  const pool = createPgDatabase(env.DATABASE_URL, schema, {
    max: env.DB_POOL_MAX,
    applicationName: `${service}/${env.INSTANCE_ID}`,
    timeouts: sessionTimeouts(env),
    onConnectionError: (err) => logger.warn({ err }, "database connection lost; the pool replaces it"),
  });
  const kafka = createKafka({
    brokers: env.KAFKA_BROKERS,
    clientId: `${service}-${env.INSTANCE_ID}`,
    client: env.KAFKA_CLIENT,
    ...kafkaTlsAndSasl,
    logger,
  });

  let consumer: EventConsumer | undefined;
  let consuming = false;
  const reachable = readiness({ db: pool.db, kafka });
  const periodic: Periodic[] = [];
  let stopped: Promise<void> | undefined;
  // Set once stop() begins: a start still running ends without an error and starts nothing more.
  let stopping = false;
  // Settles once a consumer being created has joined its group, or failed to.
  let joining: Promise<void> | undefined;
  const stoppedWhileStarting = () => logger.info("stopped while the consumer was starting");

  return {
    env,
    logger,
    metrics,
    messagingMetrics,
    db: pool,
    kafka,
    async ready() {
      await reachable();
      if (consuming && !consumer?.isRunning()) throw new Error("the consumer has not joined its group yet");
    },
    async startConsuming({ topics, applyBatch }) {
      if (stopping) return;
      consuming = true;
      try {
        // Normally made by the deployment; creating what is missing lets a service start on a bare broker.
        await kafka.createTopics(
          [...topics, ...topics.map(dlqTopic)].map((t) => prefixedTopic(env.KAFKA_TOPIC_PREFIX, t)),
        );
        if (stopping) return stoppedWhileStarting();
        const joined = startInboxConsumer({
          kafka,
          db: pool,
          consumerGroup: env.CONSUMER_GROUP,
          topicPrefix: env.KAFKA_TOPIC_PREFIX,
          topics,
          applyBatch,
          logger,
          metrics: messagingMetrics,
          retry: retryPolicy(env),
          lingerMs: env.CONSUMER_LINGER_MS,
          deadLetterMaxBytes: env.DEAD_LETTER_MAX_BYTES,
        });
        joining = joined.then(
          () => {},
          () => {},
        );
        // Assigned even when a stop began meanwhile: that stop waits for it, then stops it.
        consumer = await joined;
      } catch (err) {
        // The stop closed the client it was waiting on (a broker that is away): a start cut short, which
        // is what the stop asked for, not a failure of the process.
        if (stopping) return stoppedWhileStarting();
        throw err;
      }
      if (stopping) return stoppedWhileStarting();
      periodic.push(
        startRetention({ db: pool.db, retentionHours: env.INBOX_RETENTION_HOURS, logger }),
        startLagMonitor({
          kafka,
          consumerGroup: env.CONSUMER_GROUP,
          topicPrefix: env.KAFKA_TOPIC_PREFIX,
          topics,
          metrics: messagingMetrics,
          logger,
        }),
      );
      logger.info({ group: env.CONSUMER_GROUP, prefix: env.KAFKA_TOPIC_PREFIX }, "consuming");
    },
    isConsuming: () => consumer?.isRunning() ?? false,
    stop(signal) {
      stopped ??= (async () => {
        stopping = true;
        // A consumer still joining its group: once it has, it leaves the group below like any other
        // (rather than being dropped, its partitions held until its session times out).
        if (joining)
          await withTimeout(
            () => joining ?? Promise.resolve(),
            Number.POSITIVE_INFINITY,
            "joining the group",
            signal,
          ).catch((err) => logger.warn({ err }, "waiting for the consumer to join its group cut short"));
        await consumer?.stop(signal);
        await Promise.all(periodic.map((p) => p.stop(signal)));
        // Also ends the requests of a start still making its topics (the platformatic client's: kafkajs's
        // connection retries go on until the process exits, and no consumer is started after them).
        await kafka.close(signal).catch((err) => logger.warn({ err }, "closing the kafka client cut short"));
        // Waits for clients still checked out (a request's query): each is bounded by the client-side timeout.
        await withTimeout(() => pool.close(), Number.POSITIVE_INFINITY, "closing the pool", signal).catch(
          (err) => logger.warn({ err }, "closing the database pool cut short"),
        );
      })();
      return stopped;
    },
  };
}

const READS = new Set(["GET", "HEAD"]);

/**
 * For `createBaseApp`'s `mapError`: a database failure `isRetriableError` accepts, during a request. A
 * read, or a write known to have changed nothing (`unknownOutcome`: no connection, or refused or rolled
 * back by the server), is a 503: the database is unavailable, retry. A write whose statement may have
 * reached the server and committed, its answer lost, is answered as the gateway answers a write its
 * upstream did not answer: 502 for a connection that broke, 504 for no answer in time, saying it may have
 * been applied, since a 503 says that nothing was (the API document's errors).
 */
export function databaseFailure(err: Error, method: string): AppError | undefined {
  if (!isRetriableError(err)) return undefined;
  const unknown = READS.has(method) ? undefined : unknownOutcome(err);
  if (unknown === "lost")
    return new AppError(
      "BAD_GATEWAY",
      `the database connection was lost before it answered${MAY_HAVE_BEEN_APPLIED}`,
    );
  if (unknown === "timed-out")
    return new AppError("GATEWAY_TIMEOUT", `the database did not answer in time${MAY_HAVE_BEEN_APPLIED}`);
  return new AppError("UNAVAILABLE", "the database is unavailable; retry later");
}

const MAY_HAVE_BEEN_APPLIED =
  ": the request may have been applied (send it again with the same Idempotency-Key)";
