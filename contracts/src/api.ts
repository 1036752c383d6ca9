import type { RouteConfig } from "@asteasolutions/zod-to-openapi";
import { z } from "zod";
import {
  CreateOrderRequest,
  CreateUserRequest,
  IDEMPOTENCY_KEY_PATTERN,
  ORDER_PAGE_LIMIT,
  Order,
  PAGE_CURSOR_PATTERN,
  User,
  UserOrders,
} from "./http.ts";

// The public HTTP API, one definition per operation: the gateway publishes these as its OpenAPI
// document (openapi.ts) and answers 405 from their methods; the services read bodies with the same zod
// schemas (http.ts) and ids and Idempotency-Keys by the same rules, and a test per service checks that it
// serves exactly its routes here. What the running system answers is checked against the document by
// tools/system/src/stack/openapi.test.ts. Paths are OpenAPI templates (`/users/{id}`); `honoPath` turns
// one into a router path.

/** Error responses by name; each is a `components/responses` entry of the document (openapi.ts). */
export const ERROR_RESPONSES = {
  BadRequest: "400",
  Unauthorized: "401",
  Forbidden: "403",
  NotFound: "404",
  RequestTimeout: "408",
  Conflict: "409",
  PayloadTooLarge: "413",
  UnsupportedMediaType: "415",
  ExpectationFailed: "417",
  Unprocessable: "422",
  TooManyRequests: "429",
  HeadersTooLarge: "431",
  Internal: "500",
  NotImplemented: "501",
  BadGateway: "502",
  Unavailable: "503",
  GatewayTimeout: "504",
} as const;
export type ErrorResponse = keyof typeof ERROR_RESPONSES;

const ref = (name: ErrorResponse) => ({ $ref: `#/components/responses/${name}` });
/** `{ "404": { $ref: …NotFound } , … }` for the named error responses. */
const errors = (...names: ErrorResponse[]) =>
  Object.fromEntries(names.map((name) => [ERROR_RESPONSES[name], ref(name)]));

/**
 * What is answered before any route, to a request that cannot be parsed, is too slow or too large, or
 * asks for what the server does not do (an expectation, a transfer coding).
 */
const ANY_CONNECTION: ErrorResponse[] = [
  "BadRequest",
  "RequestTimeout",
  "ExpectationFailed",
  "HeadersTooLarge",
  "NotImplemented",
];
/** What any API request through the gateway can end in, whatever its route. */
const EVERY_REQUEST: ErrorResponse[] = [
  ...ANY_CONNECTION,
  "Unauthorized",
  "Internal",
  "BadGateway",
  "Unavailable",
  "GatewayTimeout",
];
/** And those with a JSON body. */
const WITH_BODY: ErrorResponse[] = [
  "PayloadTooLarge",
  "UnsupportedMediaType",
  "Unprocessable",
  "TooManyRequests",
];

/**
 * What every answer the gateway's app makes names: the trace it continued or started for the request. A
 * request refused before the app runs (serve.ts: a head that cannot be parsed, too slow or too large, no
 * Host, an unmet Expect, an invalid Host) continues no trace, and its answer has none.
 */
export const TRACE_RESPONSE_DOC = {
  description:
    "The W3C trace of this request, as `00-<trace id>-<the gateway's span id>-<flags>`: yours continued when you sent a usable `traceparent`, otherwise a new one. Its trace id is the one its events and the services' logs carry. W3C Trace Context's drafts name this response header; its value is a `traceparent`, to send with a request that follows from this one.",
  schema: { type: "string" as const, pattern: "^00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]$" },
};

const requestIdHeader = {
  "X-Request-Id": {
    description: "This request's id: the client's own when it sent a usable one, otherwise a new one.",
    schema: { type: "string" as const },
  },
  traceresponse: TRACE_RESPONSE_DOC,
};

