import { randomUUID } from "node:crypto";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import {
  type AddressInfo,
  createServer as createListener,
  type Server as Listener,
  type Socket,
} from "node:net";
import type { Duplex } from "node:stream";
import { getRequestListener, RequestError } from "@hono/node-server";
import { REQUEST_ID_HEADER } from "@saga/contracts";
import { flushRepeats, type Logger } from "@saga/observability";
import type { Hono } from "hono";
import { deferContinue } from "./body-limit.ts";
import type { ServerLimits } from "./settings.ts";

// A process exits within 5 s of SIGTERM, which the services' shutdown tests hold it to: well inside
// Kubernetes' default grace before SIGKILL (terminationGracePeriodSeconds, 30 s) and compose.yaml's
// stop_grace_period (10 s).
const SHUTDOWN_DEADLINE_MS = 4500;
const HTTP_DRAIN_MS = 2000;
// What `draining` is given of the HTTP drain: the rest is for writing the answers it ends then.
const ANSWER_MARGIN_MS = 300;
/**
 * Connections the kernel holds for a listening socket until the process accepts them. Past it, a new
 * connection's SYN is dropped and its client sends it again a second later (then 3, then 7): a stall,
 * not an answer. Node's default is 511; the kernel caps it at net.core.somaxconn (4,096 since Linux 5.4).
 */
const LISTEN_BACKLOG = 4096;

/**
 * Listening sockets on the port, sharing it (SO_REUSEPORT), all feeding the one HTTP server. Node accepts
 * one connection per listening socket per turn of its event loop (libuv since libuv/libuv#3696), and a
 * loop busy with requests turns every 50–100 ms: with a single socket, the gateway under overload let new
 * clients in at about a dozen a second, and a burst of them waited seconds in the accept queue. The
 * kernel spreads new connections over the sockets, and each turn accepts one from each. Linux only
 * (elsewhere `reusePort` does not spread connections, or is refused).
 */
const ACCEPT_SOCKETS = process.platform === "linux" ? 16 : 1;

/**
 * Listens with the app on `port` (0: a free one), with the limits against slow and oversized clients
 * (`httpSettings(env).server`; Node's defaults without them); `onListening` is told its port.
 */
