import { clientQueryTimeoutMs, postgresJsOptions, sessionParameters } from "@saga/db";
import { createKafka, type KafkaClient } from "@saga/kafka";
import { kafkaSecurity, sessionTimeouts } from "@saga/messaging";
import { createLogger, createMetrics, type Logger, type Metrics } from "@saga/observability";
import { withTimeout } from "@saga/runtime";
import postgres from "postgres";
import { createApp } from "./app.ts";
import { crashAt } from "./crash-points.ts";
import { type Env, outboxesOf } from "./env.ts";
import { createLease } from "./lease.ts";
import { createRelayMetrics, type RelayMetrics } from "./metrics.ts";
import { createOutboxRelay, type OutboxRelay } from "./outbox-relay.ts";
import { cancelQuery, createOutboxStore, type OutboxStore, type OutboxStoreOptions } from "./outbox-store.ts";
import { startReplicationWakeups } from "./replication-wakeups.ts";

export type RelayService = {
  app: ReturnType<typeof createApp>;
  logger: Logger;
  metrics: Metrics;
  relayMetrics: RelayMetrics;
  /** The relay of each configured outbox, by name. */
  relays: Map<string, OutboxRelay>;
  start(): void;
  /**
   * Settles with the error of the first relay loop that crashed (it has given its outbox up by then);
   * `/ready` fails from that moment, and `main.ts` exits non-zero so that the supervisor restarts it.
   */
  failed: Promise<Error>;
  /**
   * Finishes the batches in hand, gives the outboxes up and closes every connection; whatever is still
   * waited for when `deadline` aborts is cut short.
   */
  stop(deadline?: AbortSignal): Promise<void>;
};

/** What a relay is built from besides its environment; tests replace parts of it. */
export type RelayDependencies = {
  logger?: Logger;
  /** The queries on one outbox (default `createOutboxStore`). */
  createStore?: (sql: postgres.Sql, options: OutboxStoreOptions) => OutboxStore;
};

const PROBE_TIMEOUT_MS = 2000;

/**
 * `/ready`'s statement on each outbox: the table is there and this role may read it (both checked before
 * it runs), and it reads no page. `select 1 from outbox limit 1` read the table from its first page to
 * its first live row, so once a drained backlog had been deleted, every page it had emptied, each time
 * (248,000 pages, 0.7-0.8 s, and as long after a vacuum, which leaves empty pages where they are until new
 * rows fill them).
 */
export const OUTBOX_PROBE = "select from outbox limit 0";

