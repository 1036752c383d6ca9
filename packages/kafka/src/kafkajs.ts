/** The kafkajs adapter (kafkajs 2.2.4, unmaintained since 2023): `KAFKA_CLIENT=kafkajs`. */
import { sleep, withTimeout } from "@saga/runtime";
import {
  type Admin,
  type Consumer,
  type ConsumerRunConfig,
  type EachBatchPayload,
  type IHeaders,
  Kafka,
  type LogEntry,
  logLevel,
  Partitioners,
  type Producer,
  type SASLOptions,
} from "kafkajs";
import { createCommitCoalescer } from "./commits.ts";
import { createApplier } from "./handling.ts";
import {
  type ConsumerOptions,
  DEFAULT_COMMIT_INTERVAL_MS,
  DEFAULT_SESSION_TIMEOUT_MS,
  type EventConsumer,
  type EventProducer,
  type IncomingMessage,
  type KafkaClient,
  type KafkaLogger,
  type KafkaOptions,
  type OutgoingMessage,
  type PartitionLag,
} from "./port.ts";
import { createProbes } from "./probes.ts";
import { sendRuns } from "./sizes.ts";

function toKafkajsLevel(level: number): "error" | "warn" | "info" | "debug" {
  if (level <= logLevel.ERROR) return "error";
  if (level === logLevel.WARN) return "warn";
  if (level === logLevel.INFO) return "info";
  return "debug";
}

function decodeHeaders(headers: IHeaders | undefined): Record<string, string | undefined> {
  const out: Record<string, string | undefined> = {};
  for (const [name, value] of Object.entries(headers ?? {})) {
    const first = Array.isArray(value) ? value[0] : value;
    out[name] = first === undefined ? undefined : first.toString();
  }
  return out;
}

// kafkajs's "Restarting the consumer in 1234ms": a jittered delay, which is in the entry's `retryTime` too.
const DELAY_IN_MESSAGE = / in (\d+)ms$/;

/**
 * kafkajs's log entries as lines of `logger`, each message prefixed with `kafka: `. A delay kafkajs writes
 * into a message moves to the `retryTime` field: the process's logger aggregates repeated warnings and
 * errors by their message (@saga/observability, `aggregateRepeats`), and a consumer restarting with a
 * new jittered delay each time would otherwise write a line per restart that never merges with the next.
 */
export function kafkajsLogLines(logger: KafkaLogger | undefined): (entry: LogEntry) => void {
  return ({ level, log }) => {
    const { message, ...extra } = log;
    // kafkajs logs every heartbeat answered "rebalancing" as an error; a rebalance is routine.
    const routine = (extra as { error?: string }).error?.includes("rebalancing");
    const delay = DELAY_IN_MESSAGE.exec(message);
    const fields = delay ? { retryTime: Number(delay[1]), ...extra } : extra;
    const text = delay ? message.slice(0, delay.index) : message;
    logger?.[routine ? "debug" : toKafkajsLevel(level)](fields, `kafka: ${text}`);
  };
}

/** How often a consumer heartbeats its group: kafkajs sends one at most this often, however often asked. */
const HEARTBEAT_INTERVAL_MS = 1000;

/** What a heartbeat answers when its member must rejoin its group before it goes on. */
const REJOIN_ERRORS = new Set(["REBALANCE_IN_PROGRESS", "UNKNOWN_MEMBER_ID", "ILLEGAL_GENERATION"]);

