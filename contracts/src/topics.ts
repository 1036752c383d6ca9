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
