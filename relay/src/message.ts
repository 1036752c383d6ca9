import { HEADERS, prefixedTopic } from "@saga/contracts";
import type { OutgoingMessage } from "@saga/kafka";
import type { PendingRow } from "./outbox-store.ts";

/**
 * The Kafka message of an outbox row: key = aggregate id, value = payload, and the envelope headers
 * from the row's columns on top of its extra headers (traceparent, dlq-*), so a stray `event-id` in
 * the jsonb can never override the row's own.
 */
export function toMessage(row: PendingRow, topicPrefix: string): OutgoingMessage {
  return {
    topic: prefixedTopic(topicPrefix, row.topic),
    key: row.aggregateId,
    value: row.payload,
    headers: {
      ...extraHeaders(row.headers),
      [HEADERS.eventId]: row.id,
      [HEADERS.eventType]: row.eventType,
      [HEADERS.schemaVersion]: row.schemaVersion,
      [HEADERS.occurredAt]: row.createdAt.toISOString(),
      [HEADERS.aggregateId]: row.aggregateId,
    },
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
