/** The port every process speaks; each adapter (kafkajs.ts, platformatic.ts) implements it. */

/** The Kafka client libraries behind the port, selected per process by `KAFKA_CLIENT`. */
export const KAFKA_CLIENTS = ["platformatic", "kafkajs"] as const;
export type KafkaClientName = (typeof KAFKA_CLIENTS)[number];

/**
 * Where the client libraries' own log lines go: any logger with pino's `(fields, message)` methods, such
 * as the process's; the adapters prefix each message with `kafka: `.
 */
export type KafkaLogger = Record<
  "error" | "warn" | "info" | "debug",
  (fields: object, message: string) => void
>;

/**
 * The SASL mechanisms a process can sign in with: what both adapters implement (@platformatic/kafka
 * 2.12 and kafkajs 2.2.4 both do PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512; OAUTHBEARER needs a token
 * provider, GSSAPI (Kerberos) a custom authenticator, AWS_MSK_IAM is kafkajs's only, so none is offered).
 */
export const SASL_MECHANISMS = ["plain", "scram-sha-256", "scram-sha-512"] as const;
export type SaslMechanism = (typeof SASL_MECHANISMS)[number];

/** A SASL sign-in on every connection to the brokers. */
export type KafkaSasl = { mechanism: SaslMechanism; username: string; password: string };

/**
 * TLS on every connection to the brokers, their certificates checked against `ca` (PEM, one or more
 * certificates) or, without it, the system's certificate authorities.
 */
export type KafkaTls = { ca?: string };

export type KafkaOptions = {
  brokers: string[];
  clientId: string;
  /** TLS to the brokers; absent, plaintext. */
  tls?: KafkaTls;
  /** SASL to the brokers (over TLS when `tls` is given); absent, no authentication. */
  sasl?: KafkaSasl;
  /** The library behind the port; the default is `DEFAULT_KAFKA_CLIENT`. */
  client?: KafkaClientName;
  logger?: KafkaLogger;
  /** How long a connection attempt may take, in ms. */
  connectionTimeout?: number;
  /**
   * How long a caller of an admin probe (`ping`, `consumerLag`: what /ready and the lag probe wait for)
   * waits, in ms, and how long each of its requests may take (default 2000). The requests are retried
   * once, never for ever, and a probe in flight is shared by later callers, so probes fail fast and do
   * not pile up while a broker is away.
   */
  adminTimeout?: number;
  /**
   * How the platformatic adapter's client retries a request that fails (a connect, a join, a fetch, a
   * send): `maxAttempts` in all, `backoffMs` doubling to `maxBackoffMs` apart; the adapter's own retries
   * (a consumer joining its group again) back off the same way. Default `DEFAULT_REQUEST_RETRY`: 15
   * attempts, 200 ms doubling to 5 s, about 50 s. Past it a producer's connect or send rejects, and its
   * caller tries again; a consumer joins its group again by itself. kafkajs retries for ever.
   */
  requestRetry?: RetryPolicy;
};

export type OutgoingMessage = {
  topic: string;
  key: string;
  value: string;
  headers: Record<string, string>;
};

export type IncomingMessage = {
  topic: string;
  partition: number;
  offset: string;
  key: string | null;
  value: string | null;
  headers: Record<string, string | undefined>;
  /** Broker timestamp, ms since the epoch. */
  timestamp: number;
};

export type EventProducer = {
  /**
   * Resolves once every message is acknowledged by all in-sync replicas (idempotent, acks=all; messages
   * of one key keep their order, on the partition the Java client's murmur2 partitioner picks). Messages
   * that together are more than `MAX_MESSAGE_BYTES` go as several requests, one after the other; when
   * one fails, those before it may be on Kafka already, as after any failed send. Rejects once the
   * client gives the request up (`KafkaOptions.requestRetry`: a broker away for about 50 s; kafkajs
   * never does): the caller sends again, and the producer goes on.
   */
  send(messages: OutgoingMessage[]): Promise<void>;
  /** Flushes and disconnects; when `signal` aborts first, drops the connections without waiting. */
  close(signal?: AbortSignal): Promise<void>;
};

