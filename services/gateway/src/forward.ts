import type { ServerResponse } from "node:http";
import {
  INTERNAL_CREDENTIAL_HEADER,
  REQUEST_ID_HEADER,
  ROLE_HEADER,
  SUBJECT_HEADER,
  TRACE_RESPONSE_HEADER,
} from "@saga/contracts";
import { type AppEnv, HEADROOM_HEADER, requestTraceparent, SHED_HEADER } from "@saga/http";
import type { Context } from "hono";
import type { ContentfulStatusCode, StatusCode } from "hono/utils/http-status";
import { principalOf } from "./auth/principal.ts";
import type { UpstreamResponse } from "./upstream.ts";

// Hop-by-hop headers belong to one connection and are never forwarded; content-length is recomputed.
// https://www.rfc-editor.org/rfc/rfc9110#section-7.6.1
const HOP_BY_HOP = new Set([
  "connection",
  "keep-alive",
  "proxy-authenticate",
  "proxy-authorization",
  "proxy-connection",
  "te",
  "trailer",
  "transfer-encoding",
  "upgrade",
  "expect",
  "host",
  "content-length",
  "http2-settings",
]);

// Set by the gateway alone: a client's own identity or credential headers never reach a service, and
// its bearer token stops here (the services trust the identity headers instead).
const GATEWAY_ONLY = new Set([SUBJECT_HEADER, ROLE_HEADER, INTERNAL_CREDENTIAL_HEADER, "authorization"]);

// What a proxy says of the client: its address, and the host and scheme it asked for. The gateway adds
// none of them, so any a request carries is the client's own word, which a service must not take for a
// proxy's: none is forwarded (the gateway's own rate limit takes the TCP peer's address).
const CLIENT_PROVENANCE = new Set([
  "forwarded",
  "x-forwarded-for",
  "x-forwarded-host",
  "x-forwarded-proto",
  "x-real-ip",
]);

const NONE: ReadonlySet<string> = new Set();

function connectionTokens(value: string | null | undefined): ReadonlySet<string> {
  // Mostly absent, or `keep-alive`: no set to build per request.
  if (!value || value === "keep-alive") return NONE;
  return new Set(
    (value ?? "")
      .split(",")
      .map((t) => t.trim().toLowerCase())
      .filter(Boolean),
  );
}

/**
 * The headers a request carries to an upstream: the client's end-to-end headers (Idempotency-Key,
 * content-type, tracestate, …) but for what it says of its own address (`X-Forwarded-For`, `Forwarded`),
 * the request id of this request, and the caller's W3C trace continued with a span of the gateway (or a
 * new trace), so that it reaches the services' outboxes; and the identity the gateway verified, in place
 * of any the client sent.
 */
export function upstreamHeaders(c: Context<AppEnv>): Record<string, string> {
  const listed = connectionTokens(c.req.header("connection"));
  const headers: Record<string, string> = {};
  c.req.raw.headers.forEach((value, key) => {
    if (!HOP_BY_HOP.has(key) && !listed.has(key) && !GATEWAY_ONLY.has(key) && !CLIENT_PROVENANCE.has(key))
      headers[key] = value;
  });
  const principal = principalOf(c);
  if (principal) {
    headers[SUBJECT_HEADER] = principal.subject;
    headers[ROLE_HEADER] = principal.admin ? "admin" : "user";
  }
  headers[REQUEST_ID_HEADER] = c.get("requestId");
  // The request's one span of the gateway, which its answer names (`traceresponse`).
  headers.traceparent = requestTraceparent(c);
  return headers;
}

/**
 * Aborts when the client goes away before its answer is sent, so that its upstream call stops too. Under
 * @hono/node-server, from the Node response's `close`, as the server itself tells it: `c.req.raw.signal`
 * says the same but first builds the whole WHATWG Request (URL, headers copied and checked), which a
 * forwarded GET otherwise never needs. Without a Node response (`app.request()` in tests), that signal.
 */
