import { sql } from "drizzle-orm";
import {
  bigint,
  bigserial,
  index,
  integer,
  jsonb,
  pgTable,
  primaryKey,
  text,
  timestamp,
  uuid,
} from "drizzle-orm/pg-core";

const createdAt = () => timestamp("created_at", { withTimezone: true, mode: "date" }).notNull().defaultNow();

/**
 * Events waiting for the relay. `id` is the event id that travels in the `event-id` header;
 * `position` is the order in which the relay publishes. Writers lock the aggregate before they
 * insert, so for one aggregate position order is commit order.
 */
export const outbox = pgTable(
  "outbox",
  {
    id: uuid("id").primaryKey().defaultRandom(),
    position: bigserial("position", { mode: "number" }).notNull().unique(),
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
    body: jsonb("body").notNull(),
    createdAt: createdAt(),
  },
  (t) => [primaryKey({ columns: [t.subject, t.key] })],
);

export { createdAt };
