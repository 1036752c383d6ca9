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
import { type Database, type Executor, lockAggregates } from "./db.ts";
import { describeError, isRetriableError, PoisonEventError } from "./errors.ts";
import type { MessagingMetrics } from "./metrics.ts";
import { deadLetterRow } from "./outbox.ts";

/** Work to do once the event's transaction has committed, such as counting its outcome. */
export type AfterCommit = () => void;

/**
 * Applies one decoded event inside the transaction that also holds its inbox row: its state change and
 * its outbox rows commit together or not at all. Throwing a retriable error retries the event.
 */
export type EventHandler<T extends Topic> = (
  tx: Executor,
  event: DecodedEvent<T>,
) => Promise<AfterCommit | undefined>;

export type EventHandlers = { [T in Topic]?: EventHandler<T> };

export type InboxOptions = {
  db: Database;
  consumerGroup: string;
  /** Prefix of the physical topic names (`KAFKA_TOPIC_PREFIX`); stripped before decoding. */
  topicPrefix: string;
  handlers: EventHandlers;
  /**
   * Where the events of one batch may touch rows shared across aggregates (a user's balance, say):
   * the batch applies its events in the order of this key (stably, so each aggregate's events keep
   * theirs), and so concurrent batches take those row locks in one order and cannot deadlock.
   */
  applyOrder?: (event: DecodedEvent<Topic>) => string;
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

/**
 * The consuming half of the saga's transaction rule: each event is applied in one transaction with its
 * inbox row (consumer group + event id, so a redelivery is a no-op) and the outbox rows it emits.
 * Nothing here talks to Kafka; `startInboxConsumer` feeds it and commits offsets after each commit.
 */
export function createInbox({
  db,
  consumerGroup,
  topicPrefix,
  handlers,
  applyOrder,
  logger,
  metrics,
}: InboxOptions): Inbox {
  const subscribed = EVENT_TOPICS.filter((t) => handlers[t]);
  const logicalTopic = (physical: string) =>
    physical.startsWith(topicPrefix) ? physical.slice(topicPrefix.length) : physical;
  const origin = (m: IncomingMessage) => ({ topic: m.topic, partition: m.partition, offset: m.offset });

  function decode(message: IncomingMessage) {
    const topic = logicalTopic(message.topic) as Topic;
    const handler = handlers[topic] as EventHandler<Topic> | undefined;
    if (!handler) throw new PoisonEventError(`no handler for topic ${message.topic}`);
    const decoded = decodeEvent(topic, message.headers, message.value);
    if (!decoded.ok) throw new PoisonEventError(decoded.error);
    const { event } = decoded;
    return { message, topic, handler, event, eventId: event.envelope[HEADERS.eventId].toLowerCase() };
  }
  type Decoded = ReturnType<typeof decode>;

  const inboxRow = ({ message, eventId }: Decoded) => ({
    consumerGroup,
    eventId,
    ...origin(message),
    offset: Number(message.offset),
  });

  /**
   * One transaction for all the events: their inbox rows (a duplicate, also within the batch, claims
   * nothing and is skipped), the locks of their aggregates, then each event's effect and outbox rows.
   */
  async function apply(events: Decoded[]): Promise<void> {
    const started = performance.now();
    const outcome = await db.transaction(async (tx) => {
      const claimed = new Set(
        (
          await tx
            .insert(inbox)
            .values(events.map(inboxRow))
            .onConflictDoNothing()
            .returning({ eventId: inbox.eventId })
        ).map((r) => r.eventId),
      );
      let fresh = events.filter((e) => claimed.delete(e.eventId));
      if (applyOrder && fresh.length > 1) {
        fresh = fresh
          .map((e) => ({ e, key: applyOrder(e.event) }))
          .sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0))
          .map(({ e }) => e);
      }
      if (fresh.length > 1)
        await lockAggregates(
          tx,
          fresh.map((e) => e.event.envelope[HEADERS.aggregateId]),
        );
      const afterCommits: (AfterCommit | undefined)[] = [];
      for (const e of fresh) afterCommits.push(await e.handler(tx, e.event));
      return { fresh, afterCommits };
    });
    const seconds = (performance.now() - started) / 1000;
    const fresh = new Set(outcome.fresh);
    for (const e of events) {
      metrics.applyDuration.observe({ topic: e.topic }, seconds);
      const log = logger.child({
        eventId: e.eventId,
        ...origin(e.message),
        aggregateId: e.event.envelope[HEADERS.aggregateId],
      });
      if (!fresh.has(e)) {
        metrics.duplicates.inc({ group: consumerGroup, topic: e.topic });
        log.info("duplicate event absorbed by the inbox");
        continue;
      }
      metrics.applied.inc({ group: consumerGroup, topic: e.topic });
      log.debug("event applied");
    }
    for (const afterCommit of outcome.afterCommits) afterCommit?.();
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