// Header parameters: only what is enforced is constrained. An X-Request-Id or traceparent that is not
// usable is replaced, and a Prefer that is not understood is ignored (RFC 7240 §2), never refused.
const traceHeaders = {
  "X-Request-Id": z.string().optional().meta({
    description:
      "Your id for this request (up to 128 characters of `A-Za-z0-9_-=`); echoed in the response and logs. Anything else is replaced by a new one.",
  }),
  traceparent: z.string().optional().meta({
    description:
      "W3C Trace Context (https://www.w3.org/TR/trace-context/). Continued into the events the request causes; a malformed one (or one of version `ff`) starts a new trace. The answer's `traceresponse` names the trace either way.",
    example: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
  }),
};
const idempotencyKey = z.string().regex(IDEMPOTENCY_KEY_PATTERN).optional().meta({
  description:
    "1 to 200 visible ASCII characters. A retry with the same key and the same request gets the first response back and creates nothing; the same key with a different request is a 422. Kept per caller for at least the services' INBOX_RETENTION_HOURS (15 days by default).",
  example: "3f1c8d5e-order-42",
});
const idParam = (what: string) =>
  z.object({
    id: z.uuid().meta({ description: `The ${what}'s id.`, param: { description: `The ${what}'s id.` } }),
  });

/** A successful JSON answer, with the headers beside X-Request-Id and the links to what may follow. */
const json = (
  description: string,
  schema: z.ZodType,
  { headers = {}, links }: { headers?: Record<string, unknown>; links?: Record<string, Link> } = {},
) => ({
  description,
  headers: { ...requestIdHeader, ...headers },
  content: { "application/json": { schema } },
  ...(links && { links }),
});

/**
 * An OpenAPI link: where an answer leads (https://spec.openapis.org/oas/v3.1.0#link-object). They
 * chain the saga for a reader, a generated client and a stateful fuzzer: create a user, order for it,
 * read the order, cancel it, read it again.
 */
type Link = {
  operationId: string;
  description: string;
  parameters?: Record<string, string>;
  requestBody?: unknown;
};

const bearer = [{ bearerAuth: [] }];

/** A page of a user's orders: how many, and after which (the cursor the previous page gave). */
const pageQuery = {
  limit: z
    .int()
    .min(1)
    .max(ORDER_PAGE_LIMIT.max)
    .default(ORDER_PAGE_LIMIT.default)
    .meta({
      param: {
        description: `The most orders in the page (1 to ${ORDER_PAGE_LIMIT.max}; ${ORDER_PAGE_LIMIT.default} without it). Anything else is a 400.`,
      },
    }),
  after: z
    .string()
    .regex(PAGE_CURSOR_PATTERN)
    .optional()
    .meta({
      param: {
        description:
          "Where the page starts: the cursor the previous page gave (`next`, or the `after` of its `Link`), passed back as it came. Without it, the oldest order. A value of another form is a 400.",
      },
    }),
};

/** The header that leads from a page of orders to the next one, while there is one (RFC 8288). */
const nextPageLink = (target: string) => ({
  Link: {
    description: `\`<${target}>; rel="next"\`: the next page (the same \`limit\`), while more orders follow; absent on the last page.`,
    schema: { type: "string" },
  },
});

export const createUser = {
  method: "post",
  path: "/users",
  operationId: "createUser",
  tags: ["users"],
  summary: "Create a user (admin only)",
  description:
    "Creates a user whose balance starts at `initialBalance`. Only an admin's token may create users.",
  security: bearer,
  request: {
    headers: z.object({ "Idempotency-Key": idempotencyKey, ...traceHeaders }),
    body: { required: true, content: { "application/json": { schema: CreateUserRequest } } },
  },
  responses: {
    201: json("Created (or, for a retried Idempotency-Key, the first response again).", User, {
      links: {
        GetUser: {
          operationId: "getUser",
          description: "Read it.",
          parameters: { id: "$response.body#/id" },
        },
        GetUserOrders: {
          operationId: "getUserOrders",
          description: "Read it with its orders.",
          parameters: { id: "$response.body#/id" },
        },
        CreateOrder: {
          operationId: "createOrder",
          description: "Order for it.",
          requestBody: { userId: "$response.body#/id", amount: 1000 },
        },
        ListOrders: {
          operationId: "listOrders",
          description: "Its orders.",
          parameters: { userId: "$response.body#/id" },
        },
      },
    }),
    ...errors(...EVERY_REQUEST, ...WITH_BODY, "Forbidden", "Conflict"),
  },
} as const satisfies RouteConfig;

