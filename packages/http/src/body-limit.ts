import type { IncomingMessage, ServerResponse } from "node:http";
import type { Context, MiddlewareHandler } from "hono";
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

const unsupportedCoding = new AppError(
  "NOT_IMPLEMENTED",
  "a Transfer-Encoding other than chunked is not supported: send the body chunked, or with a Content-Length",
);

// The body bodyLimit read, by request: what `requestBody` answers with.
const bodies = new WeakMap<object, Uint8Array>();

// Requests that expect `100 Continue` and have not had it (see `deferContinue`).
const awaitingContinue = new WeakSet<IncomingMessage>();

/**
 * Leaves the `100 Continue` that a request with `Expect: 100-continue` waits for to `bodyLimit`, which
 * sends it as it starts to read the body (as Go's net/http sends it on the body's first read), instead
 * of Node before the app has seen the request: a request refused before its body is read (a declared
 * length over the limit) is then answered without asking the client to send it.
 */
export function deferContinue(incoming: IncomingMessage): void {
  awaitingContinue.add(incoming);
}

/**
 * The request's body, whole. Behind `bodyLimit` (every app of `createBaseApp`), the bytes it read; read
 * here otherwise. `c.req.json()`, `text()` and `arrayBuffer()` give the same bytes, at the price of the
 * WHATWG Request they build (see bodyLimit).
 */
export async function requestBody(c: Context): Promise<Uint8Array> {
  return bodies.get(c.req.raw) ?? new Uint8Array(await c.req.arrayBuffer());
}

/**
 * Reads the body before the routes, bounded, and rejects one over `maxBytes` with a 413 that keeps the
 * connection sane for a pooled client.
 *
 * Hono's own `bodyLimit` cancels the stream of a chunked body it rejects, which destroys the socket
 * under a response that says `keep-alive`: the client's next request on that connection failed with
 * `UND_ERR_SOCKET`. Here nothing is cancelled: a body over the limit, declared or chunked, is read and
 * discarded up to `drainBytes` before the 413 is answered, and a body larger than that (or one whose
 * client waits for `100 Continue` to send it) gets `Connection: close` at once, and the connection a
 * lingering close (serve.ts), so that no client sends another request on a connection that still carries
 * its unread bytes. A 413 answered before its declared body was read left the rest to @hono/node-server,
 * which reads it for 500 ms and then closes the connection, under an answer that said `keep-alive`.
 *
 * Under @hono/node-server the body is read from Node's request stream, not through `c.req.raw`: a body
 * asked of the WHATWG Request builds the whole Request (URL, headers copied and checked, an
 * AbortController) and a web stream over Node's, about a tenth of the gateway's CPU a POST in its
 * profile (bench/JOURNAL.md, session 25).
 *
 * A request (of any method) whose Transfer-Encoding is anything but `chunked` is answered 501 with
 * `Connection: close`, unread.
 */
export function bodyLimit({ maxBytes, drainBytes }: BodyLimitOptions): MiddlewareHandler {
  return async function bodyLimit(c, next) {
    const coding = c.req.header("transfer-encoding");
    // Node removes the chunked framing of `gzip, chunked` and hands on what is under it, still coded, as
    // the body: a coding other than chunked, which nothing here decodes, is a 501 whatever the method
    // (RFC 9112 §6.1), and the connection is closed, its bytes unread. Node itself refuses a
    // Transfer-Encoding that does not end in chunked, or one with a Content-Length, as malformed (a 400).
    if (coding !== undefined && coding.toLowerCase() !== "chunked") {
      c.header("connection", "close");
      throw unsupportedCoding;
    }
    if (c.req.method === "GET" || c.req.method === "HEAD") return next();
    const { incoming, outgoing } = (c.env ?? {}) as { incoming?: IncomingMessage; outgoing?: ServerResponse };
    const awaiting = incoming !== undefined && awaitingContinue.has(incoming);
    const declared = c.req.header("content-length");
    const length = declared !== undefined && coding === undefined ? Number(declared) : undefined;
    // A client waiting for 100 Continue sends no body to drop: whether it sends one later is its choice.
    if (length !== undefined && (length > drainBytes || (length > maxBytes && awaiting))) {
      c.header("connection", "close");
      throw tooLarge(maxBytes);
    }
    if (awaiting) {
      awaitingContinue.delete(incoming);
      outgoing?.writeContinue();
    }
    const read =
      (incoming && length !== undefined && length <= maxBytes && (await arrived(incoming, length))) ||
      // Not destroyed when the read stops early: the 413 must still be written on its socket.
      (await readBounded(
        // (An async iterator that is iterable too, as every Readable's is.)
        incoming
          ? (incoming.iterator({ destroyOnReturn: false }) as AsyncIterableIterator<Buffer>)
          : c.req.raw.body,
        maxBytes,
        drainBytes,
      ));
    if (read.size > drainBytes) c.header("connection", "close");
    if (read.size > maxBytes) throw tooLarge(maxBytes);
    bodies.set(c.req.raw, read.bytes);
    // So that `c.req.text()` and the like still work (slowly): @hono/node-server builds the WHATWG body
    // from `rawBody` when there is one, instead of from the stream read above.
    if (incoming) Object.assign(incoming, { rawBody: read.bytes });
    return next();
  };
}

