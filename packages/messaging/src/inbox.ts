import {
  type DecodedEvent,
  DLQ_HEADERS,
  decodeEvent,
  EVENT_TOPICS,
  HEADERS,
  prefixedTopic,
  type Topic,
} from "@saga/contracts";
import { deadLetters, outbox } from "@saga/db";
import {
  DEAD_LETTER_REASONS,
  type DeadLetterCause,
  type EventConsumer,
  type IncomingMessage,
  type KafkaClient,
  type RetryPolicy,
} from "@saga/kafka";
import { type Logger, traceIdOf } from "@saga/observability";
import { z } from "zod";
import { claimEvents, inTransaction, type SqlClient, type TxClient } from "./batch-sql.ts";
import { type Database, lockAggregate } from "./db.ts";
import { classifyFailure, describeError, PoisonEventError } from "./errors.ts";
import type { MessagingMetrics } from "./metrics.ts";
import { deadLetterRow, storable } from "./outbox.ts";

/** Work to do once the batch's transaction has committed, such as counting its outcomes. */
export type AfterCommit = () => void;

/**
 * A service's part of applying a batch, inside the transaction that holds the events' inbox rows and the
 * locks of their aggregates: their state changes and outbox rows commit together with the inbox rows or
 * not at all. What an error either step throws means is `classifyFailure`'s to say.
 */
export type BatchHandler<State = unknown> = {
  /**
   * Reads the state the batch depends on. It must send its statements before it first awaits: they go
   * out behind BEGIN and the inbox claim, in the same round trip, and run after the claim took the
   * aggregates' locks, so they read committed state that nobody changes before COMMIT. Given every
   * event of the batch, duplicates included (the claim has not answered yet).
   */
  read(tx: SqlClient, events: DecodedEvent<Topic>[]): Promise<State>;
  /**
   * Applies the new events, in the order consumed, from the state `read` found. Its last statement may
   * carry COMMIT (`tx.queryThenCommit`), and must then fail by itself whenever the batch must not commit.
   */
  apply(tx: TxClient, events: DecodedEvent<Topic>[], state: State): Promise<AfterCommit | undefined>;
};

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
  /** The most bytes a dead letter's message may take (`DEAD_LETTER_MAX_BYTES`; see `deadLetterRow`). */
  deadLetterMaxBytes?: number;
};

export type Inbox = {
  /** The physical topics to subscribe to. */
  topics: string[];
  /** Applies a message exactly once per consumer group; a poison message throws a `PoisonEventError`. */
  handle(message: IncomingMessage): Promise<void>;
  /** Applies messages (of one or more partitions, each in order) in one transaction; a poison message fails them all. */
  handleBatch(messages: IncomingMessage[]): Promise<void>;
  /**
   * Records a message given up on (a dead-letter row, and the outbox row for `<topic>.dlq`), once
   * however often it is redelivered.
   */
  deadLetter(message: IncomingMessage, cause: DeadLetterCause): Promise<void>;
};

const isUuid = (s: string | undefined): s is string => z.uuid().safeParse(s).success;

// What a log line copies of a message's key or header, which may be anything when it is poison.
const MAX_LOGGED_ID_LENGTH = 256;
// Of a batch that failed: the orders and traces of its first messages (a batch is 64 by default).
const MAX_LOGGED_IDS = 64;

/**
 * The order a consumed message is about (its key, the order id, else its `aggregate-id`) and the trace
 * it continues (the 32 hex digits of a usable `traceparent`), for the lines that name it: an operator
 * follows a saga through the processes by these.
 */
function messageIds(message: IncomingMessage): { orderId?: string; traceId?: string } {
  const orderId = (message.key || message.headers[HEADERS.aggregateId])?.slice(0, MAX_LOGGED_ID_LENGTH);
  const traceId = traceIdOf(message.headers[HEADERS.traceparent]);
  return { ...(orderId ? { orderId } : {}), ...(traceId ? { traceId } : {}) };
}

type Decoded = { message: IncomingMessage; event: DecodedEvent<Topic>; eventId: string };

/** Adds one to `key`'s count. */
const tally = (counts: Map<Topic, number>, key: Topic) => counts.set(key, (counts.get(key) ?? 0) + 1);

/**
 * The consuming half of the saga's transaction rule: each event is applied in one transaction with its
 * inbox row (consumer group + event id, so a redelivery is a no-op) and the outbox rows it emits.
 * Nothing here talks to Kafka; `startInboxConsumer` feeds it and commits offsets after each commit.
 *
 * A batch costs the same few statements however many events it holds, in three round trips: BEGIN,
 * `claimEvents` (the aggregates' locks and every inbox row) and the service's `read`, pipelined; the
 * service's `apply` (set-based statements of its own); COMMIT. Logs and metrics are written per batch
 * too.
 */