export const getUser = {
  method: "get",
  path: "/users/{id}",
  operationId: "getUser",
  tags: ["users"],
  summary: "Read a user",
  description: "A user may read itself; another user's id answers 404, as a missing one does.",
  security: bearer,
  request: { params: idParam("user"), headers: z.object(traceHeaders) },
  responses: { 200: json("The user.", User), ...errors(...EVERY_REQUEST, "NotFound") },
} as const satisfies RouteConfig;

export const getUserOrders = {
  method: "get",
  path: "/users/{id}/orders",
  operationId: "getUserOrders",
  tags: ["users"],
  summary: "Read a user with its orders",
  description: `Composed by the gateway from user-service and order-service, asked at the same time. The orders come a page at a time, oldest first: at most \`limit\` (${ORDER_PAGE_LIMIT.default} by default, ${ORDER_PAGE_LIMIT.max} at most); \`next\` (and the \`Link\` header) says where the next page starts, null on the last one. Paging never repeats an order nor skips one that existed when it began; orders placed since come after those (but for one placed the moment a page is read, which may be missed). A bad \`limit\` or \`after\` is a 400. Without its orders there is no answer: a 502 (504 when order-service was only slow; 503 with Retry-After when it sheds the read or the gateway is shutting down).`,
  security: bearer,
  request: {
    params: idParam("user"),
    query: z.object(pageQuery),
    headers: z.object(traceHeaders),
  },
  responses: {
    200: json("The user and a page of its orders.", UserOrders, {
      headers: nextPageLink("/users/{id}/orders?limit=…&after=…"),
    }),
    ...errors(...EVERY_REQUEST, "NotFound"),
  },
} as const satisfies RouteConfig;

export const createOrder = {
  method: "post",
  path: "/orders",
  operationId: "createOrder",
  tags: ["orders"],
  summary: "Place an order: starts the saga",
  description:
    "Creates the order PENDING and starts the saga: user-service reserves the amount from the user's balance, and the order becomes CONFIRMED, or CANCELED when the credit is refused (an unknown user included) or no answer came before the saga's deadline. Follow it with `GET /orders/{id}` and `Prefer: wait=N`. A user's token may only order for itself (another userId answers 404). When too many sagas are in flight, a 503 with Retry-After before any work. A 502 or 504 may follow a created order: send it again with the same Idempotency-Key.",
  security: bearer,
  request: {
    headers: z.object({ "Idempotency-Key": idempotencyKey, ...traceHeaders }),
    body: { required: true, content: { "application/json": { schema: CreateOrderRequest } } },
  },
  responses: {
    201: json("Created, PENDING (or, for a retried Idempotency-Key, the first response again).", Order, {
      links: {
        GetOrder: {
          operationId: "getOrder",
          description: "Follow it.",
          parameters: { id: "$response.body#/id" },
        },
        CancelOrder: {
          operationId: "cancelOrder",
          description: "Cancel it.",
          parameters: { id: "$response.body#/id" },
        },
        ListOrders: {
          operationId: "listOrders",
          description: "Its user's orders.",
          parameters: { userId: "$response.body#/userId" },
        },
      },
    }),
    ...errors(...EVERY_REQUEST, ...WITH_BODY, "NotFound"),
  },
} as const satisfies RouteConfig;

export const listOrders = {
  method: "get",
  path: "/orders",
  operationId: "listOrders",
  tags: ["orders"],
  summary: "List a user's orders",
  description: `A page at a time, oldest first: at most \`limit\` orders (${ORDER_PAGE_LIMIT.default} by default, ${ORDER_PAGE_LIMIT.max} at most), and while more follow a \`Link: <…>; rel="next"\` header (RFC 8288) to the next page. Paging never repeats an order nor skips one that existed when it began; orders placed since come after those (but for one placed the moment a page is read, which may be missed). A bad \`limit\` or \`after\` is a 400. A user's token may only ask for its own (another userId answers 404).`,
  security: bearer,
  request: {
    query: z.object({ userId: z.uuid().meta({ param: { description: "Whose orders." } }), ...pageQuery }),
    headers: z.object(traceHeaders),
  },
  responses: {
    200: json("A page of the orders, oldest first.", z.array(Order), {
      headers: nextPageLink("/orders?userId=…&limit=…&after=…"),
    }),
    ...errors(...EVERY_REQUEST, "NotFound"),
  },
} as const satisfies RouteConfig;