/** What was read of a body: all of it (`bytes`) when `size` is within the limit. */
type Read = { size: number; bytes: Buffer };

/**
 * A declared body that has arrived whole, taken from the request stream's buffer in one call; undefined
 * while some of it is still on its way (`readBounded` then waits for it, before admission, so that a slow
 * body holds no place). Nearly every body comes in the packet of its head, and reading it through the
 * stream's async iterator (an end-of-stream watch, a promise a chunk and one for its end) was what a request
 * refused under overload cost more once the read came before admission (bench/JOURNAL.md, session 48). Node
 * emits the request from the parser's callback for the head, before it pushes the body of the same packet:
 * one await later that body is in the buffer (its end in the same packet, which `ended` waits for).
 */
async function arrived(incoming: IncomingMessage, length: number): Promise<Read | undefined> {
  await undefined;
  if (incoming.readableLength < length) return undefined;
  const bytes = length === 0 ? Buffer.alloc(0) : (incoming.read() as Buffer);
  await ended(incoming);
  return { size: bytes.length, bytes };
}

/**
 * Waits for the end of a request whose body has been read whole, which the parser reports in its next
 * callback for the same packet. A stream nobody reads again never emits `end`, and @hono/node-server,
 * finding the request not ended when its answer closes, drains it after two timers of its own: two
 * wake-ups of an idle process for every POST (measured: 3.0 against 1.1 for a GET at 100 requests/s).
 */
function ended(incoming: IncomingMessage): Promise<void> | undefined {
  if (incoming.readableEnded || incoming.destroyed) return;
  return new Promise((resolve) => {
    const done = () => {
      incoming.off("end", done);
      incoming.off("close", done);
      resolve();
    };
    incoming.on("end", done);
    // A client that goes away before the end: the answer that follows is written to no one.
    incoming.on("close", done);
    incoming.resume();
  });
}

/**
 * Reads a body to its end, keeping up to `maxBytes`; past `drainBytes` it stops reading (the connection
 * is then closed after the answer). From Node's request stream, or from a WHATWG body (an app called
 * without a Node server: `app.request()` in tests). A client that goes away mid-body gets a 400 it will
 * not read, rather than an error logged as the server's.
 */
async function readBounded(
  source: AsyncIterable<Uint8Array> | null,
  maxBytes: number,
  drainBytes: number,
): Promise<Read> {
  const chunks: Uint8Array[] = [];
  let size = 0;
  if (!source) return { size, bytes: Buffer.alloc(0) };
  try {
    for await (const chunk of source) {
      size += chunk.length;
      if (size <= maxBytes) chunks.push(chunk);
      else if (size > drainBytes) break;
    }
  } catch (err) {
    throw new AppError("BAD_REQUEST", "the request body ended early", { cause: err });
  }
  return { size, bytes: size > maxBytes ? Buffer.alloc(0) : Buffer.concat(chunks, size) };
}