/** Creates a kafkajs client for one set of brokers. */
export function createKafkajsClient({
  brokers,
  clientId,
  logger,
  connectionTimeout = 3000,
  adminTimeout = 2000,
  tls,
  sasl,
}: KafkaOptions): KafkaClient {
  const logCreator = () => kafkajsLogLines(logger);
  // kafkajs sends each broker's host as the TLS server name (SNI), unless it is an IP address. A refused
  // SASL sign-in is an error it does not retry (KafkaJSSASLAuthenticationError): a producer's connect
  // rejects with it, a consumer rejoins (logging it) as after any error it does not restart from.
  const security = {
    ...(tls && { ssl: tls.ca === undefined ? true : { ca: tls.ca } }),
    ...(sasl && { sasl: { ...sasl } as SASLOptions }),
  };
  const kafka = new Kafka({
    brokers,
    clientId,
    ...security,
    connectionTimeout,
    logLevel: logLevel.WARN,
    logCreator,
    // Reconnect forever: a broker restart must never take a process down.
    retry: { retries: Number.MAX_SAFE_INTEGER, initialRetryTime: 200, maxRetryTime: 5000 },
  });
  // What /ready and the lag probe wait for: a client of its own with one retry and every request bounded
  // by `adminTimeout` (the one above would retry for ever), so kafkajs ends its own work within about
  // twice that; a probe in flight is shared (createProbes).
  const probeAdmin = new Kafka({
    brokers,
    clientId: `${clientId}-probe`,
    ...security,
    connectionTimeout: Math.min(connectionTimeout, adminTimeout),
    requestTimeout: adminTimeout,
    logLevel: logLevel.NOTHING,
    retry: { retries: 1, initialRetryTime: 200, maxRetryTime: 200 },
  }).admin();
  let probeConnected: Promise<void> | undefined;
  const shared = createProbes(adminTimeout);
  const probe = <T>(key: string[], signal: AbortSignal | undefined, call: (a: Admin) => Promise<T>) =>
    shared(key, signal, async () => {
      probeConnected ??= probeAdmin.connect().catch((err) => {
        probeConnected = undefined;
        throw err;
      });
      await probeConnected;
      return call(probeAdmin);
    });

  async function createProducer(): Promise<EventProducer> {
    // Idempotent with one request in flight per connection: a retried batch can neither be
    // duplicated by the broker nor overtake the one before it (kafkajs leaves in-flight unbounded).
    const producer: Producer = kafka.producer({
      idempotent: true,
      maxInFlightRequests: 1,
      // The Java client's murmur2 partitioner, so a key lands on the partition the Go and Spring
      // versions would pick; naming it also silences kafkajs's start-up warning about the change.
      createPartitioner: Partitioners.DefaultPartitioner,
      allowAutoTopicCreation: false,
    });
    await producer.connect();
    return {
      async send(messages) {
        if (messages.length === 0) return;
        // One request after the other, each under the broker's limit (sendRuns), so in order.
        for (const run of sendRuns(messages)) {
          const byTopic = new Map<string, OutgoingMessage[]>();
          for (const m of run) {
            const list = byTopic.get(m.topic);
            if (list) list.push(m);
            else byTopic.set(m.topic, [m]);
          }
          await producer.sendBatch({
            acks: -1,
            topicMessages: [...byTopic].map(([topic, ms]) => ({
              topic,
              messages: ms.map((m) => ({ key: m.key, value: m.value, headers: m.headers })),
            })),
          });
        }
      },
      close: (signal) =>
        withTimeout(() => producer.disconnect(), Number.POSITIVE_INFINITY, "closing the producer", signal),
    };
  }

  async function createConsumer(options: ConsumerOptions): Promise<EventConsumer> {
    const { groupId, topics } = options;
    const maxBatchSize = options.maxBatchSize ?? 64;
    const consumer: Consumer = kafka.consumer({
      groupId,
      allowAutoTopicCreation: false,
      sessionTimeout: options.sessionTimeout ?? DEFAULT_SESSION_TIMEOUT_MS,
      heartbeatInterval: HEARTBEAT_INTERVAL_MS,
      // stop() waits for the fetch in flight, which the broker holds this long when there is nothing to
      // read (kafkajs's default is 5 s): short enough to leave the group well within a 5 s shutdown.
      maxWaitTimeInMs: 500,
      retry: {
        retries: Number.MAX_SAFE_INTEGER,
        initialRetryTime: 200,
        maxRetryTime: 5000,
        // Asked only after a retriable error; the CRASH listener below covers the others.
        restartOnFailure: async () => !stopping,
      },
    });
    let stopping = false;
    let running = false;
    let batchesInHand = 0;
    let allBatchesDone: (() => void) | undefined;
    // Consecutive crashes that kafkajs would not restart from; a join resets the back-off.
    let fatalCrashes = 0;
    // The next offset to read of each partition, committed together (commits.ts).
    const commits = createCommitCoalescer<{ topic: string; partition: number; offset: string }>({
      intervalMs: options.commitIntervalMs ?? DEFAULT_COMMIT_INTERVAL_MS,
      commit: async (offsets) => {
        await consumer.commitOffsets(offsets.map(([, o]) => o));
      },
      // A partition whose commit failed is read again from its last commit by whoever owns it next.
      onError: (err) => logger?.warn({ err, groupId }, "kafka: offset commit failed"),
    });
    consumer.on(consumer.events.GROUP_JOIN, ({ payload }) => {
      running = true;
      fatalCrashes = 0;
      const owned = new Set(
        Object.entries(payload.memberAssignment).flatMap(([topic, partitions]) =>
          partitions.map((p) => `${topic}/${p}`),
        ),
      );
      commits.retain((key) => owned.has(key));
    });
    consumer.on(consumer.events.STOP, () => {
      running = false;
    });
    consumer.on(consumer.events.CRASH, ({ payload }) => {
      running = false;
      // kafkajs consults restartOnFailure only for errors it deems retriable: after any other (a
      // coordinator that forgot this member while the broker restarted, say) it leaves the consumer
      // stopped for good. Rejoining is always safe here, because offsets only ever cover committed work.
      if (!payload.restart && !stopping) void restartAfterFatal(payload.error);
    });

    // Wakes a back-off sleep when stop() is called, so shutdown never waits out a retry delay.
    const stopped = new AbortController();
    const applyChunk = createApplier(options, stopped.signal);

    async function restartAfterFatal(err: Error): Promise<void> {
      const delay = Math.min(200 * 2 ** fatalCrashes++, 5000);
      logger?.warn({ err, groupId, delayMs: delay }, "kafka: consumer stopped by an error; rejoining");
      await sleep(delay, stopped.signal);
      if (stopping) return;
      // kafkajs has already disconnected it; run() connects again, and a failed join crashes anew.
      await consumer.run(runConfig).catch((e: Error) => {
        if (!stopping) void restartAfterFatal(e);
      });
    }

    await consumer.connect();
    await consumer.subscribe({ topics, fromBeginning: options.fromBeginning ?? true });
    const runConfig: ConsumerRunConfig = {
      autoCommit: false,
      eachBatchAutoResolve: false,
      partitionsConsumedConcurrently: options.partitionsConsumedConcurrently ?? 3,
      eachBatch: async (payload) => {
        // A batch fetched while stopping is left to the partition's next owner.
        if (stopping) return;
        batchesInHand++;
        try {
          await applyBatch(payload);
        } finally {
          if (--batchesInHand === 0) allBatchesDone?.();
        }
      },
    };
    await consumer.run(runConfig);

    async function applyBatch({ batch, resolveOffset, heartbeat, isRunning, isStale }: EachBatchPayload) {
      const messages = batch.messages.map(
        (m): IncomingMessage => ({
          topic: batch.topic,
          partition: batch.partition,
          offset: m.offset,
          key: m.key ? m.key.toString() : null,
          value: m.value ? m.value.toString() : null,
          headers: decodeHeaders(m.headers),
          timestamp: Number(m.timestamp),
        }),
      );
      let applied: string | undefined;
      // A heartbeat answered that the group is rebalancing (or no longer knows this member): the batch's
      // partition may be another member's once this one rejoins, which it does only after this batch. A
      // message being retried is given up then, not retried on until it is dead-lettered, perhaps after
      // the partition's new owner has applied it; whoever owns the partition reads it again from the
      // last commit.
      let rejoining = false;
      const beat = () =>
        heartbeat().catch((err: unknown) => {
          if (REJOIN_ERRORS.has((err as { type?: string }).type ?? "")) rejoining = true;
          throw err;
        });
      // Stopping ends the batch after what is in hand, as in the platformatic adapter: stop() does not
      // wait for the rest of what was fetched, which the partition's next owner reads from the commit.
      const keepGoing = () => !stopping && isRunning() && !isStale() && !rejoining;
      // kafkajs 2.x heartbeats by itself only between fetches: a transaction that outlasted the session
      // timeout (a statement may take DB_STATEMENT_TIMEOUT_MS, 10 s by default, as long as the services'
      // session) cost the member its partitions in the middle of it, and another member applied them
      // meanwhile. So it heartbeats while the batch is in hand too; one answered "rebalancing" ends the
      // batch after what is in hand, as one between chunks does.
      const beating = setInterval(() => void beat().catch(() => {}), HEARTBEAT_INTERVAL_MS);
      try {
        for (let start = 0; start < messages.length; start += maxBatchSize) {
          if (!keepGoing()) break;
          const chunk = messages.slice(start, start + maxBatchSize);
          const done = await applyChunk(chunk, beat, keepGoing);
          const last = chunk[done - 1];
          if (last) {
            resolveOffset(last.offset);
            applied = last.offset;
          }
          if (done < chunk.length) break;
          await beat();
        }
      } finally {
        clearInterval(beating);
      }
      // Offsets only ever cover messages whose effect is durable. With autoCommit off kafkajs
      // commits nothing by itself, so the next offset to read is marked here, once per batch.
      if (applied !== undefined) {
        const { topic, partition } = batch;
        commits.mark(`${topic}/${partition}`, {
          topic,
          partition,
          offset: (BigInt(applied) + 1n).toString(),
        });
      }
    }

    return {
      async stop(signal) {
        stopping = true;
        stopped.abort();
        // kafkajs cannot drop its connections on demand: past the deadline it is only no longer waited for.
        await withTimeout(
          async () => {
            // The batches in hand finish and their offsets are committed while kafkajs still runs (it
            // commits nothing once stopped); then the group is left.
            if (batchesInHand > 0) await new Promise<void>((resolve) => (allBatchesDone = resolve));
            await commits.flush();
            await consumer.stop();
            await consumer.disconnect();
          },
          Number.POSITIVE_INFINITY,
          "leaving the consumer group",
          signal,
        )
          .catch((err) => logger?.warn({ err }, "kafka: consumer stop cut short"))
          .finally(() => commits.close());
      },
      isRunning: () => running,
    };
  }

  const admin = kafka.admin();
  let adminConnected: Promise<void> | undefined;
  const connectedAdmin = async () => {
    adminConnected ??= admin.connect().catch((err) => {
      adminConnected = undefined;
      throw err;
    });
    await adminConnected;
    return admin;
  };

  /** Committed offset, end offset and lag of a group on each partition of the topics. */
  async function lagOf(a: Admin, groupId: string, topics: string[]): Promise<PartitionLag[]> {
    const committed = await a.fetchOffsets({ groupId, topics });
    const lags: PartitionLag[] = [];
    for (const { topic, partitions } of committed) {
      const bounds = new Map((await a.fetchTopicOffsets(topic)).map((p) => [p.partition, p]));
      for (const p of partitions) {
        const end = Number(bounds.get(p.partition)?.high ?? 0);
        // -1: nothing committed yet, so the group still has to read from the low watermark.
        const at = Number(p.offset) < 0 ? Number(bounds.get(p.partition)?.low ?? 0) : Number(p.offset);
        lags.push({ topic, partition: p.partition, committed: at, end, lag: Math.max(0, end - at) });
      }
    }
    return lags;
  }

  return {
    createProducer,
    createConsumer,

    /** Creates the topics that do not exist yet and resolves once every partition of them has a leader. */
    async createTopics(names: string[], numPartitions = 6): Promise<void> {
      const a = await connectedAdmin();
      const existing = new Set(await a.listTopics());
      const missing = names.filter((t) => !existing.has(t));
      if (missing.length === 0) return;
      // Not kafkajs's waitForLeaders: it gives up when the broker answers a metadata request for a topic
      // it has just created with UNKNOWN_TOPIC_OR_PARTITION, which a busy KRaft broker does for a moment.
      // A failure may be another process creating them meanwhile, or a request that timed out on a busy
      // controller whose creation still completes: fine, as long as they have leaders within the wait.
      const failed = await a
        .createTopics({ waitForLeaders: false, topics: missing.map((topic) => ({ topic, numPartitions })) })
        .then(
          () => undefined,
          (err: unknown) => err,
        );
      for (let attempt = 0; ; attempt++) {
        const ready = await a
          .fetchTopicMetadata({ topics: missing })
          .then(({ topics }) =>
            topics.every((t) => t.partitions.length > 0 && t.partitions.every((p) => p.leader >= 0)),
          )
          .catch(() => false);
        if (ready) return;
        if (attempt === 300)
          throw failed ?? new Error(`topics without leaders after 30 s: ${missing.join(", ")}`);
        await sleep(100);
      }
    },

    async ping(signal) {
      await probe(["ping"], signal, (a) => a.describeCluster());
    },

    consumerLag: (groupId, topics, signal) =>
      probe(["consumer lag", groupId, ...topics], signal, (a) => lagOf(a, groupId, topics)),

    /**
     * Every message of `topics` from the beginning up to their end offsets as of the call, in
     * partition order. For checkers and tests; it joins a throwaway consumer group.
     */
    async readToEnd(topics: string[], timeoutMs = 60_000): Promise<IncomingMessage[]> {
      const a = await connectedAdmin();
      const remaining = new Map<string, number>();
      for (const topic of topics) {
        for (const p of await a.fetchTopicOffsets(topic)) {
          if (Number(p.high) > Number(p.low)) remaining.set(`${topic}/${p.partition}`, Number(p.high));
        }
      }
      const messages: IncomingMessage[] = [];
      if (remaining.size === 0) return messages;
      const consumer = kafka.consumer({
        groupId: `read-to-end-${Date.now()}-${Math.random().toString(36).slice(2)}`,
      });
      await consumer.connect();
      try {
        await consumer.subscribe({ topics, fromBeginning: true });
        await new Promise<void>((resolve, reject) => {
          const timer = setTimeout(
            () => reject(new Error(`readToEnd: ${remaining.size} partitions unread after ${timeoutMs} ms`)),
            timeoutMs,
          );
          consumer
            .run({
              autoCommit: false,
              eachMessage: async ({ topic, partition, message: m }) => {
                const key = `${topic}/${partition}`;
                const end = remaining.get(key);
                if (end === undefined || Number(m.offset) >= end) return;
                messages.push({
                  topic,
                  partition,
                  offset: m.offset,
                  key: m.key ? m.key.toString() : null,
                  value: m.value ? m.value.toString() : null,
                  headers: decodeHeaders(m.headers),
                  timestamp: Number(m.timestamp),
                });
                if (Number(m.offset) + 1 >= end) remaining.delete(key);
                if (remaining.size === 0) {
                  clearTimeout(timer);
                  resolve();
                }
              },
            })
            .catch(reject);
        });
      } finally {
        await consumer.disconnect();
      }
      return messages;
    },

    async close(signal) {
      const closing = [adminConnected && admin.disconnect(), probeConnected && probeAdmin.disconnect()];
      await withTimeout(
        () => Promise.all(closing.map((c) => c?.catch(() => {}))),
        Number.POSITIVE_INFINITY,
        "closing kafka admin",
        signal,
      );
    },
  };
}
