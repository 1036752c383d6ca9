import { sql } from "drizzle-orm";
import {
  bigint,
  bigserial,
  check,
  index,
  integer,
  json,
  jsonb,
  pgTable,
  primaryKey,
  text,
  timestamp,
  unique,
  uuid,
} from "drizzle-orm/pg-core";

const createdAt = () => timestamp("created_at", { withTimezone: true, mode: "date" }).notNull().defaultNow();

/**
 * Events waiting for the relay. `id` is the event id that travels in the `event-id` header;
 * `position` is the order in which the relay publishes. Writers lock the aggregate before they
 * insert, so for one aggregate position order is commit order. Unique by its sequence; no index of its
 * own, which every insert and mark would write and no query reads (migration "outbox_position_not_unique").
 */
export const outbox = pgTable(
  "outbox",
  {
    id: uuid("id").primaryKey().defaultRandom(),
    position: bigserial("position", { mode: "number" }).notNull(),
    aggregateId: text("aggregate_id").notNull(),
    topic: text("topic").notNull(),
    eventType: text("event_type").notNull(),
    schemaVersion: text("schema_version").notNull(),
    payload: text("payload").notNull(),
    /** Extra Kafka headers: traceparent, and the dead-letter headers for a poison event. */
    headers: jsonb("headers").$type<Record<string, string>>().notNull().default({}),
    createdAt: createdAt(),
    publishedAt: timestamp("published_at", { withTimezone: true, mode: "date" }),
  },
  (t) => [
    index("outbox_unpublished_idx").on(t.position).where(sql`${t.publishedAt} is null`),
    index("outbox_published_at_idx").on(t.publishedAt).where(sql`${t.publishedAt} is not null`),
  ],
);

/** One row per applied event and consumer group: the primary key makes a redelivery a no-op. */
export const inbox = pgTable(
  "inbox",
  {
    consumerGroup: text("consumer_group").notNull(),
    eventId: text("event_id").notNull(),
    topic: text("topic").notNull(),
    partition: integer("partition").notNull(),
    offset: bigint("offset", { mode: "number" }).notNull(),
    processedAt: timestamp("processed_at", { withTimezone: true, mode: "date" }).notNull().defaultNow(),
  },
  (t) => [
    primaryKey({ columns: [t.consumerGroup, t.eventId] }),
    index("inbox_processed_at_idx").on(t.processedAt),
  ],
);

const DEAD_LETTER_REASONS = ["poison", "retries exhausted"] as const;
export type DeadLetterReason = (typeof DEAD_LETTER_REASONS)[number];

/**
 * Messages a consumer group gave up on, one row each, kept until someone deletes them: the message as
 * consumed (so that it can be replayed with its key and headers), why, and its replay once replayed.
 * Written in one transaction with the `<topic>.dlq` outbox row whose id is `id`.
 *
 * `claim_key` absorbs a redelivered copy of a message already dead-lettered: the event's id (its log
 * position when it has none), and for a replayed copy that failed again the dead letter it replays.
 * Never the event id alone in the inbox, so that a replayed event is applied, not taken for a duplicate.
 */
export const deadLetters = pgTable(
  "dead_letters",
  {
    /** The id of its `<topic>.dlq` outbox row: the `event-id` of the message on the dead-letter topic. */
    id: uuid("id").primaryKey(),
    consumerGroup: text("consumer_group").notNull(),
    claimKey: text("claim_key").notNull(),
    /** The logical topic (no prefix): where a replay goes. */
    topic: text("topic").notNull(),
    /** Where the message was consumed: the physical topic, partition and offset. */
    sourceTopic: text("source_topic").notNull(),
    partition: integer("partition").notNull(),
    offset: bigint("offset", { mode: "number" }).notNull(),
    /** Its `event-id` header, when it had one. */
    eventId: text("event_id"),
    messageKey: text("message_key"),
    headers: jsonb("headers").$type<Record<string, string>>().notNull(),
    payload: text("payload"),
    reason: text("reason").$type<DeadLetterReason>().notNull(),
    /** The last error, at most 2,000 characters. */
    error: text("error").notNull(),
    /** Attempts that failed with an unexpected error; 1 for poison. */
    attempts: integer("attempts").notNull(),
    deadLetteredAt: timestamp("dead_lettered_at", { withTimezone: true, mode: "date" })
      .notNull()
      .defaultNow(),
    /** The replay: when, by whom, and the outbox row that carries it back to `topic`. At most one. */
    replayedAt: timestamp("replayed_at", { withTimezone: true, mode: "date" }),
    replayedBy: text("replayed_by"),
    replayOutboxId: uuid("replay_outbox_id"),
  },
  (t) => [
    unique("dead_letters_claim").on(t.consumerGroup, t.claimKey),
    index("dead_letters_topic_time_idx").on(t.topic, t.deadLetteredAt),
    check("dead_letters_reason", sql`${t.reason} in ('poison', 'retries exhausted')`),
    check(
      "dead_letters_replay",
      sql`(${t.replayedAt} is null) = (${t.replayedBy} is null) and (${t.replayedAt} is null) = (${t.replayOutboxId} is null)`,
    ),
  ],
);

/**
 * The first response to a request with an `Idempotency-Key`, replayed for every retry. Keys belong to
 * the authenticated subject that sent them (the gateway's `x-auth-subject`; "" without one), so one
 * caller's key never answers, or blocks, another's request.
 */
export const idempotencyKeys = pgTable(
  "idempotency_keys",
  {
    subject: text("subject").notNull().default(""),
    key: text("key").notNull(),
    requestHash: text("request_hash").notNull(),
    status: integer("status").notNull(),
    // json, not jsonb: jsonb reorders an object's keys, and a replay must read as the first answer did.
    body: json("body").notNull(),
    createdAt: createdAt(),
  },
  (t) => [
    primaryKey({ columns: [t.subject, t.key] }),
    // The prune's (packages/messaging/src/housekeeping.ts): without it every round read the whole table.
    index("idempotency_keys_created_at_idx").on(t.createdAt),
  ],
);

export { createdAt };
