/**
 * Test support for the services' integration tests: a stand-in for the relay that publishes outbox rows
 * the way the relay does, and a way to produce one event as another service would have.
 */
import { spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { ALL_TOPICS, type EventPayload, prefixedTopic, type Topic } from "@saga/contracts";
import { DEFAULT_POOL_MAX, DEFAULT_SESSION_TIMEOUTS, outbox } from "@saga/db";
import { httpEnvDefaults } from "@saga/http";
import {
  createKafka,
  DEFAULT_KAFKA_CLIENT,
  DEFAULT_RETRY_POLICY,
  type EventProducer,
  type KafkaClient,
  type OutgoingMessage,
} from "@saga/kafka";
import { kafkaBrokers, uniqueName } from "@saga/tools/test/harness";
import { asc, eq, inArray, isNull } from "drizzle-orm";
import type { MetricValue, Registry } from "prom-client";
import type { Executor } from "../db.ts";
import { DEFAULT_CONSUMER_LINGER_MS, SERVICE_HTTP_DEFAULTS, type ServiceEnv } from "../env.ts";
import { DEFAULT_DEAD_LETTER_MAX_BYTES, type OutboxRow, outboxMessage, outboxRow } from "../outbox.ts";

/** The Kafka message another service's relay would publish for this event. */
export function eventMessage<T extends Topic>(
  topic: T,
  payload: EventPayload<T> & { orderId: string },
  topicPrefix: string,
  extra: { traceparent?: string } = {},
): OutgoingMessage {
  const row = outboxRow({ topic, aggregateId: payload.orderId, payload, traceparent: extra.traceparent });
  return outboxMessage({ ...row, headers: row.headers ?? {}, createdAt: new Date() }, topicPrefix);
}

export type OutboxPublisher = {
  /** Publishes every unpublished row of every database now; resolves with the number published. */
  flush(): Promise<number>;
  /** Publishes an already published row again, as a relay does after a crash. */
  republish(db: Executor, eventId: string): Promise<void>;
  stop(): Promise<void>;
};

/**
 * A minimal relay for tests: polls the outbox tables, publishes unpublished rows in position order with
 * the envelope headers, and marks them published after Kafka acknowledged them.
 */
export async function startOutboxPublisher(opts: {
  kafka: KafkaClient;
  topicPrefix: string;
  databases: Executor[];
  intervalMs?: number;
}): Promise<OutboxPublisher> {
  const { kafka, topicPrefix, databases, intervalMs = 50 } = opts;
  const producer: EventProducer = await kafka.createProducer();
  let stopped = false;
  let round: Promise<number> | undefined;

  async function publishFrom(db: Executor): Promise<number> {
    const rows: OutboxRow[] = await db
      .select()
      .from(outbox)
      .where(isNull(outbox.publishedAt))
      .orderBy(asc(outbox.position))
      .limit(500);
    if (rows.length === 0) return 0;
    await producer.send(rows.map((r) => outboxMessage(r, topicPrefix)));
    await db
      .update(outbox)
      .set({ publishedAt: new Date() })
      .where(
        inArray(
          outbox.id,
          rows.map((r) => r.id),
        ),
      );
    return rows.length;
  }

  const flush = async (): Promise<number> => {
    // One round at a time, so no row is sent twice by two overlapping rounds.
    while (round) await round.catch(() => {});
    round = (async () => {
      let n = 0;
      for (const db of databases) n += await publishFrom(db);
      return n;
    })();
    try {
      return await round;
    } finally {
      round = undefined;
    }
  };

  const loop = (async () => {
    while (!stopped) {
      try {
        await flush();
      } catch {
        // The database or broker is restarting in a test; the next round tries again.
      }
      await new Promise((resolve) => setTimeout(resolve, intervalMs));
    }
  })();

  return {
    flush,
    async republish(db, eventId) {
      const [row] = await db.select().from(outbox).where(eq(outbox.id, eventId));
      if (!row) throw new Error(`no outbox row ${eventId}`);
      await producer.send([outboxMessage(row, topicPrefix)]);
    },
    async stop() {
      stopped = true;
      await loop;
      await producer.close();
    },
  };
}

/**
 * Creates every topic of the system under a new random prefix and returns the prefix, for
 * `KAFKA_TOPIC_PREFIX`: the test file's own topics on the shared broker.
 */
export async function freshTopicPrefix(partitions = 3): Promise<string> {
  const prefix = `${uniqueName("test")}.`;
  // Our Kafka module rather than the harness's freshTopics: it waits out a broker that does not know a
  // topic it has just created, which kafkajs's own wait gives up on.
  const kafka = createKafka({ brokers: kafkaBrokers(), clientId: "test-topics" });
  try {
    await kafka.createTopics(
      ALL_TOPICS.map((t) => prefixedTopic(prefix, t)),
      partitions,
    );
  } finally {
    await kafka.close();
  }
  return prefix;
}

/**
 * The sum of a counter's or gauge's series that carry these labels (0 when there are none yet); for a
 * histogram name one of its `_count` or `_sum` series.
 */
export async function metricValue(
  registry: Registry,
  name: string,
  labels: Record<string, string> = {},
): Promise<number> {
  const histogram = /^(.*)_(count|sum)$/.exec(name);
  const metric =
    registry.getSingleMetric(name) ?? (histogram && registry.getSingleMetric(histogram[1] ?? ""));
  if (!metric) throw new Error(`no metric ${name}`);
  const { values } = await metric.get();
  const matching = (values as (MetricValue<string> & { metricName?: string })[]).filter(
    (v) =>
      (v.metricName === undefined || v.metricName === name) &&
      Object.entries(labels).every(([k, l]) => String(v.labels[k]) === l),
  );
  return matching.reduce((sum, v) => sum + v.value, 0);
}

export type ServiceProcess = {
  /** Resolves with the first JSON log line that satisfies `match`. */
  logLine(
    match: (line: Record<string, unknown>) => boolean,
    timeoutMs?: number,
  ): Promise<Record<string, unknown>>;
  /** Sends SIGTERM and resolves with the exit code and the time the process took to exit. */
  terminate(): Promise<{ code: number | null; signal: NodeJS.Signals | null; ms: number }>;
  /** Every line the process wrote to stderr and non-JSON lines of stdout, for a failure message. */
  output(): string;
  kill(): void;
};

/**
 * Runs a service's `src/main.ts` as a real process, the way it runs in production, with the
 * environment given (on top of PATH and the like) and its JSON log lines readable by the test.
 */
export function spawnService(serviceDir: string, env: Record<string, string>): ServiceProcess {
  // Plain `node src/main.ts`: Node strips the types itself, as in production, with no loader.
  const child = spawn(process.execPath, ["src/main.ts"], {
    cwd: serviceDir,
    // Development mode unless the test gives INTERNAL_SECRET: its requests come straight from the test.
    env: { ...process.env, AUTH_DEV_MODE: "true", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const lines: Record<string, unknown>[] = [];
  const other: string[] = [];
  const waiters = new Set<() => void>();
  createInterface({ input: child.stdout }).on("line", (text) => {
    try {
      lines.push(JSON.parse(text));
    } catch {
      other.push(text);
    }
    for (const wake of waiters) wake();
  });
  createInterface({ input: child.stderr }).on("line", (text) => other.push(text));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once("exit", (code, signal) => resolve({ code, signal })),
  );
  const output = () =>
    [...other, ...lines.filter((l) => Number(l.level) >= 30).map((l) => JSON.stringify(l))].join("\n");

  return {
    logLine(match, timeoutMs = 30_000) {
      return new Promise((resolve, reject) => {
        const check = () => {
          const found = lines.find(match);
          if (!found) return;
          cleanup();
          resolve(found);
        };
        const timer = setTimeout(() => {
          cleanup();
          reject(new Error(`no matching log line within ${timeoutMs} ms; output:\n${output()}`));
        }, timeoutMs);
        const gone = () => {
          cleanup();
          reject(new Error(`process exited before the log line; output:\n${output()}`));
        };
        const cleanup = () => {
          clearTimeout(timer);
          waiters.delete(check);
          child.off("exit", gone);
        };
        waiters.add(check);
        child.once("exit", gone);
        check();
      });
    },
    async terminate() {
      const started = performance.now();
      child.kill("SIGTERM");
      const result = await exited;
      return { ...result, ms: performance.now() - started };
    },
    output,
    kill: () => child.kill("SIGKILL"),
  };
}

/** The environment of a service instance of one test file: its database, its topic prefix and group. */
export function serviceTestEnv(
  service: "user-service" | "order-service",
  databaseUrl: string,
  prefix: string,
  overrides: Partial<ServiceEnv> = {},
): ServiceEnv {
  return {
    PORT: 0,
    DATABASE_URL: databaseUrl,
    KAFKA_BROKERS: kafkaBrokers(),
    KAFKA_TOPIC_PREFIX: prefix,
    KAFKA_CLIENT: DEFAULT_KAFKA_CLIENT,
    KAFKA_SSL: false,
    INSTANCE_ID: "test-1",
    CONSUMER_GROUP: `${prefix}${service}`,
    LOG_LEVEL: "error",
    INBOX_RETENTION_HOURS: 168,
    CONSUMER_RETRY_ATTEMPTS: DEFAULT_RETRY_POLICY.maxAttempts,
    CONSUMER_RETRY_BACKOFF_MS: DEFAULT_RETRY_POLICY.backoffMs,
    CONSUMER_RETRY_BACKOFF_MAX_MS: DEFAULT_RETRY_POLICY.maxBackoffMs,
    CONSUMER_LINGER_MS: DEFAULT_CONSUMER_LINGER_MS,
    DEAD_LETTER_MAX_BYTES: DEFAULT_DEAD_LETTER_MAX_BYTES,
    DB_STATEMENT_TIMEOUT_MS: DEFAULT_SESSION_TIMEOUTS.statementTimeoutMs,
    DB_IDLE_IN_TRANSACTION_TIMEOUT_MS: DEFAULT_SESSION_TIMEOUTS.idleInTransactionTimeoutMs,
    DB_POOL_MAX: DEFAULT_POOL_MAX,
    // Tests send bursts (50 orders at once) to check behaviour, not to overload: a queue that holds them.
    ...httpEnvDefaults({ ...SERVICE_HTTP_DEFAULTS, queue: 1000 }),
    ADMISSION_QUEUE_TIMEOUT_MS: 30_000,
    HOST: "127.0.0.1",
    // In-process tests call the app directly, as the gateway would; the credential is tested on its own.
    INTERNAL_SECRET: undefined,
    AUTH_DEV_MODE: true,
    ...overrides,
  };
}
