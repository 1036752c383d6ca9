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

export type KafkaOptions = {
  brokers: string[];
  clientId: string;
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
   * of one key keep their order, on the partition the Java client's murmur2 partitioner picks).
   */
  send(messages: OutgoingMessage[]): Promise<void>;
  /** Flushes and disconnects; when `signal` aborts first, drops the connections without waiting. */
  close(signal?: AbortSignal): Promise<void>;
};

export type ConsumerOptions = {
  groupId: string;
  topics: string[];
  /** Applies one message. Resolves once its effect is durable; only then is the offset committed. */
  handle(message: IncomingMessage): Promise<void>;
  /**
   * Applies consecutive messages of one partition at once, all or nothing (one transaction, say).
   * Optional; when it fails, each of the messages goes through `handle` on its own, so a bad message
   * costs its neighbours only the lost attempt.
   */
  handleBatch?(messages: IncomingMessage[]): Promise<void>;
  /** Most messages in one `handleBatch` call (default 64). */
  maxBatchSize?: number;
  /** Called when `handleBatch` failed and its messages are about to be applied one by one. */
  onBatchFailed?(messages: IncomingMessage[], error: unknown): void;
  /** Whether a failure of `handle` may succeed on a retry. Others go to `deadLetter`. */
  isRetriable(error: unknown): boolean;
  /** Records a message that can never be applied; resolves once that record is durable. */
  deadLetter(message: IncomingMessage, error: unknown): Promise<void>;
  /** Partitions handled at once by this consumer. */
  partitionsConsumedConcurrently?: number;
  /** Called before each retry of a retriable failure. */
  onRetry?(message: IncomingMessage, error: unknown, attempt: number): void;
  fromBeginning?: boolean;
  sessionTimeout?: number;
};

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
  createProducer(): Promise<EventProducer>;
  createConsumer(options: ConsumerOptions): Promise<EventConsumer>;
  /** Creates the topics that do not exist yet and resolves once every partition of them has a leader. */
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
  /** Closes the admin connections; when `signal` aborts first, drops them without waiting. */
  close(signal?: AbortSignal): Promise<void>;
};
