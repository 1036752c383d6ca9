import type { MiddlewareHandler } from "hono";
import { AppError } from "./errors.ts";

export type BodyLimitOptions = {
  /** Largest request body accepted, in bytes. */
  maxBytes: number;
  /**
   * How much of a rejected body is read and thrown away so that its connection can serve the next
   * request. Past it the answer says `Connection: close` and the connection is not reused.
   */
  drainBytes: number;
};

const tooLarge = (maxBytes: number) =>
  new AppError("PAYLOAD_TOO_LARGE", `request body is larger than ${maxBytes} bytes`);

/**
 * Rejects a body over `maxBytes` with a 413 and keeps the connection sane for a pooled client.
 *
 * Hono's own `bodyLimit` cancels the stream of a chunked body it rejects, which destroys the socket
 * under a response that says `keep-alive`: the client's next request on that connection failed with
 * `UND_ERR_SOCKET`. Here nothing is cancelled: a declared length is never read (@hono/node-server reads
 * and discards the rest of an unread body once the answer is sent, as Node does), a chunked body is read
 * and discarded up to `drainBytes`, and a body larger than that gets `Connection: close`, so that no
 * client sends another request on a connection that still carries its unread bytes (nginx's lingering
 * close has the same aim).
 */
export function bodyLimit({ maxBytes, drainBytes }: BodyLimitOptions): MiddlewareHandler {
  return async function bodyLimit(c, next) {
    // No body to bound. Asked first: under @hono/node-server, `c.req.raw.body` builds the whole WHATWG
    // Request (URL, headers copied and checked, an AbortController), which a forwarded GET never needs.
    if (c.req.method === "GET" || c.req.method === "HEAD") return next();
    const body = c.req.raw.body;
    if (!body) return next();
    const declared = c.req.header("content-length");
    if (declared !== undefined && c.req.header("transfer-encoding") === undefined) {
      const length = Number(declared);
      if (length <= maxBytes) return next();
      if (length > drainBytes) c.header("connection", "close");
      throw tooLarge(maxBytes);
    }
    const reader = body.getReader();
    const chunks: Uint8Array[] = [];
    let size = 0;
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      size += value.length;
      if (size <= maxBytes) chunks.push(value);
      else if (size > drainBytes) {
        c.header("connection", "close");
        await reader.cancel();
        throw tooLarge(maxBytes);
      }
    }
    if (size > maxBytes) throw tooLarge(maxBytes);
    c.req.raw = new Request(c.req.raw, { body: Buffer.concat(chunks) });
    return next();
  };
}
