import {
  DLQ_HEADERS,
  dlqTopic,
  Envelope,
  EVENT_SCHEMAS,
  EVENT_TOPICS,
  EVENT_TYPES,
  HEADERS,
  REJECTION_REASONS,
  SCHEMA_VERSION,
  TOPICS,
  type Topic,
} from "@saga/contracts";
import { stringify } from "yaml";
import { z } from "zod";

// The AsyncAPI 3 document of the events, made from the zod schemas of contracts/: the schemas, topic
// names, event types and header names come from there; only the prose is written here. The committed
// docs/asyncapi.yaml is this function's output (`npm run asyncapi -w docs`), and a test fails when they
// differ, so the document cannot drift from the code that produces and consumes the events.

type JsonSchema = { [key: string]: unknown; properties?: Record<string, JsonSchema> };

const KAFKA_BINDING_VERSION = "0.5.0";

/** Who writes and who reads each topic (docs/design.md, Event contracts). */
const FLOWS: Record<Topic, { producer: string; consumer: string; when: string }> = {
  [TOPICS.orderCreated]: {
    producer: "order-service",
    consumer: "user-service",
    when: "An order was placed (`POST /orders`): the user-service reserves its amount from the user's balance.",
  },
  [TOPICS.orderCanceled]: {
    producer: "order-service",
    consumer: "user-service",
    when:
      "A PENDING or CONFIRMED order was canceled (`DELETE /orders/{id}`), or a PENDING one outlived the saga " +
      "deadline (`SAGA_TIMEOUT`; the order's reason is `TIMEOUT`): the user-service releases its " +
      "reservation, once, or remembers the cancel if `order.created` has not arrived yet.",
  },
  [TOPICS.creditReserved]: {
    producer: "user-service",
    consumer: "order-service",
    when: "The user-service debited the order's amount: the order-service confirms the order.",
  },
  [TOPICS.creditReservationFailed]: {
    producer: "user-service",
    consumer: "order-service",
    when: "The user-service could not reserve the amount: the order-service cancels the order.",
  },
};

const ENVELOPE_DESCRIPTIONS: Record<keyof typeof HEADERS, string> = {
  eventId: "The outbox row's id: unique per event, the consumer's inbox key (a redelivery is applied once).",
  eventType: "The event's type; exactly one per topic.",
  schemaVersion: "The payload's schema version.",
  occurredAt: "When the outbox row was written, in the transaction that made the change (ISO 8601).",
  aggregateId: "The order's id, as the message key.",
  traceparent:
    "W3C trace context (`00-<trace id>-<span id>-<flags>`), continued from the HTTP request or the event that caused this one; " +
    "the `order.canceled` events of a deadline sweep share one new trace, the sweep's own (its log line names it). " +
    "A consumer ignores one it cannot use (malformed, or of version `ff`) and starts a new trace: the event is applied all the same.",
};

const DLQ_DESCRIPTIONS: Record<keyof typeof DLQ_HEADERS, string> = {
  error: "Why the message could not be applied (at most 2000 characters).",
  originalTopic: "The topic the message was consumed from, with the process's topic prefix.",
  originalPartition: "Its partition.",
  originalOffset: "Its offset.",
  consumerGroup: "The consumer group that gave up on it.",
  originalEventId: "The poison message's `event-id`, when it had one (at most 256 characters).",
  reason:
    "`poison` (it fails decoding or its contract) or `retries exhausted` (an unexpected error, retried up to the budget).",
  attempts: "How many times it failed with an unexpected error; 1 for poison.",
  replayOf:
    "On a message replayed from a dead letter (`npm run dlq -- replay`), on its original topic: the dead letter's id. " +
    "The replay keeps the original `event-id`, so it is applied once.",
  valueTruncated:
    "Only when the value was cut to fit the dead letter's bound (`DEAD_LETTER_MAX_BYTES`, 262144 bytes by default, " +
    "headers and key included): the bytes of the whole value (UTF-8), which the consumer's `dead_letters` table keeps.",
};

/** What the envelope headers of a dead letter are: its own row's, or what the original carried. */
const DEAD_LETTER_ENVELOPE_DESCRIPTIONS: Partial<Record<keyof typeof HEADERS, string>> = {
  eventId:
    "The dead letter's own id (its outbox row's and its `dead_letters` row's), which `npm run dlq` takes.",
  eventType: "The original's `event-type` as it came (at most 256 characters), `Unknown` when it had none.",
  schemaVersion:
    `The original's \`schema-version\` as it came, whatever version it names (at most 256 characters), \`${SCHEMA_VERSION}\` ` +
    "when it had none.",
  occurredAt: "When the dead letter was written (ISO 8601).",
  aggregateId:
    "The dead letter's key: the original's key; without one its `aggregate-id`, else `<topic>:<partition>:<offset>` " +
    "(at most 256 characters).",
  traceparent:
    "The original's trace continued with a span of the consumer that gave up on it; none when the original had no usable one.",
};