export const getOrder = {
  method: "get",
  path: "/orders/{id}",
  operationId: "getOrder",
  tags: ["orders"],
  summary: "Read an order, or wait for its outcome",
  description:
    "With `Prefer: wait=N` (RFC 7240 §4.3) the answer is held until the order is CONFIRMED or CANCELED, or N seconds pass (then the order as it is, PENDING); N above 30 counts as 30. The response then says `Preference-Applied: wait=N`. A process that shuts down answers what it holds at once, with the order as it is (PENDING included). An order already decided, or none, is answered at once, and under load shed (503 with Retry-After) as any read is.",
  security: bearer,
  request: {
    params: idParam("order"),
    headers: z.object({
      Prefer: z.string().optional().meta({
        description: "`wait=N`: hold the answer until the order leaves PENDING, at most N (≤ 30) seconds.",
        example: "wait=10",
      }),
      ...traceHeaders,
    }),
  },
  responses: {
    200: json("The order.", Order, {
      links: {
        CancelOrder: {
          operationId: "cancelOrder",
          description: "Cancel it.",
          parameters: { id: "$response.body#/id" },
        },
      },
      headers: {
        "Preference-Applied": {
          description: "`wait=N` when the request's `Prefer: wait=N` was honoured.",
          schema: { type: "string", pattern: "^wait=\\d+$" },
        },
        Vary: { description: "`prefer`", schema: { type: "string" } },
      },
    }),
    ...errors(...EVERY_REQUEST, "NotFound"),
  },
} as const satisfies RouteConfig;

export const cancelOrder = {
  method: "delete",
  path: "/orders/{id}",
  operationId: "cancelOrder",
  tags: ["orders"],
  summary: "Cancel an order (it is not removed)",
  description:
    "A cancel, not a removal: a PENDING or CONFIRMED order becomes CANCELED, an `order.canceled` event releases any credit reserved for it, and the order stays readable with `GET /orders/{id}` as CANCELED. Canceling a CANCELED order answers 204 again and changes nothing. A user's token may only cancel its own orders (another's answers 404, as an unknown one, and changes nothing).",
  security: bearer,
  request: { params: idParam("order"), headers: z.object(traceHeaders) },
  responses: {
    204: {
      description: "Canceled (or already was).",
      headers: requestIdHeader,
      links: {
        GetOrder: {
          operationId: "getOrder",
          description: "It stays readable, CANCELED.",
          parameters: { id: "$request.path.id" },
        },
      },
    },
    ...errors(...EVERY_REQUEST, "NotFound"),
  },
} as const satisfies RouteConfig;

const Health = z.object({ status: z.literal("UP") }).meta({ id: "Health" });
const NotReady = z.object({ status: z.literal("DOWN"), error: z.string() }).meta({ id: "NotReady" });

export const health = {
  method: "get",
  path: "/health",
  operationId: "health",
  tags: ["operations"],
  summary: "Alive",
  description: "Answers while the process runs; no token, never rate limited or shed.",
  security: [],
  responses: { 200: json("Alive.", Health), ...errors(...ANY_CONNECTION) },
} as const satisfies RouteConfig;

export const ready = {
  method: "get",
  path: "/ready",
  operationId: "ready",
  tags: ["operations"],
  summary: "Ready to serve",
  description:
    "The gateway is ready while every upstream (user-service, order-service) has an instance in rotation. No token, never rate limited or shed.",
  security: [],
  responses: {
    200: json("Ready.", Health),
    503: json("Not ready: why.", NotReady),
    ...errors(...ANY_CONNECTION),
  },
} as const satisfies RouteConfig;

/** Every public operation, in the document's order. */
export const API_ROUTES = [
  createUser,
  getUser,
  getUserOrders,
  createOrder,
  listOrders,
  getOrder,
  cancelOrder,
  health,
  ready,
] as const satisfies readonly RouteConfig[];

/** The operations each service serves itself (the gateway composes `getUserOrders`). */
export const USER_SERVICE_ROUTES = [createUser, getUser] as const;
export const ORDER_SERVICE_ROUTES = [createOrder, listOrders, getOrder, cancelOrder] as const;

/** `/users/{id}` as a Hono (or Express) route path: `/users/:id`. */
export const honoPath = (path: string) => path.replace(/\{([^}]+)\}/g, ":$1");
