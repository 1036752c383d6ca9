import { OpenAPIRegistry, OpenApiGeneratorV31 } from "@asteasolutions/zod-to-openapi";
import { API_ROUTES, ERROR_RESPONSES, type ErrorResponse, TRACE_RESPONSE_DOC } from "./api.ts";
import { ErrorBody } from "./http.ts";

// The document builder lives apart from the index: it pulls in the generator, which no service needs.

const retryAfter = {
  "Retry-After": {
    description: "Seconds to wait before trying again.",
    schema: { type: "integer", minimum: 1 },
  },
} as const;

/**
 * When each error happens, and the headers it carries beside X-Request-Id and traceresponse. `refused`:
 * whether it is (`always`) or may be (`sometimes`) a refusal the HTTP server makes before the app runs,
 * or in its place (packages/http/src/serve.ts): such an answer names no trace, so it has no traceresponse.
 */
const ERRORS: Record<
  ErrorResponse,
  { description: string; headers?: Record<string, object>; refused?: "always" | "sometimes" }
> = {
  BadRequest: {
    description:
      "The request is malformed: a body that is not JSON, a field missing, mistyped or out of range, an id that is not a UUID, a malformed Idempotency-Key, a page's `limit` out of range or an `after` that is not a cursor (or a request that cannot be parsed or made a URL of, such as an HTTP/1.1 request without Host, an invalid Host or a backslash in the path; then the connection is closed).",
    refused: "sometimes",
  },
  Unauthorized: {
    description:
      "No bearer token, or one that is expired, not yet valid, badly signed, of another issuer or audience, or of an algorithm not accepted.",
    headers: {
      "WWW-Authenticate": {
        description:
          'RFC 6750: `Bearer realm="outbox-saga"`, with `error="invalid_token"` and why for a bad token.',
        schema: { type: "string" },
        required: true,
      },
    },
  },
  Forbidden: { description: "The token is not an admin's: only an admin may create users." },
  NotFound: {
    description:
      "No such user or order, or another user's (which answers exactly as a missing one; nothing is forwarded or written).",
  },
  RequestTimeout: {
    description: "The request's head or body did not arrive in time; the connection is closed.",
    refused: "always",
  },
  Conflict: { description: "The username is taken." },
  PayloadTooLarge: {
    description:
      "The body is over 64 KiB. A body up to 1 MiB is read and dropped, so that the connection stays usable; past that the answer says `Connection: close`, and what the client still sends of it is read and dropped (for 5 s and 64 MiB at most) before the connection is closed, so that the client reads this answer rather than a reset. With `Expect: 100-continue`, a declared length over the limit is answered at once, without `100 Continue`, and the connection is closed.",
  },
  UnsupportedMediaType: {
    description: "The body is declared as something other than JSON: send `Content-Type: application/json`.",
  },
  ExpectationFailed: {
    description:
      "The request's `Expect` asks for something other than `100-continue`, the only expectation served; the connection is closed.",
    refused: "always",
  },
  Unprocessable: {
    description: "The Idempotency-Key was already used, by this caller, for a different request.",
  },
  TooManyRequests: {
    description:
      "The caller or its address is over its rate limit (token buckets on POST /users and POST /orders).",
    headers: retryAfter,
  },
  HeadersTooLarge: {
    description: "The request head is over 16 KiB; the connection is closed.",
    refused: "always",
  },
  Internal: { description: "A bug; logged with the request id." },
  NotImplemented: {
    description:
      "The request's `Transfer-Encoding` is something other than `chunked` (such as `gzip, chunked`): no other transfer coding is decoded. Send the body chunked, or with a Content-Length; the connection is closed.",
  },
  BadGateway: {
    description:
      "An upstream service is unreachable, reset the connection, failed, or refused the gateway's credential; or the composed read could not get the user's orders; or a service lost its database connection while a write was on its way there, and had no answer. A write answered 502 after it was sent on may have been applied: send it again with the same Idempotency-Key, which answers the first response if it was.",
  },
  Unavailable: {
    description:
      "Shed, to stay fast under overload: a lane's bound and queue are full, order-service has too many sagas in flight for a new order, a service cannot reach its database or its database cannot write (read only after a failover, a full disk) (for a read, or a write that never reached the database or that the database refused or rolled back; one whose answer was lost is a 502 or 504), or the token's keys cannot be fetched; or the gateway is shutting down, and the request was a read or was not sent on (a write it had sent is a 504). Retry after `Retry-After` seconds.",
    headers: retryAfter,
  },
  GatewayTimeout: {
    description:
      "The upstream service did not answer in time (5 s, plus any Prefer: wait on an order's read), or had not answered a write when the gateway shut down, or its database did not answer a write in time. The outcome is unknown: a write may have been applied. Send it again with the same Idempotency-Key, which answers the first response if it was.",
  },
};