export function clientSignal(c: Context): AbortSignal {
  const outgoing = (c.env as { outgoing?: ServerResponse } | undefined)?.outgoing;
  if (!outgoing) return c.req.raw.signal;
  const controller = new AbortController();
  const gone = () => {
    if (!outgoing.writableFinished) controller.abort(new Error("the client closed its connection"));
  };
  // Gone already (while it queued for admission, say): its `close` has been and will not come again.
  if (outgoing.destroyed) gone();
  else outgoing.once("close", gone);
  return controller.signal;
}

// What each request was answered from, by context: the upstream's answer `passThrough` passed on, or
// undefined for an answer composed of several (`composedFromUpstream`). No entry: the gateway answered alone.
const answeredFrom = new WeakMap<Context, UpstreamResponse | undefined>();

/**
 * The upstream answer `passThrough` made this request's response of, for middleware that looks into it
 * after the route (authorization of a read): its body as bytes, without cloning the response's stream.
 */
export function forwardedOf(c: Context): UpstreamResponse | undefined {
  return answeredFrom.get(c);
}

/** Whether this request was answered from its upstreams' answers, not by the gateway alone. */
export function answeredByUpstream(c: Context): boolean {
  return answeredFrom.has(c);
}

/** Says that the gateway's answer to this request is made of its upstreams' (a composed read). */
export function composedFromUpstream(c: Context): void {
  answeredFrom.set(c, undefined);
}

/**
 * An upstream answered 401: the services answer it only to a request without the gateway's internal
 * credential, so the gateway's INTERNAL_SECRET is not theirs. The gateway's fault, never the client's
 * token (that 401 would come without the `WWW-Authenticate` the client is owed): the app maps it to a 502.
 */
export class CredentialRefusedError extends Error {
  override readonly name = "CredentialRefusedError";
  constructor(target: string) {
    super(`${target} refused the gateway's internal credential (INTERNAL_SECRET differs from the services')`);
  }
}

/**
 * The upstream's answer, status, headers and body unchanged but for the hop-by-hop headers; throws
 * `CredentialRefusedError` for a 401.
 */
export function passThrough(c: Context<AppEnv>, res: UpstreamResponse): Response {
  return answerWith(c, res, false);
}

/**
 * `passThrough` of the answer to a request the gateway made on the way (the orders side of a composed
 * read), without the upstream's `SHED_HEADER`: a refusal by another lane of
 * the service than the one carrying this request is passed on (503, `Retry-After`), but must not lower
 * this request's lane's bound, which only its own upstream answer may (admission.ts).
 */
export function passThroughSubRequest(c: Context<AppEnv>, res: UpstreamResponse): Response {
  return answerWith(c, res, true);
}

function answerWith(c: Context<AppEnv>, res: UpstreamResponse, subRequest: boolean): Response {
  if (res.status === 401) throw new CredentialRefusedError(res.target);
  answeredFrom.set(c, res);
  // A Connection header sent twice comes from undici as an array: the tokens of every one are listed.
  const { connection } = res.headers;
  const listed = connectionTokens(Array.isArray(connection) ? connection.join(",") : connection);
  const headers: Record<string, string | string[]> = {};
  for (const [key, value] of Object.entries(res.headers)) {
    // The request id and trace middleware have set ours, which the upstream's would override (it echoes the
    // request id anyway); headroom is for the gateway.
    if (
      value === undefined ||
      HOP_BY_HOP.has(key) ||
      listed.has(key) ||
      key === REQUEST_ID_HEADER ||
      key === TRACE_RESPONSE_HEADER ||
      key === HEADROOM_HEADER ||
      (subRequest && key === SHED_HEADER)
    )
      continue;
    headers[key] = value;
  }
  // A HEAD's answer keeps the body of the GET it was sent as: Hono drops it once the app has measured it.
  if (res.status === 204 || res.status === 304) return c.body(null, res.status as StatusCode, headers);
  return c.body(new Uint8Array(res.body), res.status as ContentfulStatusCode, headers);
}
