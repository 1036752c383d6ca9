import { z } from "zod";
import { amount, balance, rowId } from "./events.ts";

// Request and response bodies of the HTTP API. `.meta({ id })` names each one in the OpenAPI document's
// components (api.ts, openapi.ts), so a generated client gets the same type names.

export const CreateUserRequest = z
  .object({
    // Every rule is one the document states (maxLength, pattern) and is checked on the name as sent, so
    // that what the document calls valid is exactly what is accepted; the length is counted as JSON Schema
    // counts it, in code points. Stored trimmed.
    username: z
      .string()
      .refine((s) => [...s].length <= 64, "must be at most 64 characters")
      // Something besides spaces, and no control character: PostgreSQL text cannot hold NUL, and no name
      // needs one. One pattern, as the document has room for one.
      .regex(
        /^[^\u0000-\u001f\u007f]*[^\s\u0000-\u001f\u007f][^\u0000-\u001f\u007f]*$/,
        "must not be blank or contain control characters",
      )
      .trim()
      .meta({
        description:
          "Unique. 1 to 64 characters (code points), not all blank, no control characters (U+0000–U+001F, U+007F); stored without leading and trailing spaces.",
        maxLength: 64,
        example: "alice",
      }),
    initialBalance: balance.meta({ description: "Minor units (cents).", example: 5000 }),
  })
  .meta({ id: "CreateUserRequest" });
export type CreateUserRequest = z.infer<typeof CreateUserRequest>;

export const CreateOrderRequest = z
  .object({
    userId: rowId().meta({ description: "The user who pays; a user's token may only name itself." }),
    amount: amount.meta({ description: "Minor units (cents).", example: 1000 }),
  })
  .meta({ id: "CreateOrderRequest" });
export type CreateOrderRequest = z.infer<typeof CreateOrderRequest>;

export const OrderStatus = z.enum(["PENDING", "CONFIRMED", "CANCELED"]).meta({
  id: "OrderStatus",
  description:
    "PENDING until user-service answers; then CONFIRMED (credit reserved) or CANCELED (credit refused, canceled by DELETE, or past the saga's deadline unanswered: reason TIMEOUT). A CONFIRMED order can still be canceled by DELETE; CANCELED is final.",
});
export type OrderStatus = z.infer<typeof OrderStatus>;

const createdAt = z.iso.datetime().meta({ description: "ISO 8601, UTC, milliseconds." });

export const User = z
  .object({
    id: z.uuid(),
    username: z.string(),
    balance: balance.meta({ description: "Minor units: the initial balance less the credit reserved." }),
    createdAt,
  })
  .meta({ id: "User" });
export type User = z.infer<typeof User>;

export const Order = z
  .object({ id: z.uuid(), userId: z.uuid(), amount, status: OrderStatus, createdAt })
  .meta({ id: "Order" });
export type Order = z.infer<typeof Order>;

/**
 * A page of a user's orders: `limit` orders at most (`ORDER_PAGE_LIMIT.default` without one, never more
 * than `.max`), oldest first (by creation, then id); the next page starts after the cursor the last one
 * gives (`next`, or a `Link: <…>; rel="next"` header, RFC 8288).
 */
export const ORDER_PAGE_LIMIT = { default: 100, max: 1000 } as const;

/**
 * What a page cursor (`after`) is: the position of a page's last order, its creation in seconds and
 * microseconds since the epoch and its id. Opaque to clients, which pass back what a page gave; exact,
 * so that what the API document calls valid the order-service takes (as a position, order or not).
 */
export const PAGE_CURSOR_PATTERN =
  /^[0-9]{1,11}\.[0-9]{6}_[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

export const UserOrders = z
  .object({
    user: User,
    orders: z.array(Order).meta({ description: "Oldest first: a page of at most `limit`." }),
    next: z.string().regex(PAGE_CURSOR_PATTERN).nullable().meta({
      description:
        "Where the next page starts: send it as `after` (with the same `limit`). Null on the last page.",
    }),
  })
  .meta({ id: "UserOrders" });
export type UserOrders = z.infer<typeof UserOrders>;

export const IdParam = z.uuid();

/** The one JSON error shape every process answers with. */
export const ErrorBody = z
  .object({
    error: z.string().meta({ description: "What went wrong, for a person; never a stack trace." }),
    requestId: z.string().optional().meta({
      description:
        "As in the X-Request-Id response header. A request refused before it is routed (a 400, 408, 417 or 431 that closes the connection) gets an id of its own, never the client's.",
    }),
  })
  .meta({ id: "Error" });
export type ErrorBody = z.infer<typeof ErrorBody>;

export const IDEMPOTENCY_KEY_HEADER = "idempotency-key";
/** What an `Idempotency-Key` may be: 1 to 200 visible ASCII characters. */
export const IDEMPOTENCY_KEY_PATTERN = /^[\x21-\x7e]{1,200}$/;
export const REQUEST_ID_HEADER = "x-request-id";
/**
 * The header with which the gateway names the W3C trace it continued or started for a request, as
 * `00-<trace id>-<the gateway's span id>-<flags>`: the response header W3C Trace Context's drafts name
 * (https://github.com/w3c/trace-context; not in a recommendation yet), not `traceparent`, which in a
 * request names the caller's span, the parent of the receiver's.
 */
export const TRACE_RESPONSE_HEADER = "traceresponse";

/**
 * The identity the gateway verified, forwarded to the services: the token's subject (a user id, or an
 * admin's id) and its role. The gateway removes both from every incoming request before it sets them.
 */
export const SUBJECT_HEADER = "x-auth-subject";
export const ROLE_HEADER = "x-auth-role";
/** The gateway's internal credential, without which a service refuses its API (DESIGN: internal surfaces). */
export const INTERNAL_CREDENTIAL_HEADER = "x-internal-credential";
