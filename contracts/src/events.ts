import { z } from "zod";
import { TOPICS, type Topic } from "./topics.ts";

/** Money is an integer count of minor units, safe in both JavaScript and a Postgres bigint. */
export const amount = z.number().int().min(1).max(Number.MAX_SAFE_INTEGER);
export const balance = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);

/**
 * An id that names a row: any UUID, read in lower case, as PostgreSQL writes a `uuid` back. Ids are
 * compared as strings (a user's balance looked up by an event's userId, a token's subject), so one sent
 * in capitals (.NET and Swift print them so) would otherwise name nobody.
 */
export const rowId = () => z.uuid().toLowerCase();

// Payloads match the Go and Spring versions byte for byte, so the topics stay wire-compatible.
export const OrderEventPayload = z.object({
  orderId: rowId(),
  userId: rowId(),
  amount,
});
export type OrderEventPayload = z.infer<typeof OrderEventPayload>;

/** Why the user-service refused a reservation; the order-service ends the order CANCELED with it. */
export const REJECTION_REASONS = {
  insufficientFunds: "INSUFFICIENT_FUNDS",
  userNotFound: "USER_NOT_FOUND",
  orderCanceled: "ORDER_CANCELED",
} as const;
export type RejectionReason = (typeof REJECTION_REASONS)[keyof typeof REJECTION_REASONS];

export const CreditReservationFailedPayload = OrderEventPayload.extend({
  // Closed: any other reason would end up in the order's cancel_reason (a NUL would even fail its
  // write and be retried), so it is poison, dead-lettered at once.
  reason: z.enum(REJECTION_REASONS),
});
export type CreditReservationFailedPayload = z.infer<typeof CreditReservationFailedPayload>;

export const EVENT_SCHEMAS = {
  [TOPICS.orderCreated]: OrderEventPayload,
  [TOPICS.orderCanceled]: OrderEventPayload,
  [TOPICS.creditReserved]: OrderEventPayload,
  [TOPICS.creditReservationFailed]: CreditReservationFailedPayload,
} as const satisfies Record<Topic, z.ZodType>;

export type EventPayload<T extends Topic> = z.infer<(typeof EVENT_SCHEMAS)[T]>;

/** Event type names as they travel in the `event-type` header; one type per topic. */
export const EVENT_TYPES = {
  [TOPICS.orderCreated]: "OrderCreated",
  [TOPICS.orderCanceled]: "OrderCanceled",
  [TOPICS.creditReserved]: "CreditReserved",
  [TOPICS.creditReservationFailed]: "CreditReservationFailed",
} as const satisfies Record<Topic, string>;

export const SCHEMA_VERSION = "1";

/**
 * Why the order-service itself ended an order CANCELED (its `cancel_reason`), each with an `order.canceled`:
 * the client asked (`DELETE`), or the saga outlived `SAGA_TIMEOUT`. A refusal of the user-service ends it
 * CANCELED with one of REJECTION_REASONS instead, and no such event.
 */
export const CANCEL_REASONS = {
  byRequest: "CANCELED_BY_REQUEST",
  timeout: "TIMEOUT",
} as const;
