import {
  DLQ_HEADERS,
  EVENT_SCHEMAS,
  EVENT_TYPES,
  type EventPayload,
  HEADERS,
  prefixedTopic,
  SCHEMA_VERSION,
  type Topic,
} from "@saga/contracts";
import { type DeadLetterReason, outbox } from "@saga/db";
import { type IncomingMessage, MAX_MESSAGE_BYTES, messageBytes, type OutgoingMessage } from "@saga/kafka";
import { nextTraceparent, parseTraceparent } from "@saga/observability";
import type { Executor } from "./db.ts";
import { newRowId } from "./ids.ts";

export type OutboxRow = typeof outbox.$inferSelect;
export type NewOutboxRow = typeof outbox.$inferInsert & { id: string };

export type OutboxEvent<T extends Topic> = {
  /** Logical topic name; the relay adds the process's prefix. */
  topic: T;
  /** Kafka key: the order id, so every event of one order keeps its order within a topic. */
  aggregateId: string;
  payload: EventPayload<T>;
  /** W3C trace context of the request or event that caused this one. */
  traceparent?: string | undefined;
};

/** The outbox row for an event; the payload is checked against its contract, so a bug fails the transaction. */
export function outboxRow<T extends Topic>({
  topic,
  aggregateId,
  payload,
  traceparent,
}: OutboxEvent<T>): NewOutboxRow {
  // Parsing also fixes the key order, so the JSON is byte for byte what the Go version emits.
  const checked = EVENT_SCHEMAS[topic].parse(payload);
  return {
    id: newRowId(),
    aggregateId,
    topic,
    eventType: EVENT_TYPES[topic],
    schemaVersion: SCHEMA_VERSION,
    payload: JSON.stringify(checked),
    headers: traceparent ? { [HEADERS.traceparent]: traceparent } : {},
  };
}

/**
 * Records an event for the relay to publish, inside the caller's transaction: it is published if and
 * only if the state change that caused it commits. Returns the event id.
 */
export async function appendOutbox<T extends Topic>(tx: Executor, event: OutboxEvent<T>): Promise<string> {
  const row = outboxRow(event);
  await tx.insert(outbox).values(row);
  return row.id;
}

export type DeadLetter = {
  message: IncomingMessage;
  /** The message's topic without the process's prefix. */
  logicalTopic: string;
  consumerGroup: string;
  error: string;
  reason: DeadLetterReason;
  attempts: number;
  /** The most bytes its message on `<topic>.dlq` may take (`DEAD_LETTER_MAX_BYTES`). */
  maxBytes?: number;
};

/**
 * Default of `DEAD_LETTER_MAX_BYTES`: a quarter of what one message to Kafka may be (`MAX_MESSAGE_BYTES`),
 * enough to see what a message was, small enough for a person's tools to show it.
 */
export const DEFAULT_DEAD_LETTER_MAX_BYTES = 262_144;
/** The least `DEAD_LETTER_MAX_BYTES` may be: every header of a dead letter at its longest fits in it. */
export const MIN_DEAD_LETTER_MAX_BYTES = 16_384;

/** PostgreSQL text and jsonb cannot hold NUL; a poison message may contain anything. */
export const storable = (s: string) => s.replaceAll("\u0000", "\uFFFD");
const MAX_ERROR_LENGTH = 2000;
// The key and the envelope a dead letter copies from the message as it came: a UUID and a few words
// when the message is an event, and anything when it is not.
const MAX_COPIED_LENGTH = 256;
const copied = (s: string) => storable(s.slice(0, MAX_COPIED_LENGTH));

/** The longest start of `s` whose UTF-8 takes at most `bytes` bytes (never half a character). */
function firstBytes(s: string, bytes: number): string {
  const { read } = new TextEncoder().encodeInto(s, new Uint8Array(Math.max(0, bytes)));
  return s.slice(0, read);
}

/**
 * The outbox row that sends a message that can never be applied to `<topic>.dlq`: the raw value,
 * keyed as the original, with the error and the message's origin in the `dlq-*` headers.
 *
 * Its message is at most `maxBytes`: a message another producer sent compressed can be megabytes once
 * read, and one the broker refuses stops the relay's outbox for good, every row behind it waiting. So
 * the key and the envelope headers copied from the message are cut to 256 characters, and a value
 * that does not fit in what remains is cut to fit, with `dlq-value-truncated: <its bytes>`; the
 * `dead_letters` row keeps all of it.
 */
