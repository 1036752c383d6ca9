import type { IncomingMessage, Server, ServerResponse } from "node:http";
import { serve } from "@hono/node-server";
import type { Logger } from "@saga/observability";
import type { Hono } from "hono";

// Kubernetes and our own tests give a process 5 s between SIGTERM and SIGKILL.
const SHUTDOWN_DEADLINE_MS = 4500;
const HTTP_DRAIN_MS = 2000;

/**
 * Serves the app until SIGTERM or SIGINT, then shuts down in order: stop accepting connections, let
 * requests in flight finish, `stop()` the rest (the consumer finishes the event in hand and commits),
 * and exit. A shutdown that hangs is cut short before the deadline with exit code 1.
 */
export function serveUntilSignal(opts: {
  // biome-ignore lint/suspicious/noExplicitAny: any app's environment.
  app: Hono<any>;
  port: number;
  /** The address to listen on: loopback unless the process must be reached from elsewhere. */
  hostname?: string;
  logger: Logger;
  stop: () => Promise<void>;
}): void {
  const { app, port, hostname, logger, stop } = opts;
  const server = serve({ fetch: app.fetch, port, hostname }, (info) =>
    logger.info({ address: info.address, port: info.port }, "listening"),
  ) as Server;
  // Longer than any client's idle timeout (undici's is 4 s, load balancers' 60 s): a client must never
  // send on a connection the server is closing at that very moment. Headers must outlast it.
  server.keepAliveTimeout = 65_000;
  server.headersTimeout = 66_000;

  // A keep-alive client that keeps sending would hold its connection, and so the server, open: once
  // shutting down, every response, including those in flight, closes its connection.
  let shuttingDown = false;
  const inFlight = new Set<ServerResponse>();
  server.on("request", (_req: IncomingMessage, res: ServerResponse) => {
    if (shuttingDown) {
      res.setHeader("connection", "close");
      return;
    }
    inFlight.add(res);
    res.once("close", () => inFlight.delete(res));
  });

  const shutdown = async (signal: string) => {
    if (shuttingDown) return;
    shuttingDown = true;
    for (const res of inFlight) if (!res.headersSent) res.setHeader("connection", "close");
    const started = performance.now();
    logger.info({ signal }, "shutting down");
    setTimeout(() => {
      logger.error("shutdown did not finish in time; exiting");
      process.exit(1);
    }, SHUTDOWN_DEADLINE_MS).unref();
    try {
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeIdleConnections();
        // A request that takes longer than this is cut off.
        setTimeout(() => {
          server.closeAllConnections();
          resolve();
        }, HTTP_DRAIN_MS).unref();
      });
      await stop();
      logger.info({ ms: Math.round(performance.now() - started) }, "stopped");
      process.exit(0);
    } catch (err) {
      logger.error({ err }, "shutdown failed");
      process.exit(1);
    }
  };
  process.once("SIGTERM", () => void shutdown("SIGTERM"));
  process.once("SIGINT", () => void shutdown("SIGINT"));
  process.on("uncaughtException", (err) => {
    logger.fatal({ err }, "uncaught exception");
    process.exit(1);
  });
}