const DESCRIPTION = `An event-driven saga with a transactional outbox: \`POST /orders\` starts a saga that reserves the order's amount from its user's balance through Kafka, and the order ends CONFIRMED or CANCELED.

**Authentication.** Every \`/users\` and \`/orders\` request needs \`Authorization: Bearer <JWT>\` (HS256 with the gateway's secret, or an identity provider's keys): \`sub\` is a user id, \`"role": "admin"\` makes it an admin's. A user may read itself and its own orders, order for itself and cancel its own orders; only an admin may create users. \`npm start\` prints an admin's token, \`npm run token -- --user <id>\` mints a user's.

**Errors** are JSON \`{"error": "…", "requestId": "…"}\`; a rejected request changes nothing, but for a write answered 502 or 504, which may have been applied (send it again with the same \`Idempotency-Key\`). A method that a path does not support answers **405** with \`Allow\`; an unknown path 404 (a trailing slash makes another path).

**Headers.** \`X-Request-Id\` is echoed (or made) on every answer; \`traceparent\` is continued into the events, and every answer the gateway's app makes has a \`traceresponse\` that names the trace (yours, or the one the gateway started): a request refused before the app runs (a head that cannot be parsed, that comes too slowly or is too large, no \`Host\`, an \`Expect\` other than \`100-continue\`, an invalid \`Host\`) continues no trace, and its answer has no \`traceresponse\`; \`Idempotency-Key\` makes a create safe to retry; \`Retry-After\` comes with every 429 and with every 503 that sheds load or comes from a gateway shutting down (not with a service that lost its database), never with a 504.`;

/** The document's `info.version`: the API's, changed when a client would need to change. */
const API_VERSION = "1.0.0";

/**
 * The gateway's OpenAPI 3.1 document, generated from the route definitions and zod schemas of
 * `api.ts`. Build it once: it costs milliseconds, and it does not change while a process runs.
 */
export function createOpenApiDocument() {
  const registry = new OpenAPIRegistry();
  registry.registerComponent("securitySchemes", "bearerAuth", {
    type: "http",
    scheme: "bearer",
    bearerFormat: "JWT",
    description: "A JWT with `sub` (a user id), `exp`, `iss` and `aud`; `role: admin` for an admin.",
  });
  for (const [name, { description, headers = {}, refused }] of Object.entries(ERRORS)) {
    registry.registerComponent("responses", name, {
      description: `${ERROR_RESPONSES[name as ErrorResponse]}: ${description}`,
      headers: {
        "X-Request-Id": { description: "This request's id.", schema: { type: "string" } },
        ...(refused === "always"
          ? {}
          : refused === "sometimes"
            ? {
                traceresponse: {
                  ...TRACE_RESPONSE_DOC,
                  description: `${TRACE_RESPONSE_DOC.description} Absent when the request was refused before the app ran (it could not be parsed or made a URL of, or had no Host): such a request continues no trace.`,
                },
              }
            : { traceresponse: TRACE_RESPONSE_DOC }),
        ...headers,
      },
      content: {
        "application/json": { schema: { $ref: "#/components/schemas/Error" } },
      },
    });
  }
  for (const route of API_ROUTES) registry.registerPath(route);
  // ErrorBody is named `Error` by its meta; given here because only the responses above refer to it.
  return new OpenApiGeneratorV31([
    ...registry.definitions,
    { type: "schema", schema: ErrorBody },
  ]).generateDocument({
    openapi: "3.1.0",
    info: {
      title: "outbox-saga",
      version: API_VERSION,
      description: DESCRIPTION,
    },
    servers: [{ url: "/", description: "The gateway that serves this document" }],
    security: [{ bearerAuth: [] }],
    tags: [
      { name: "users", description: "Users and their balances (user-service)." },
      { name: "orders", description: "Orders and their sagas (order-service)." },
      { name: "operations", description: "Probes: no token." },
    ],
  });
}
