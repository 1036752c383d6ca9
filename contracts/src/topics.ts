export const TOPICS = {
  orderCreated: "order.created",
  orderCanceled: "order.canceled",
  creditReserved: "user.credit-reserved",
  creditReservationFailed: "user.credit-reservation-failed",
} as const;

export type Topic = (typeof TOPICS)[keyof typeof TOPICS];

export const EVENT_TOPICS: readonly Topic[] = Object.values(TOPICS);

/** The dead-letter topic that takes the poison events of `topic`. */
export function dlqTopic(topic: Topic): `${Topic}.dlq` {
  return `${topic}.dlq`;
}

/** Every topic the system uses, dead-letter topics included. */
export const ALL_TOPICS: readonly string[] = [...EVENT_TOPICS, ...EVENT_TOPICS.map(dlqTopic)];

/**
 * Every process may run under a topic prefix (`KAFKA_TOPIC_PREFIX`), so several copies of the system,
 * or the test files of one run, share a broker without seeing each other's events. The outbox stores
 * the logical name; the prefix is added on the way to Kafka and removed on the way back.
 */
export function prefixedTopic(prefix: string, topic: string): string {
  return `${prefix}${topic}`;
}