const PAYLOAD_DESCRIPTIONS: Record<string, string> = {
  orderId: "The order's id (also the message key).",
  userId: "The user who placed the order.",
  amount: "An integer count of minor units, 1 to 2^53−1.",
  reason: `Why the reservation failed: ${Object.values(REJECTION_REASONS).join(", ")}.`,
};

/** The JSON Schema of a zod schema, as a consumer reads it: unknown properties are allowed. */
function jsonSchema(schema: z.ZodType, descriptions: Record<string, string> = {}): JsonSchema {
  const { $schema: _, ...out } = z.toJSONSchema(schema, { target: "draft-7", io: "input" }) as JsonSchema;
  for (const [name, property] of Object.entries(out.properties ?? {})) {
    const description = descriptions[name];
    if (description) property.description = description;
  }
  return out;
}

function byHeaderName<K extends string>(
  names: Record<K, string>,
  descriptions: Record<K, string>,
): Record<string, string> {
  return Object.fromEntries((Object.keys(names) as K[]).map((key) => [names[key], descriptions[key]]));
}

/** `order.created` → `orderCreated`, `user.credit-reservation-failed` → `userCreditReservationFailed`. */
function camel(name: string): string {
  return name.replace(/[.-](\w)/g, (_, c: string) => c.toUpperCase());
}

const ref = (path: string) => ({ $ref: `#/${path}` });
const cap = (s: string) => s.charAt(0).toUpperCase() + s.slice(1);

