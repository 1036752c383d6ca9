import {
  type DecodedEvent,
  decodeEvent,
  EVENT_TOPICS,
  HEADERS,
  prefixedTopic,
  type Topic,
} from "@saga/contracts";
import { inbox, outbox } from "@saga/db";
import type { EventConsumer, IncomingMessage, KafkaClient } from "@saga/kafka";
import type { Logger } from "@saga/observability";
import { z } from "zod";
import { claimEvents, inTransaction, type SqlClient } from "./batch-sql.ts";
import type { Database } from "./db.ts";
import { describeError, isRetriableError, PoisonEventError } from "./errors.ts";
import type { MessagingMetrics } from "./metrics.ts";
import { deadLetterRow } from "./outbox.ts";

/** Work to do once the batch's transaction has committed, such as counting its outcomes. */
export type AfterCommit = () => void;

/**
 * Applies the new events of a batch, in the order consumed, inside the transaction that holds their
 * inbox rows and the locks of their aggregates: their state changes and outbox rows commit together
 * with the inbox rows or not at all. Throwing a retriable error retries the batch.
 */
export type BatchHandler = (tx: SqlClient, events: DecodedEvent<Topic>[]) => Promise<AfterCommit | undefined>;

export type InboxOptions = {
  db: Database;
  consumerGroup: string;
  /** Prefix of the physical topic names (`KAFKA_TOPIC_PREFIX`); stripped before decoding. */
  topicPrefix: string;
  /** The logical topics consumed; a message of any other topic is poison. */
  topics: readonly Topic[];
  applyBatch: BatchHandler;
  logger: Logger;
  metrics: MessagingMetrics;
};

export type Inbox = {
  /** The physical topics to subscribe to. */
  topics: string[];
  /** Applies a message exactly once per consumer group; a poison message throws a non-retriable error. */
  handle(message: IncomingMessage): Promise<void>;
  /** Applies consecutive messages of one partition in one transaction; a poison message fails them all. */
  handleBatch(messages: IncomingMessage[]): Promise<void>;
  /** Writes a message that can never be applied to the outbox of `<topic>.dlq`, once. */
  deadLetter(message: IncomingMessage, error: unknown): Promise<void>;
};

const isUuid = (s: string | undefined): s is string => z.uuid().safeParse(s).success;

type Decoded = { message: IncomingMessage; event: DecodedEvent<Topic>; eventId: string };

/** Adds one to `key`'s count. */
const tally = (counts: Map<Topic, number>, key: Topic) => counts.set(key, (counts.get(key) ?? 0) + 1);

/**
 * The consuming half of the saga's transaction rule: each event is applied in one transaction with its
 * inbox row (consumer group + event id, so a redelivery is a no-op) and the outbox rows it emits.
 * Nothing here talks to Kafka; `startInboxConsumer` feeds it and commits offsets after each commit.
 *
 * A batch costs the same few statements however many events it holds: BEGIN, `claimEvents` (the
 * aggregates' locks and every inbox row), the service's `applyBatch` (set-based statements of its
 * own), COMMIT. Logs and metrics are written per batch too.
 */