export function listen(
  opts: {
    // `any`: any app's environment.
    app: Hono<any>;
    port: number;
    hostname?: string | undefined;
    limits?: ServerLimits | undefined;
  },
  onListening: (port: number) => void = () => {},
): Server {
  const { app, port, hostname, limits } = opts;
  // As @hono/node-server's createAdaptorServer builds it, which takes no error handler.
  const serveRequest = getRequestListener(app.fetch, {
    ...(hostname === undefined ? {} : { hostname }),
    errorHandler: answerAdapterError,
  });
  const server = createServer(
    {
      // Node's own 400 for a missing Host has an empty body: the listener below answers it instead.
      requireHostHeader: false,
      ...(limits
        ? {
            // A head over this gets Node's 431 and a closed connection (answerClientError).
            maxHeaderSize: limits.maxHeaderBytes,
            // Both answer 408 and close. Node starts the head's clock at the request's first byte, not
            // when a kept-alive connection goes idle, so it may be far shorter than the keep-alive timeout.
            headersTimeout: limits.headersTimeoutMs,
            requestTimeout: limits.requestTimeoutMs,
            // How often those two are checked (Node's default is 30 s).
            connectionsCheckingInterval: Math.min(1000, limits.headersTimeoutMs),
          }
        : {}),
    },
    (req, res) => {
      // RFC 9112 §3.2: an HTTP/1.1 request without Host is a 400, as Node's check has it (an empty Host
      // is not missing). On a hostname, the adapter would otherwise make the URL of that name and serve it.
      if (req.httpVersionMajor === 1 && req.httpVersionMinor === 1 && req.headers.host === undefined)
        refuse(res, 400, "an HTTP/1.1 request must have a Host header");
      else serveRequest(req, res);
    },
  );
  const reusePort = ACCEPT_SOCKETS > 1;
  const acceptors: Listener[] = [];
  const bindAll = () =>
    server.listen({ port, host: hostname, backlog: LISTEN_BACKLOG, reusePort }, () => {
      const bound = (server.address() as AddressInfo).port;
      let listening = 1;
      for (let i = 1; i < ACCEPT_SOCKETS; i++) {
        // Without Nagle's algorithm, as the HTTP server's own socket accepts.
        const acceptor = createListener({ noDelay: true }, (socket) => server.emit("connection", socket));
        acceptor.on("error", (err) => server.emit("error", err));
        acceptors.push(acceptor);
        acceptor.listen({ port: bound, host: hostname, backlog: LISTEN_BACKLOG, reusePort }, () => {
          if (++listening === ACCEPT_SOCKETS) onListening(bound);
        });
      }
      if (ACCEPT_SOCKETS === 1) onListening(bound);
    });
  if (reusePort && port !== 0) {
    // SO_REUSEPORT would also let another process of the same user (an instance left running) bind the port
    // and take part of its connections unnoticed: the port is first bound alone, which fails with
    // EADDRINUSE while anything holds it, as a plain listen does.
    const probe = createListener();
    probe.once("error", (err) => server.emit("error", err));
    probe.listen({ port, host: hostname }, () => probe.close(bindAll));
  } else bindAll();
  // Closing the server stops every socket of the port from accepting, and calls back once every
  // connection is closed. Node counts a connection on the listener that accepted it, so the server's own
  // close would call back once only its sixteenth had closed: it waits for each listener's too.
  const close = server.close.bind(server);
  server.close = (callback?: (err?: Error) => void) => {
    const drained = acceptors.map(
      (acceptor) => new Promise<void>((resolve) => acceptor.close(() => resolve())),
    );
    return close((err) => {
      void Promise.all(drained).then(() => callback?.(err));
    });
  };
  server.on("clientError", answerClientError);
  // Node answers `Expect: 100-continue` itself before the app has seen the request, asking for a body the
  // app may refuse unread: the app's body reader sends it instead, when it starts reading (`deferContinue`).
  server.on("checkContinue", (req: IncomingMessage, res: ServerResponse) => {
    deferContinue(req);
    server.emit("request", req, res);
  });
  // Any other expectation: Node's default is an empty 417 on a connection kept open, its body unread.
  server.on("checkExpectation", (_req: IncomingMessage, res: ServerResponse) =>
    refuse(res, 417, "the request's Expect cannot be met: only 100-continue is supported"),
  );
  server.on("connection", (socket: Socket) => {
    socket.destroySoon = () => lingeringClose(socket);
  });
  // Longer than any client's idle timeout (undici's is 4 s, load balancers' 60 s): a client must never
  // send on a connection the server is closing at that very moment.
  server.keepAliveTimeout = 65_000;
  if (!limits) server.headersTimeout = 66_000;
  return server;
}

/**
 * How long, and how much, of what a client still sends once the last answer on its connection is
 * written is read and dropped before the socket is closed (nginx's `lingering_time` and
 * `lingering_timeout`; and a byte count, since a client on a fast link sends far more in that time).
 */
const LINGER_MS = 5000;
const LINGER_IDLE_MS = 1000;
const LINGER_BYTES = 64 * 1024 * 1024;

const lingering = new WeakSet<Socket>();

/**
 * Closes a connection after its last answer (`Connection: close`) without losing that answer: Node's
 * http calls it as `socket.destroySoon()` once the answer is written, and `answerClientError` after
 * Node's own refusals (431, 408, 400). Node's `destroySoon` closes the socket as soon as the answer is
 * flushed, and closing a socket with unread bytes has the kernel reset the connection: a client still
 * uploading a refused body (a 413 past the drain bound) got EPIPE or ECONNRESET, and its kernel dropped
 * the 413 it had not read yet. Here the socket is half-closed after the answer, and what the client
 * still sends is read and dropped until it closes its side, for `LINGER_MS` at most (`LINGER_IDLE_MS`
 * without a byte), or up to `LINGER_BYTES`: a lingering close, as nginx's and Apache's.
 */