/**
 * The failure contract of a consumer: what a failure of `handle` means, and so what happens next.
 * - `poison`: the message can never be applied (it fails its contract): dead-lettered at once.
 * - `transient`: the infrastructure failed (a lost connection, a database restarting); retried with
 *   back-off for as long as it takes, so an outage never dead-letters anything.
 * - `unexpected`: anything else, a bug (a TypeError after a bad deploy, a constraint violation):
 *   retried with back-off up to the budget, then dead-lettered as "retries exhausted".
 */
export type FailureKind = "poison" | "transient" | "unexpected";
export type RetriedKind = Exclude<FailureKind, "poison">;

/** Why a message is given up on: it fails its contract, or it failed unexpectedly past the retry budget. */
export const DEAD_LETTER_REASONS = ["poison", "retries exhausted"] as const;
export type DeadLetterReason = (typeof DEAD_LETTER_REASONS)[number];

/** Why a message is dead-lettered, for its record: its last error, and how often it was tried. */
export type DeadLetterCause = {
  reason: DeadLetterReason;
  error: unknown;
  /** Attempts that failed with an unexpected error (1 for poison). */
  attempts: number;
};

export type RetryPolicy = {
  /**
   * Attempts in all, the first included: of a message that fails with unexpected errors, before it is
   * dead-lettered; of a request to the broker, before it fails (`KafkaOptions.requestRetry`).
   */
  maxAttempts: number;
  /** The first back-off, doubled after every failed attempt up to `maxBackoffMs`. */
  backoffMs: number;
  maxBackoffMs: number;
};

/** 10 attempts over about 26 s: 200 ms doubling to 5 s between them. */
export const DEFAULT_RETRY_POLICY: RetryPolicy = { maxAttempts: 10, backoffMs: 200, maxBackoffMs: 5000 };

/**
 * How the platformatic client retries a request to the broker (`KafkaOptions.requestRetry`): about 50 s,
 * not for ever, because @platformatic/kafka 2.12.1 keeps the error of every attempt of a request until it
 * succeeds or gives up (about 12.5 KB each): retried for ever while a broker is away, one request 5 s
 * apart grew a process by 9 MB an hour (https://github.com/platformatic/kafka/pull/275, not in 2.12.1).
 * A request that retries another (a join looks its coordinator up first, a fetch reads metadata) keeps
 * up to 15 × 15 of them, about 3 MB, for up to a quarter of an hour.
 */
export const DEFAULT_REQUEST_RETRY: RetryPolicy = { maxAttempts: 15, backoffMs: 200, maxBackoffMs: 5000 };

/** Offsets of a partition that a consumer group never read: their records were deleted first. */
export type SkippedRecords = {
  topic: string;
  partition: number;
  /**
   * The offset the group was to read next: its committed offset when the partition's first message on
   * the consumer's stream skipped, else the one after the last message read.
   */
  nextOffset: string;
  /** The offset of the first message read after the gap. */
  firstRead: string;
  /** Offsets skipped: `firstRead - nextOffset`. */
  skipped: number;
};