export function deadLetterRow({
  message,
  logicalTopic,
  consumerGroup,
  error,
  reason,
  attempts,
  maxBytes = DEFAULT_DEAD_LETTER_MAX_BYTES,
}: DeadLetter): NewOutboxRow {
  const original = message.headers;
  const headers: Record<string, string> = {
    [DLQ_HEADERS.reason]: reason,
    [DLQ_HEADERS.attempts]: String(attempts),
    [DLQ_HEADERS.error]: storable(error.slice(0, MAX_ERROR_LENGTH)),
    [DLQ_HEADERS.originalTopic]: storable(message.topic),
    [DLQ_HEADERS.originalPartition]: String(message.partition),
    [DLQ_HEADERS.originalOffset]: message.offset,
    [DLQ_HEADERS.consumerGroup]: consumerGroup,
  };
  const originalEventId = original[HEADERS.eventId];
  if (originalEventId) headers[DLQ_HEADERS.originalEventId] = copied(originalEventId);
  // The trace of the message, continued with a span of the consumer that gives up on it, as any event it
  // writes; none when the message had no usable one (nothing to continue).
  const trace = original[HEADERS.traceparent];
  if (parseTraceparent(trace)) headers[HEADERS.traceparent] = nextTraceparent(trace);
  const row: NewOutboxRow = {
    id: newRowId(),
    aggregateId: copied(
      message.key ||
        original[HEADERS.aggregateId] ||
        `${message.topic}:${message.partition}:${message.offset}`,
    ),
    topic: `${logicalTopic}.dlq`,
    eventType: copied(original[HEADERS.eventType] || "Unknown"),
    schemaVersion: copied(original[HEADERS.schemaVersion] || SCHEMA_VERSION),
    payload: "",
    headers,
  };
  const value = storable(message.value ?? "");
  // What the relay will send, but for the value: the row's headers, and the envelope from its columns.
  const sent = (row: NewOutboxRow) =>
    messageBytes(outboxMessage({ ...row, headers: row.headers, createdAt: new Date() }));
  const valueBytes = Buffer.byteLength(value);
  if (sent(row) + valueBytes <= maxBytes) return { ...row, payload: value };
  headers[DLQ_HEADERS.valueTruncated] = String(valueBytes);
  return { ...row, payload: firstBytes(value, maxBytes - sent(row)) };
}

/** What the relay reads of an outbox row to publish it. */
export type PublishableRow = Pick<
  OutboxRow,
  "id" | "aggregateId" | "topic" | "eventType" | "schemaVersion" | "payload" | "createdAt"
> & { headers: unknown };

/**
 * The Kafka message of an outbox row, for the relay: key = aggregate id, value = payload, and the
 * envelope headers from the row's columns (`event-id` is the row id) on top of its extra headers
 * (traceparent, dlq-*), so a stray `event-id` in the jsonb can never override the row's own.
 *
 * The one exception is a replayed dead letter (`dlq-replay-of` among its headers, written only by
 * `replayDeadLetter`): it goes back exactly as it was consumed, its own envelope over the row's, so
 * that it keeps its `event-id` and every consumer group's inbox applies it at most once.
 */
export function outboxMessage(row: PublishableRow, topicPrefix = ""): OutgoingMessage {
  const extra = extraHeaders(row.headers);
  const envelope = {
    [HEADERS.eventId]: row.id,
    [HEADERS.eventType]: row.eventType,
    [HEADERS.schemaVersion]: row.schemaVersion,
    [HEADERS.occurredAt]: row.createdAt.toISOString(),
    [HEADERS.aggregateId]: row.aggregateId,
  };
  const replay = extra[DLQ_HEADERS.replayOf] !== undefined;
  return {
    topic: prefixedTopic(topicPrefix, row.topic),
    key: row.aggregateId,
    value: row.payload,
    headers: replay ? { ...envelope, ...extra } : { ...extra, ...envelope },
  };
}

/**
 * The `headers` column as Kafka headers. Writers store an object of strings; anything else is made
 * to fit rather than refused, because a row that can never be sent would block its outbox for good.
 */
function extraHeaders(headers: unknown): Record<string, string> {
  if (typeof headers !== "object" || headers === null || Array.isArray(headers)) return {};
  const out: Record<string, string> = {};
  for (const [name, value] of Object.entries(headers)) {
    if (value === null || value === undefined) continue;
    out[name] = typeof value === "string" ? value : JSON.stringify(value);
  }
  return out;
}