function lingeringClose(socket: Socket): void {
  if (socket.destroyed || lingering.has(socket)) return;
  lingering.add(socket);
  const close = () => socket.destroy();
  let answered = false;
  let idle: NodeJS.Timeout | undefined;
  let dropped = 0;
  // A 'data' listener takes the socket back from the HTTP parser (Node's http wraps `on` to do so); the
  // server's own then goes, so that nothing the client sends after the answer is parsed as a request.
  const drop = (chunk: Buffer) => {
    dropped += chunk.length;
    if (dropped > LINGER_BYTES) close();
    else idle?.refresh();
  };
  socket.on("data", drop);
  for (const listener of socket.listeners("data"))
    if (listener !== drop) socket.off("data", listener as (chunk: Buffer) => void);
  socket.once("end", () => answered && close());
  // The clocks start once the answer is flushed: a client reading a large answer slowly is not cut off.
  socket.end(() => {
    answered = true;
    if (socket.readableEnded) return close();
    idle = setTimeout(close, LINGER_IDLE_MS);
    const deadline = setTimeout(close, LINGER_MS);
    socket.once("close", () => {
      clearTimeout(idle);
      clearTimeout(deadline);
    });
  });
  socket.resume();
}

const CLIENT_ERRORS: Record<string, [number, string, string]> = {
  HPE_HEADER_OVERFLOW: [431, "Request Header Fields Too Large", "request head is too large"],
  ERR_HTTP_REQUEST_TIMEOUT: [408, "Request Timeout", "request was not received in time"],
};

/**
 * What Node answers to a request it could not parse (or that came too slowly), as JSON like every other
 * error, with a request id of its own (nothing of the head can be trusted, the client's id included),
 * then closes the connection, lingering as after a 413: its bytes can no longer be trusted to
 * frame the next request, and a client still sending them (a large head, a body) must read the answer
 * before the close. Node emits the error again for each further chunk the failed parser is given (a
 * 408 leaves the parser on and the connection half-open for as long as the client sends), until the
 * lingering close takes the socket from it.
 */
function answerClientError(err: Error & { code?: string }, socket: Duplex): void {
  if (lingering.has(socket as Socket)) return;
  if (err.code === "ECONNRESET" || !socket.writable) {
    socket.destroy();
    return;
  }
  const [status, reason, message] = CLIENT_ERRORS[err.code ?? ""] ?? [
    400,
    "Bad Request",
    "malformed request",
  ];
  const requestId = randomUUID();
  const body = JSON.stringify({ error: message, requestId });
  socket.write(
    `HTTP/1.1 ${status} ${reason}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nX-Request-Id: ${requestId}\r\nConnection: close\r\n\r\n${body}`,
  );
  lingeringClose(socket as Socket);
}

/**
 * What the adapter answers to a request Node parsed but it cannot make a URL of (an invalid Host such as
 * `a/b`, `OPTIONS *`, a backslash in the path), before any middleware could give it a request id: a 400
 * as JSON like every other error, with an id of its own, and the connection closed, as Node's own
 * refusals are (its default was an empty text/plain 400 on a connection kept open). Anything else that
 * reaches it escaped the app's error handler: a 500.
 */
function answerAdapterError(err: unknown): Response {
  const requestId = randomUUID();
  const malformed = err instanceof RequestError;
  return new Response(
    JSON.stringify({ error: malformed ? "malformed request" : "internal error", requestId }),
    {
      status: malformed ? 400 : 500,
      headers: {
        "content-type": "application/json",
        [REQUEST_ID_HEADER]: requestId,
        ...(malformed ? { connection: "close" } : {}),
      },
    },
  );
}

/**
 * A request refused before the app sees it (no Host, an expectation that cannot be met): as JSON like
 * every other error, with a request id of its own, and the connection closed (lingering, as after a 413,
 * so that a body the client still sends does not reset it).
 */
function refuse(res: ServerResponse, status: number, message: string): void {
  const requestId = randomUUID();
  const body = JSON.stringify({ error: message, requestId });
  res.writeHead(status, {
    "content-type": "application/json",
    "content-length": Buffer.byteLength(body),
    [REQUEST_ID_HEADER]: requestId,
    connection: "close",
  });
  res.end(body);
}

// What `stop()` is given of the deadline: the rest, less this, is for logging and exiting.
const EXIT_MARGIN_MS = 300;

/**
 * Serves the app until SIGTERM or SIGINT, then shuts down in order: stop accepting connections, let
 * requests in flight finish for up to 2 s (`draining` answers those that would take longer; past it their
 * connections are closed), `stop()` the rest (the consumer finishes the event in hand and commits),
 * and exit. `stop` gets a signal that aborts shortly before the deadline, for every call it waits for;
 * a shutdown that hangs all the same is cut short at the deadline with exit code 1. When `failed`
 * settles (a part of the process that must not die did), the process shuts down the same way and exits
 * with code 1, so that its supervisor restarts it. With `listenAfter`, the port opens only once it
 * resolves (a signal meanwhile is a shutdown like any other, and the port never opens).
 */