/** The AsyncAPI 3.1 document of every topic of the system, dead-letter topics included. */
function asyncApiDocument(): Record<string, unknown> {
  const envelopeDescriptions = byHeaderName(HEADERS, ENVELOPE_DESCRIPTIONS);
  const dlqDescriptions = byHeaderName(DLQ_HEADERS, DLQ_DESCRIPTIONS);
  const deadLetterEnvelopeDescriptions = Object.fromEntries(
    Object.entries(DEAD_LETTER_ENVELOPE_DESCRIPTIONS).map(([key, text]) => [
      HEADERS[key as keyof typeof HEADERS],
      text,
    ]),
  );

  // The original's envelope as it came, whatever it was: it is a dead letter because it may be wrong.
  const deadLetterHeaders = Envelope.extend({
    [HEADERS.eventType]: z.string().min(1),
    [HEADERS.schemaVersion]: z.string().min(1),
    [HEADERS.aggregateId]: z.string().min(1),
    ...Object.fromEntries(
      Object.values(DLQ_HEADERS)
        .filter((name) => name !== DLQ_HEADERS.replayOf)
        .map((name) => [name, z.string()]),
    ),
    [DLQ_HEADERS.originalEventId]: z.string().optional(),
    [DLQ_HEADERS.valueTruncated]: z.string().regex(/^\d+$/).optional(),
  });
  // A replayed message is an event like any other, with one more header.
  const envelope = Envelope.extend({ [DLQ_HEADERS.replayOf]: z.string().optional() });

  const schemas: Record<string, JsonSchema> = {
    Envelope: {
      ...jsonSchema(envelope, {
        ...envelopeDescriptions,
        [DLQ_HEADERS.replayOf]: DLQ_DESCRIPTIONS.replayOf,
      }),
      description: "The envelope every event carries in its Kafka headers (all values are strings).",
    },
    DeadLetterHeaders: {
      ...jsonSchema(deadLetterHeaders, {
        ...envelopeDescriptions,
        ...deadLetterEnvelopeDescriptions,
        ...dlqDescriptions,
      }),
      description:
        "The headers of a dead letter: an envelope of its own (`event-id` is the dead-letter outbox row's; " +
        "`event-type` and `schema-version` are the original's, `Unknown` and " +
        `\`${SCHEMA_VERSION}\` when it had none; \`traceparent\` continues the original's trace with a span of the consumer that gave up, ` +
        "none when it had no usable one) and where the message came from.",
    },
  };
  const messages: Record<string, unknown> = {};
  const channels: Record<string, unknown> = {};
  const operations: Record<string, unknown> = {};
  // Listed after the four topics, in the same order.
  const deadMessages: Record<string, unknown> = {};
  const deadChannels: Record<string, unknown> = {};
  const deadOperations: Record<string, unknown> = {};
  const orderIdKey = {
    type: "string",
    format: "uuid",
    description: "The order's id: every event of one order lands on one partition, in order.",
  };

  for (const topic of EVENT_TOPICS) {
    const type = EVENT_TYPES[topic];
    const flow = FLOWS[topic];
    const channel = camel(topic);
    const payloadName = `${type}Payload`;
    schemas[payloadName] = jsonSchema(EVENT_SCHEMAS[topic], PAYLOAD_DESCRIPTIONS);
    schemas[`${type}Headers`] = {
      allOf: [
        ref("components/schemas/Envelope"),
        jsonSchema(z.object({ [HEADERS.eventType]: z.literal(type) })),
      ],
    };
    messages[type] = {
      name: type,
      title: type,
      summary: flow.when,
      contentType: "application/json",
      headers: ref(`components/schemas/${type}Headers`),
      payload: ref(`components/schemas/${payloadName}`),
      bindings: { kafka: { key: orderIdKey, bindingVersion: KAFKA_BINDING_VERSION } },
    };
    channels[channel] = {
      address: topic,
      title: topic,
      description: `${flow.when} Written by the ${flow.producer}'s outbox, published by the relay.`,
      messages: { [type]: ref(`components/messages/${type}`) },
    };
    operations[`send${cap(channel)}`] = {
      action: "send",
      channel: ref(`channels/${channel}`),
      summary: `The ${flow.producer} writes ${type} to its outbox with the change that causes it; the relay publishes it (acks=all).`,
      messages: [ref(`channels/${channel}/messages/${type}`)],
      tags: [{ name: flow.producer }],
    };
    operations[`receive${cap(channel)}`] = {
      action: "receive",
      channel: ref(`channels/${channel}`),
      summary:
        `The ${flow.consumer} (consumer group \`${flow.consumer}\`) applies it once: an inbox row keyed by ` +
        "`event-id` in the transaction that applies it; the offset is committed after that transaction.",
      messages: [ref(`channels/${channel}/messages/${type}`)],
      bindings: {
        kafka: { groupId: { type: "string", const: flow.consumer }, bindingVersion: KAFKA_BINDING_VERSION },
      },
      tags: [{ name: flow.consumer }],
    };

    const dead = dlqTopic(topic);
    const deadChannel = camel(dead);
    const deadMessage = `${type}DeadLetter`;
    deadMessages[deadMessage] = {
      name: deadMessage,
      title: `${type} dead letter`,
      summary: `A message of ${topic} that the ${flow.consumer} can never apply.`,
      description:
        "A message that failed its contract (envelope, event type, JSON, payload schema), or whose application " +
        "failed with an unexpected error (neither its contract nor the database or network) `CONSUMER_RETRY_ATTEMPTS` " +
        "times (10 by default). Its value is the original's, unchanged, whatever it is, unless the dead letter would " +
        "be larger than `DEAD_LETTER_MAX_BYTES`: then its start, with `dlq-value-truncated`.",
      contentType: "text/plain",
      headers: ref("components/schemas/DeadLetterHeaders"),
      payload: {
        type: "string",
        description:
          "The original message's value (NUL replaced by U+FFFD; a null value, a tombstone, as an empty string), " +
          "cut to fit `DEAD_LETTER_MAX_BYTES` when `dlq-value-truncated` says so.",
      },
      bindings: {
        kafka: {
          key: {
            type: "string",
            description:
              "The original's key; without one its `aggregate-id`, else `<topic>:<partition>:<offset>` (at most 256 characters).",
          },
          bindingVersion: KAFKA_BINDING_VERSION,
        },
      },
    };
    deadChannels[deadChannel] = {
      address: dead,
      title: dead,
      description: `Dead letters of ${topic}: for people and tools; nothing in the system consumes them.`,
      messages: { [deadMessage]: ref(`components/messages/${deadMessage}`) },
    };
    deadOperations[`send${cap(deadChannel)}`] = {
      action: "send",
      channel: ref(`channels/${deadChannel}`),
      summary:
        `The ${flow.consumer} writes a message it can never apply to its outbox, in the transaction that ` +
        "records it in its `dead_letters` table (never in its inbox, so that a replay of the event is applied), " +
        "and moves on; the relay publishes it.",
      messages: [ref(`channels/${deadChannel}/messages/${deadMessage}`)],
      tags: [{ name: flow.consumer }],
    };
  }

  return {
    asyncapi: "3.1.0",
    info: {
      title: "outbox-saga events",
      version: SCHEMA_VERSION,
      description:
        "The events of the outbox-saga system: an order saga between the order-service and the user-service " +
        "over Kafka, written through a transactional outbox and applied exactly once through an inbox " +
        "(docs/design.md). Every process may run under a topic prefix (`KAFKA_TOPIC_PREFIX`), added to " +
        "each address here. Generated from contracts/ by `npm run asyncapi -w docs`: do not edit by hand.",
      tags: [{ name: "order-service" }, { name: "user-service" }],
    },
    defaultContentType: "application/json",
    servers: {
      local: {
        host: "127.0.0.1:9092",
        protocol: "kafka",
        description:
          "The broker of `npm start` (KRaft, one node; `compose.yaml` publishes it on the same port).",
      },
    },
    channels: { ...channels, ...deadChannels },
    operations: { ...operations, ...deadOperations },
    components: { schemas, messages: { ...messages, ...deadMessages } },
  };
}

/** The document as committed in docs/asyncapi.yaml. */
export function asyncApiYaml(): string {
  return (
    "# Generated from contracts/ by `npm run asyncapi -w docs` (docs/src/asyncapi.ts): do not edit by hand.\n" +
    stringify(asyncApiDocument(), { lineWidth: 0, aliasDuplicateObjects: false })
  );
}