/** Builds the relay process from its environment: one relay per configured outbox, one Kafka client. */
export function createRelayService(env: Env, opts: RelayDependencies = {}): RelayService {
  const kafkaTlsAndSasl = kafkaSecurity(env);
  const logger = (opts.logger ?? createLogger("relay", env.LOG_LEVEL)).child({ instance: env.RELAY_ID });
  const createStore = opts.createStore ?? createOutboxStore;
  const timeouts = sessionTimeouts(env);
  const metrics = createMetrics("relay", env.RELAY_ID);
  const relayMetrics = createRelayMetrics(metrics.registry);
  const kafka: KafkaClient = createKafka({
    brokers: env.KAFKA_BROKERS,
    clientId: `relay-${env.RELAY_ID}`,
    client: env.KAFKA_CLIENT,
    ...kafkaTlsAndSasl,
    logger,
  });
  const crashPoint = env.RELAY_TEST_CRASH_AT ? crashAt(env.RELAY_TEST_CRASH_AT) : undefined;
  if (crashPoint) logger.warn({ crashAt: env.RELAY_TEST_CRASH_AT }, "test crash point armed");

  const outboxes = outboxesOf(env).map(({ name, url }) => {
    const holderName = `relay/${env.RELAY_ID}/${name}`;
    // Plain postgres.js rather than @saga/db's drizzle client, which turns off the parsing of timestamps.
    // Three connections: reads and marks in turn, cleanup, and the metrics' backlog query. The server
    // bounds each statement; the loop's own client-side timeout covers a connection the server cannot
    // answer on (lost without a FIN or RST), which statement_timeout cannot.
    const sql = postgres({
      ...postgresJsOptions(url),
      max: 3,
      onnotice: () => {},
      connection: sessionParameters({
        application_name: holderName,
        statement_timeout: timeouts.statementTimeoutMs,
        idle_in_transaction_session_timeout: timeouts.idleInTransactionTimeoutMs,
      }),
    });
    const store = createStore(sql, { deleteOnPublish: env.OUTBOX_RETENTION_SECONDS === 0 });
    const relay = createOutboxRelay({
      name,
      store,
      lease: createLease({ url, holderName }),
      kafka,
      startWakeups: (onWake, onError) =>
        startReplicationWakeups({
          url,
          holderName,
          onWake,
          onError,
          logger: logger.child({ outbox: name }),
          // A bound on the rows held in memory, 10 batches: 5 of transactions not yet sent, beyond which
          // the WAL sender waits, and 5 of the one being received (a larger one is read from the table);
          // and on how long they may hold the server's WAL.
          rows:
            env.RELAY_MODE === "cdc"
              ? { maxQueuedRows: 10 * env.RELAY_BATCH_SIZE, maxHoldMs: env.RELAY_SLOT_HOLD_MS }
              : undefined,
        }),
      mode: env.RELAY_MODE,
      topicPrefix: env.KAFKA_TOPIC_PREFIX,
      batchSize: env.RELAY_BATCH_SIZE,
      markChunkSize: env.RELAY_MARK_CHUNK_SIZE,
      markIntervalMs: env.RELAY_MARK_INTERVAL_MS,
      lingerMs: env.RELAY_LINGER_MS,
      lingerRows: env.RELAY_LINGER_ROWS,
      queryTimeoutMs: clientQueryTimeoutMs(timeouts) || Number.POSITIVE_INFINITY,
      sendStallMs: env.RELAY_SEND_STALL_MS,
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
      outboxes.map(async ({ name, relay }) => {
        try {
          const backlog = await withTimeout((s) => relay.backlog(s), PROBE_TIMEOUT_MS, `${name} database`);
          relayMetrics.backlogRead(name, backlog);
        } catch (err) {
          // A scrape while the database is down must still answer: the backlog keeps its last value.
          relayMetrics.backlogUnread(name);
          relayMetrics.errors.inc({ outbox: name, stage: "backlog" });
          logger.warn({ err, outbox: name }, "could not read the backlog");
        }
      }),
    );
  });

  const failed = Promise.race(outboxes.map(({ relay }) => relay.failed));
  const ready = async () => {
    for (const { name, relay } of outboxes) {
      const failure = relay.failure();
      if (failure) throw new Error(`the relay of the ${name} outbox crashed: ${failure.message}`);
    }
    await Promise.all([
      ...outboxes.map(({ name, sql }) =>
        withTimeout(
          async (signal) => {
            const probe = sql.unsafe(OUTBOX_PROBE, [], { prepare: true });
            signal.addEventListener("abort", () => cancelQuery(probe), { once: true });
            return probe;
          },
          PROBE_TIMEOUT_MS,
          `${name} database`,
        ),
      ),
      withTimeout((signal) => kafka.ping(signal), PROBE_TIMEOUT_MS, "kafka"),
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
    failed,
    stop(deadline) {
      stopped ??= (async () => {
        await Promise.all(outboxes.map(({ relay }) => relay.stop(deadline)));
        await Promise.all([
          kafka.close(deadline).catch(() => {}),
          // postgres.js waits this long (s) for queries in flight, then closes the connections anyway.
          ...outboxes.map(({ sql }) => sql.end({ timeout: deadline?.aborted ? 0 : 1 }).catch(() => {})),
        ]);
      })();
      return stopped;
    },
  };
}