export type ConsumerOptions = {
  groupId: string;
  topics: string[];
  /** Applies one message. Resolves once its effect is durable; only then is the offset committed. */
  handle(message: IncomingMessage): Promise<void>;
  /**
   * Applies messages at once, all or nothing (one transaction, say): consecutive messages of one or more
   * partitions, each partition's in their order (the kafkajs adapter gives one partition at a time, the
   * platformatic one whatever is queued). Optional; when it fails, each partition's messages are tried
   * again on their own, then one by one through `handle`, so a bad message costs its neighbours only
   * the lost attempts.
   */
  handleBatch?(messages: IncomingMessage[]): Promise<void>;
  /** Most messages in one `handleBatch` call (default 64). */
  maxBatchSize?: number;
  /**
   * How long a fetched message waits for others to share its batch before the batch starts (default 0:
   * at once). It waits only while messages arrive more often than one per `2 × lingerMs` on average, so
   * a quiet consumer answers at once; a batch that ends still starts the next one at once, and so does
   * a full batch (`maxBatchSize` messages waiting) without waiting out the linger. Like Kafka's
   * `linger.ms` for producers: a few milliseconds of latency for fewer, larger transactions. The
   * platformatic adapter only; the kafkajs one hands over what one fetch brought.
   */
  lingerMs?: number;
  /** Called when `handleBatch` failed and its messages are about to be applied one by one. */
  onBatchFailed?(messages: IncomingMessage[], error: unknown): void;
  /** What a failure of `handle` means; see `FailureKind`. */
  classify(error: unknown): FailureKind;
  /** The back-off between attempts and the budget of unexpected failures (default `DEFAULT_RETRY_POLICY`). */
  retry?: RetryPolicy;
  /** Records a message that will not be applied; resolves once that record is durable. */
  deadLetter(message: IncomingMessage, cause: DeadLetterCause): Promise<void>;
  /** Batches handled at once by this consumer (default 3); a partition is in one of them at most. */
  partitionsConsumedConcurrently?: number;
  /** Called before each retry; from the first one on, the message's partition waits for it. */
  onRetry?(message: IncomingMessage, error: unknown, retry: { attempt: number; kind: RetriedKind }): void;
  /**
   * Called once for each gap in a partition: records the group never read were deleted before it could
   * (it is further behind than the topic's `retention.ms`, or someone deleted them), and the client went on
   * from the first record there is. The adapter logs each gap too, as an error. The platformatic adapter
   * only: kafkajs logs its own error ("Offset out of range, resetting to default offset", naming the
   * partition, not the offsets) and calls nothing.
   */
  onSkipped?(gap: SkippedRecords): void;
  /**
   * Called once a message that was retried leaves its retry loop (applied, dead-lettered, or given up
   * because the consumer stops): its partition moves on.
   */
  onRetriesEnded?(message: IncomingMessage): void;
  fromBeginning?: boolean;
  /** The group's session timeout, in ms (default `DEFAULT_SESSION_TIMEOUT_MS`). */
  sessionTimeout?: number;
  /**
   * Offsets are committed at most this often (ms; default `DEFAULT_COMMIT_INTERVAL_MS`), all partitions'
   * at once, and on stop; 0 commits after every batch. See commits.ts for why later is safe.
   */
  commitIntervalMs?: number;
};

export const DEFAULT_COMMIT_INTERVAL_MS = 200;

/**
 * A consumer's session timeout unless its options say otherwise: a member the broker has not heard from
 * for this long loses its partitions to the rest of its group. The services' idle-in-transaction bound is
 * shorter (`serviceEnvSchema`), so a member frozen mid-transaction has lost its locks by then.
 */
export const DEFAULT_SESSION_TIMEOUT_MS = 10_000;

export type EventConsumer = {
  /**
   * Finishes the messages in hand, commits their offsets and leaves the group. When `signal` aborts
   * first (the process's stop deadline) it stops waiting and drops its connections: what was not
   * committed is read again by the partition's next owner.
   */
  stop(signal?: AbortSignal): Promise<void>;
  /** True while the consumer is a member of its group. */
  isRunning(): boolean;
};

export type PartitionLag = { topic: string; partition: number; committed: number; end: number; lag: number };

export type KafkaClient = {
  /** Connects and gets a producer id; rejects, as `send`, once the client gives the connect up. */
  createProducer(): Promise<EventProducer>;
  /**
   * Resolves once the consumer has joined its group; while the broker is away it keeps trying, until
   * `close()` (the platformatic adapter; kafkajs's goes on).
   */
  createConsumer(options: ConsumerOptions): Promise<EventConsumer>;
  /**
   * Creates the topics that do not exist yet, `numPartitions` each (6 unless given) with the broker's
   * default replication factor and topic settings, and resolves once every partition of them has a leader.
   */
  createTopics(names: string[], numPartitions?: number): Promise<void>;
  /**
   * Resolves when a broker answers a metadata request; rejects after `adminTimeout`, or as soon as
   * `signal` aborts (the request itself ends by its own bound).
   */
  ping(signal?: AbortSignal): Promise<void>;
  /** Committed offset, end offset and lag of a group on each partition of the topics; bounded as `ping`. */
  consumerLag(groupId: string, topics: string[], signal?: AbortSignal): Promise<PartitionLag[]>;
  /**
   * Every message of `topics` from the beginning up to their end offsets as of the call, in
   * partition order. For checkers and tests; it joins a throwaway consumer group.
   */
  readToEnd(topics: string[], timeoutMs?: number): Promise<IncomingMessage[]>;
  /**
   * Closes the admin connections; when `signal` aborts first, drops them without waiting. A consumer
   * still joining its group for the first time gives up: its `createConsumer` rejects (the platformatic
   * adapter).
   */
  close(signal?: AbortSignal): Promise<void>;
};
