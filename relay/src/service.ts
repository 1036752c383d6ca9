import { createKafka, type KafkaClient } from "@saga/kafka";
import { createLogger, createMetrics, type Logger, type Metrics } from "@saga/observability";
import postgres from "postgres";
import { createApp } from "./app.ts";
import { crashAt } from "./crash-points.ts";
import { type Env, outboxesOf } from "./env.ts";
import { createLease } from "./lease.ts";
import { createRelayMetrics, type RelayMetrics } from "./metrics.ts";
import { createOutboxRelay, type OutboxRelay } from "./outbox-relay.ts";
import { createOutboxStore } from "./outbox-store.ts";
import { startReplicationWakeups } from "./replication-wakeups.ts";

export type RelayService = {
  app: ReturnType<typeof createApp>;
  logger: Logger;
  metrics: Metrics;
  relayMetrics: RelayMetrics;
  /** The relay of each configured outbox, by name. */
  relays: Map<string, OutboxRelay>;
  start(): void;
  /** Finishes the batches in hand, gives the outboxes up and closes every connection. */
  stop(): Promise<void>;
};

const PROBE_TIMEOUT_MS = 2000;

/** Builds the relay process from its environment: one relay per configured outbox, one Kafka client. */
export function createRelayService(env: Env, opts: { logger?: Logger } = {}): RelayService {
  const logger = (opts.logger ?? createLogger("relay", env.LOG_LEVEL)).child({ instance: env.RELAY_ID });
  const metrics = createMetrics("relay", env.RELAY_ID);
  const relayMetrics = createRelayMetrics(metrics.registry);
  const kafka: KafkaClient = createKafka({
    brokers: env.KAFKA_BROKERS,
    clientId: `relay-${env.RELAY_ID}`,
    client: env.KAFKA_CLIENT,
    logger: (level, message, extra) => logger[level](extra, message),
  });
  const crashPoint = env.RELAY_TEST_CRASH_AT ? crashAt(env.RELAY_TEST_CRASH_AT) : undefined;
  if (crashPoint) logger.warn({ crashAt: env.RELAY_TEST_CRASH_AT }, "test crash point armed");

  const outboxes = outboxesOf(env).map(({ name, url }) => {
    const holderName = `relay/${env.RELAY_ID}/${name}`;
    // Plain postgres.js rather than @saga/db's drizzle client, which turns off the parsing of timestamps.
    // Three connections: reads and marks in turn, cleanup, and the metrics' backlog query.
    // A statement that hangs (a lost connection the kernel has not noticed yet) must not stall the loop for ever.
    const sql = postgres(url, {
      max: 3,
      onnotice: () => {},
      connection: { application_name: holderName, statement_timeout: 30_000 },
    });
    const store = createOutboxStore(sql);
    const relay = createOutboxRelay({
      name,
      store,
      lease: createLease({ url, holderName }),
      kafka,
      startWakeups: (onWake, onError) => startReplicationWakeups({ url, holderName, onWake, onError }),
      topicPrefix: env.KAFKA_TOPIC_PREFIX,
      batchSize: env.RELAY_BATCH_SIZE,
      markChunkSize: env.RELAY_MARK_CHUNK_SIZE,
      pollIntervalMs: env.RELAY_POLL_INTERVAL_MS,
      retentionSeconds: env.OUTBOX_RETENTION_SECONDS,
      cleanupIntervalMs: env.RELAY_CLEANUP_INTERVAL_MS,
      logger,
      metrics: relayMetrics,
      crashPoint,
    });
    return { name, sql, store, relay };
  });

  relayMetrics.onScrapeReadBacklog(async () => {
    await Promise.all(
      outboxes.map(async ({ name, store }) => {
        try {
          const backlog = await withTimeout(store.backlog(), PROBE_TIMEOUT_MS, `${name} database`);
          relayMetrics.backlog.set({ outbox: name }, backlog.rows);
          relayMetrics.lag.set({ outbox: name }, backlog.oldestAgeSeconds);
        } catch (err) {
          // The last values stay: a scrape while the database is down must still answer.
          relayMetrics.errors.inc({ outbox: name, stage: "backlog" });
          logger.warn({ err, outbox: name }, "could not read the backlog");
        }
      }),
    );
  });

  const ready = async () => {
    await Promise.all([
      ...outboxes.map(({ name, sql }) =>
        withTimeout(sql`select 1 from outbox limit 1`, PROBE_TIMEOUT_MS, `${name} database`),
      ),
      withTimeout(kafka.ping(), PROBE_TIMEOUT_MS, "kafka"),
    ]);
  };

  let stopped: Promise<void> | undefined;
  return {
    app: createApp({ logger, metrics, ready }),
    logger,
    metrics,
    relayMetrics,
    relays: new Map(outboxes.map(({ name, relay }) => [name, relay])),
    start() {
      for (const { relay } of outboxes) relay.start();
      logger.info({ outboxes: outboxes.map((o) => o.name), prefix: env.KAFKA_TOPIC_PREFIX }, "relay started");
    },
    stop() {
      stopped ??= (async () => {
        await Promise.all(outboxes.map(({ relay }) => relay.stop()));
        await Promise.all([
          kafka.close().catch(() => {}),
          ...outboxes.map(({ sql }) => sql.end({ timeout: 2 }).catch(() => {})),
        ]);
      })();
      return stopped;
    },
  };
}

/** Rejects when `promise` has not settled within `ms`; the work itself goes on. */
async function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`${what} did not answer within ${ms} ms`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}