export function createInbox({
  db,
  consumerGroup,
  topicPrefix,
  topics,
  applyBatch,
  logger,
  metrics,
  deadLetterMaxBytes,
}: InboxOptions): Inbox {
  const subscribed = EVENT_TOPICS.filter((t) => topics.includes(t));
  // A counter's series that appears with its first dead letter appears at 1, and `increase()` sees no
  // change: each one starts at 0, so that the DeadLetters alert and the DLQ panels see the first.
  for (const topic of subscribed)
    for (const reason of DEAD_LETTER_REASONS)
      metrics.deadLettered.inc({ group: consumerGroup, topic, reason }, 0);
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
      const claiming = claimEvents(tx, {
        consumerGroup,
        eventIds: events.map((e) => e.eventId),
        topics: events.map((e) => e.message.topic),
        partitions: events.map((e) => e.message.partition),
        offsets: events.map((e) => Number(e.message.offset)),
        // The payload's orderId, not the header: decodeEvent lets the header differ from it in case,
        // and a lock taken on the text as sent would not exclude the same order's other events.
        aggregateIds: events.map((e) => e.event.payload.orderId),
      });
      const reading = applyBatch.read(
        tx,
        events.map((e) => e.event),
      );
      // A failed claim fails the read behind it too (an aborted transaction); the claim's error is the one.
      reading.catch(() => {});
      const claimed = await claiming;
      const state = await reading;
      // The first copy of each new event claims it; later copies in the batch are duplicates.
      const fresh = events.filter((e) => claimed.delete(e.eventId));
      const afterCommit =
        fresh.length > 0
          ? await applyBatch.apply(
              tx,
              fresh.map((e) => e.event),
              state,
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

  async function deadLetter(
    message: IncomingMessage,
    { reason, error, attempts }: DeadLetterCause,
  ): Promise<void> {
    const topic = logicalTopic(message.topic);
    const described = error instanceof PoisonEventError ? error.message : describeError(error);
    const headerId = message.headers[HEADERS.eventId];
    const eventId = isUuid(headerId) ? headerId.toLowerCase() : undefined;
    // Its own key, never the event id in the inbox, which a replay must still find free. A poison
    // message may have no usable id; its position in the log identifies it just as well. A replayed
    // copy that fails again is a dead letter of its own. Only ids and positions go into the key, never
    // a header's text: the key is indexed, and an index entry over 2,704 bytes fails the insert, so a
    // message with a long `dlq-replay-of` was tried again for ever and its partition never moved on.
    // A replay's header is a dead letter's id (replayDeadLetter writes it); any other is ignored.
    const replayHeader = message.headers[DLQ_HEADERS.replayOf];
    const replayOf = isUuid(replayHeader) ? replayHeader.toLowerCase() : undefined;
    const claimKey =
      (eventId ?? `${message.topic}:${message.partition}:${message.offset}`) +
      (replayOf ? ` replay ${replayOf}` : "");
    const row = deadLetterRow({
      message,
      logicalTopic: topic,
      consumerGroup,
      error: described,
      reason,
      attempts,
      maxBytes: deadLetterMaxBytes,
    });
    // As the dead-letter header has it: at most 2,000 characters, storable; the row and the line too.
    const cutError = row.headers?.[DLQ_HEADERS.error] ?? "";
    const headers = Object.fromEntries(
      Object.entries(message.headers).flatMap(([k, v]) =>
        v === undefined ? [] : [[storable(k), storable(v)]],
      ),
    );
    const written = await db.transaction(async (tx) => {
      const claimed = await tx
        .insert(deadLetters)
        .values({
          id: row.id,
          consumerGroup,
          claimKey: storable(claimKey),
          topic: storable(topic),
          sourceTopic: storable(message.topic),
          partition: message.partition,
          offset: Number(message.offset),
          eventId: headerId === undefined ? null : storable(headerId),
          messageKey: message.key === null ? null : storable(message.key),
          headers,
          payload: message.value === null ? null : storable(message.value),
          reason,
          error: cutError,
          attempts,
        })
        .onConflictDoNothing()
        .returning({ id: deadLetters.id });
      if (claimed.length === 0) return false;
      // As every writer of the outbox does (DESIGN, rule 3): rows of one aggregate take their positions
      // in commit order, so the relay publishes a dead letter behind whatever that order emitted before it.
      await lockAggregate(tx, row.aggregateId);
      await tx.insert(outbox).values(row);
      return true;
    });
    const log = logger.child({ claimKey, ...origin(message), ...messageIds(message) });
    if (!written) {
      metrics.duplicates.inc({ group: consumerGroup, topic });
      log.info("duplicate of a dead-lettered event absorbed");
      return;
    }
    metrics.deadLettered.inc({ group: consumerGroup, topic, reason });
    log.warn(
      { reason, attempts, error: cutError, deadLetterId: row.id },
      `event dead-lettered to ${row.topic}`,
    );
  }

  return { topics: subscribed.map((t) => prefixedTopic(topicPrefix, t)), handle, handleBatch, deadLetter };
}

export type InboxConsumerOptions = InboxOptions & {
  kafka: KafkaClient;
  partitionsConsumedConcurrently?: number;
  /** How long a batch waits for more events under load (`CONSUMER_LINGER_MS`; ConsumerOptions.lingerMs). */
  lingerMs?: number;
  /** Back-off and the budget of unexpected failures (`CONSUMER_RETRY_*`). */
  retry?: RetryPolicy;
};

/**
 * Joins the consumer group and applies every message of the handled topics through the inbox, under
 * the failure contract (`classifyFailure`): poison is dead-lettered at once, transient failures are
 * retried until they succeed, unexpected ones up to the retry budget and then dead-lettered. Offsets
 * are committed only after the event's transaction (or its dead letter's) commits.
 */
export async function startInboxConsumer(options: InboxConsumerOptions): Promise<EventConsumer> {
  const {
    kafka,
    consumerGroup,
    topicPrefix,
    logger,
    metrics,
    partitionsConsumedConcurrently,
    lingerMs,
    retry,
  } = options;
  const inbox = createInbox(options);
  const logicalTopic = (physical: string) =>
    physical.startsWith(topicPrefix) ? physical.slice(topicPrefix.length) : physical;
  const where = (m: IncomingMessage) => ({
    group: consumerGroup,
    topic: logicalTopic(m.topic),
    partition: String(m.partition),
  });
  // At 0 from the start, as saga_dlq_events_total: the ConsumerSkippedRecords alert sees the first gap.
  for (const topic of inbox.topics)
    metrics.skipped.inc({ group: consumerGroup, topic: logicalTopic(topic) }, 0);
  // The event's age: since it occurred (its envelope), or since the broker got it when that is unreadable.
  const occurredAt = (m: IncomingMessage) => {
    const at = Date.parse(m.headers[HEADERS.occurredAt] ?? "");
    return Number.isNaN(at) ? m.timestamp : at;
  };
  return kafka.createConsumer({
    groupId: consumerGroup,
    topics: inbox.topics,
    handle: inbox.handle,
    handleBatch: inbox.handleBatch,
    onBatchFailed(messages, error) {
      const first = messages[0] as IncomingMessage;
      const { topic, partition, offset } = first;
      metrics.batchFallbacks.inc({ group: consumerGroup, topic: where(first).topic });
      // Which of them failed is not known yet: the line names them all (their retries name each).
      const ids = messages.slice(0, MAX_LOGGED_IDS).map(messageIds);
      logger.warn(
        {
          err: error,
          topic,
          partition,
          offset,
          count: messages.length,
          orderIds: ids.flatMap((m) => m.orderId ?? []),
          traceIds: ids.flatMap((m) => m.traceId ?? []),
        },
        "a batch of events failed; applying them again, each partition's on their own, then one by one",
      );
    },
    deadLetter: inbox.deadLetter,
    classify: classifyFailure,
    retry,
    partitionsConsumedConcurrently,
    lingerMs,
    onRetry(message, error, { attempt, kind }) {
      const labels = where(message);
      metrics.retries.inc({ group: consumerGroup, topic: labels.topic, failure: kind });
      metrics.stuck.retrying({ ...labels, failure: kind }, occurredAt(message));
      logger.warn(
        {
          err: error,
          topic: message.topic,
          partition: message.partition,
          offset: message.offset,
          ...messageIds(message),
          attempt,
          kind,
        },
        kind === "transient"
          ? "event failed with a transient error; retrying"
          : "event failed with an unexpected error; retrying up to the budget",
      );
    },
    onRetriesEnded: (message) => metrics.stuck.movedOn(where(message)),
    // The adapter logs the gap (an error naming the partition and its offsets); each one is counted here.
    onSkipped: (gap) =>
      metrics.skipped.inc({ group: consumerGroup, topic: logicalTopic(gap.topic) }, gap.skipped),
  });
}
