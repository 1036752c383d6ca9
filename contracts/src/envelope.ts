import { z } from "zod";
import { SCHEMA_VERSION } from "./events.ts";

/** Kafka header names of the event envelope. */
export const HEADERS = {
  eventId: "event-id",
  eventType: "event-type",
  schemaVersion: "schema-version",
  occurredAt: "occurred-at",
  aggregateId: "aggregate-id",
  traceparent: "traceparent",
} as const;

/** Header names added to a message sent to a dead-letter topic. */
export const DLQ_HEADERS = {
  error: "dlq-error",
  originalTopic: "dlq-original-topic",
  originalPartition: "dlq-original-partition",
  originalOffset: "dlq-original-offset",
  consumerGroup: "dlq-consumer-group",
  /** The `event-id` of the poison message; its own `event-id` is that of the dead-letter outbox row. */
  originalEventId: "dlq-original-event-id",
  /** `poison` (it fails its contract) or `retries exhausted` (an unexpected error, retried up to the budget). */
  reason: "dlq-reason",
  /** Attempts that failed with an unexpected error; 1 for poison. */
  attempts: "dlq-attempts",
  /**
   * On a replayed message (on its original topic, not the DLQ): the id of the dead letter it replays.
   * A replayed copy that fails again is a dead letter of its own.
   */
  replayOf: "dlq-replay-of",
  /**
   * On a dead letter whose value was cut to fit its bound (`DEAD_LETTER_MAX_BYTES`): the bytes of the
   * whole value, which the `dead_letters` row keeps.
   */
  valueTruncated: "dlq-value-truncated",
} as const;

export const Envelope = z.object({
  [HEADERS.eventId]: z.uuid(),
  [HEADERS.eventType]: z.string().min(1),
  // The one version there is: a consumer that applied a later one as this one would misread it.
  [HEADERS.schemaVersion]: z.literal(SCHEMA_VERSION),
  [HEADERS.occurredAt]: z.iso.datetime({ offset: true }),
  [HEADERS.aggregateId]: z.string().min(1),
  // Any text: a consumer ignores a trace header it cannot use and starts a new trace (W3C's rule for a
  // receiver, nextTraceparent), as the services do for an HTTP request's. Refusing it would dead-letter an
  // event that can be applied, and leave its saga to time out.
  [HEADERS.traceparent]: z.string().optional(),
});
export type Envelope = z.infer<typeof Envelope>;