export function serveUntilSignal(opts: {
  // `any`: any app's environment.
  app: Hono<any>;
  port: number;
  /** The address to listen on: loopback unless the process must be reached from elsewhere. */
  hostname?: string;
  logger: Logger;
  /**
   * Called as shutdown begins, before requests in flight are waited for: answer long-held ones now.
   * `deadline` aborts shortly before the connections still open are closed: answer the rest then, or
   * they are cut off without one.
   */
  draining?: (deadline: AbortSignal) => void;
  /** Stops the rest of the process; `deadline` aborts shortly before the process is made to exit. */
  stop: (deadline: AbortSignal) => Promise<void>;
  /** Settles when a part of the process failed for good: it then shuts down and exits with code 1. */
  failed?: Promise<unknown>;
  /** Against slow and oversized clients (`httpSettings(env).server`); Node's defaults otherwise. */
  limits?: ServerLimits | undefined;
  /**
   * Listens only once this resolves (the process's warm-up): until then a load balancer's connections are
   * refused, which takes the instance out of rotation at once, instead of being served cold.
   */
  listenAfter?: Promise<unknown>;
}): void {
  const { app, port, hostname, logger, stop, limits, draining, failed, listenAfter } = opts;
  // A keep-alive client that keeps sending would hold its connection, and so the server, open: once
  // shutting down, every response, including those in flight, closes its connection.
  let shuttingDown = false;
  const inFlight = new Set<ServerResponse>();
  let server: Server | undefined;
  const serve = () => {
    if (shuttingDown) return;
    server = listen({ app, port, hostname, limits }, (bound) =>
      logger.info({ address: hostname, port: bound }, "listening"),
    );
    server.on("request", (_req: IncomingMessage, res: ServerResponse) => {
      if (shuttingDown) {
        res.setHeader("connection", "close");
        return;
      }
      inFlight.add(res);
      res.once("close", () => inFlight.delete(res));
    });
  };

  // Every exit writes first the counts of the repeated lines still in their window: the lines that came
  // as the process failed or stopped would otherwise be reported once, however often they came.
  const exit = (code: number): never => {
    flushRepeats();
    process.exit(code);
  };
  const shutdown = async (signal: string, exitCode = 0) => {
    if (shuttingDown) return;
    shuttingDown = true;
    for (const res of inFlight) if (!res.headersSent) res.setHeader("connection", "close");
    const started = performance.now();
    logger.info({ signal }, "shutting down");
    const answerNow = new AbortController();
    setTimeout(() => answerNow.abort(), HTTP_DRAIN_MS - ANSWER_MARGIN_MS).unref();
    draining?.(answerNow.signal);
    setTimeout(() => {
      logger.error("shutdown did not finish in time; exiting");
      exit(1);
    }, SHUTDOWN_DEADLINE_MS).unref();
    try {
      await new Promise<void>((resolve) => {
        if (!server) return resolve();
        const listening = server;
        listening.close(() => resolve());
        listening.closeIdleConnections();
        // A request that takes longer than this, `draining` having not answered it, is cut off.
        setTimeout(() => {
          listening.closeAllConnections();
          resolve();
        }, HTTP_DRAIN_MS).unref();
      });
      const left = SHUTDOWN_DEADLINE_MS - EXIT_MARGIN_MS - (performance.now() - started);
      await stop(AbortSignal.timeout(Math.max(0, Math.round(left))));
      logger.info({ ms: Math.round(performance.now() - started) }, "stopped");
      exit(exitCode);
    } catch (err) {
      logger.error({ err }, "shutdown failed");
      exit(1);
    }
  };
  const onFailure = (err: unknown) => {
    logger.fatal({ err }, "a part of the process failed: exiting to be restarted");
    void shutdown("failure", 1);
  };
  void failed?.then(onFailure, onFailure);
  process.once("SIGTERM", () => void shutdown("SIGTERM"));
  process.once("SIGINT", () => void shutdown("SIGINT"));
  process.on("uncaughtException", (err) => {
    logger.fatal({ err }, "uncaught exception");
    exit(1);
  });
  if (listenAfter) listenAfter.then(serve, onFailure);
  else serve();
}