export function createInbox({
  db,
  consumerGroup,
  topicPrefix,
  topics,
  applyBatch,
  logger,
  metrics,
}: InboxOptions): Inbox {
  const subscribed = EVENT_TOPICS.filter((t) => topics.includes(t));
  const logicalTopic = (physical: string) =>
    physical.startsWith(topicPrefix) ? physical.slice(topicPrefix.length) : physical;
  const origin = (m: IncomingMessage) => ({ topic: m.topic, partition: m.partition, offset: m.offset });

  function decode(message: IncomingMessage): Decoded {
    const topic = logicalTopic(message.topic) as Topic;
    if (!subscribed.includes(topic)) throw new PoisonEventError(`no handler for topic ${message.topic}`);
    const decoded = decodeEvent(topic, message.headers, message.value);
    if (!decoded.ok) throw new PoisonEventError(decoded.error);
    const { event } = decoded;
    return { message, event, eventId: event.envelope[HEADERS.eventId].toLowerCase() };
  }

  /**
   * One transaction for all the events: the locks of their aggregates and their inbox rows (a
   * duplicate, also within the batch, claims nothing and is skipped), then the new ones' effects.
   */
  async function apply(events: Decoded[]): Promise<void> {
    const started = performance.now();
    const outcome = await inTransaction(db.pool, async (tx) => {
      const claimed = await claimEvents(tx, {
        consumerGroup,
        eventIds: events.map((e) => e.eventId),
        topics: events.map((e) => e.message.topic),
        partitions: events.map((e) => e.message.partition),
        offsets: events.map((e) => Number(e.message.offset)),
        aggregateIds: events.map((e) => e.event.envelope[HEADERS.aggregateId]),
      });
      // The first copy of each new event claims it; later copies in the batch are duplicates.
      const fresh = events.filter((e) => claimed.delete(e.eventId));
      const afterCommit =
        fresh.length > 0
          ? await applyBatch(
              tx,
              fresh.map((e) => e.event),
            )
          : undefined;
      return { fresh, afterCommit };
    });
    const seconds = (performance.now() - started) / 1000;

    const applied = new Map<Topic, number>();
    const duplicates = new Map<Topic, number>();
    const fresh = new Set(outcome.fresh);
    for (const e of events) tally(fresh.has(e) ? applied : duplicates, e.event.topic);
    for (const [topic, n] of applied) metrics.applied.inc({ group: consumerGroup, topic }, n);
    for (const [topic, n] of duplicates) metrics.duplicates.inc({ group: consumerGroup, topic }, n);
    for (const topic of new Set([...applied.keys(), ...duplicates.keys()]))
      metrics.applyDuration.observe({ topic }, seconds);
    outcome.afterCommit?.();
    if (logger.isLevelEnabled("debug")) {
      const first = events[0]?.message;
      logger.debug(
        { ...(first && origin(first)), count: events.length, duplicates: events.length - fresh.size },
        "events applied",
      );
    }
  }

  async function handle(message: IncomingMessage): Promise<void> {
    await apply([decode(message)]);
  }

  async function handleBatch(messages: IncomingMessage[]): Promise<void> {
    await apply(messages.map(decode));
  }

  async function deadLetter(message: IncomingMessage, error: unknown): Promise<void> {
    const topic = logicalTopic(message.topic);
    const reason = error instanceof PoisonEventError ? error.message : describeError(error);
    const headerId = message.headers[HEADERS.eventId];
    // A poison message may have no usable id; its position in the log identifies it just as well.
    const inboxKey = isUuid(headerId)
      ? headerId.toLowerCase()
      : `${message.topic}:${message.partition}:${message.offset}`;
    const row = deadLetterRow({ message, logicalTopic: topic, consumerGroup, error: reason });
    const written = await db.transaction(async (tx) => {
      const claimed = await tx
        .insert(inbox)
        .values({ consumerGroup, eventId: inboxKey, ...origin(message), offset: Number(message.offset) })
        .onConflictDoNothing()
        .returning({ eventId: inbox.eventId });
      if (claimed.length === 0) return false;
      await tx.insert(outbox).values(row);
      return true;
    });
    const log = logger.child({ eventId: inboxKey, ...origin(message) });
    if (!written) {
      metrics.duplicates.inc({ group: consumerGroup, topic });
      log.info("duplicate of a dead-lettered event absorbed by the inbox");
      return;
    }
    metrics.deadLettered.inc({ group: consumerGroup, topic });
    log.warn({ error: reason, dlqEventId: row.id }, `event dead-lettered to ${row.topic}`);
  }

  return { topics: subscribed.map((t) => prefixedTopic(topicPrefix, t)), handle, handleBatch, deadLetter };
}

export type InboxConsumerOptions = InboxOptions & {
  kafka: KafkaClient;
  partitionsConsumedConcurrently?: number;
};

/**
 * Joins the consumer group and applies every message of the handled topics through the inbox. Offsets
 * are committed only after the event's transaction commits; transient failures are retried with
 * back-off, anything else is dead-lettered, so no message blocks its partition.
 */
export async function startInboxConsumer(options: InboxConsumerOptions): Promise<EventConsumer> {
  const { kafka, consumerGroup, logger, metrics, partitionsConsumedConcurrently } = options;
  const inbox = createInbox(options);
  return kafka.createConsumer({
    groupId: consumerGroup,
    topics: inbox.topics,
    handle: inbox.handle,
    handleBatch: inbox.handleBatch,
    onBatchFailed(messages, error) {
      const { topic, partition, offset } = messages[0] as IncomingMessage;
      metrics.batchFallbacks.inc({ group: consumerGroup, topic });
      logger.warn(
        { err: error, topic, partition, offset, count: messages.length },
        "a batch of events failed; applying them one by one",
      );
    },
    deadLetter: inbox.deadLetter,
    isRetriable: isRetriableError,
    partitionsConsumedConcurrently,
    onRetry(message, error, attempt) {
      metrics.retries.inc({ group: consumerGroup, topic: message.topic });
      logger.warn(
        { err: error, topic: message.topic, partition: message.partition, offset: message.offset, attempt },
        "event failed with a transient error; retrying",
      );
    },
  });
}
