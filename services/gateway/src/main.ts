import type { IncomingMessage, Server, ServerResponse } from "node:http";
import { serve } from "@hono/node-server";
import { createGateway, parseGatewayEnv } from "./gateway.ts";

// Our tests and Kubernetes give a process 5 s between SIGTERM and SIGKILL.
const SHUTDOWN_DEADLINE_MS = 4500;
const HTTP_DRAIN_MS = 2000;

async function run() {
  const env = parseGatewayEnv(process.env);
  const gateway = createGateway(env);
  const { logger } = gateway;
  await gateway.start();
  const server = serve({ fetch: gateway.app.fetch, port: env.PORT }, (info) =>
    logger.info(
      { port: info.port, users: gateway.users.instances(), orders: gateway.orders.instances() },
      "listening",
    ),
  ) as Server;

  let stopping = false;
  // A keep-alive client would hold its connection, and so the server, open: once stopping, every
  // response closes its connection.
  server.on("request", (_req: IncomingMessage, res: ServerResponse) => {
    if (stopping) res.setHeader("connection", "close");
  });
  const shutdown = (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, "shutting down");
    setTimeout(() => {
      logger.error("shutdown did not finish in time; exiting");
      process.exit(1);
    }, SHUTDOWN_DEADLINE_MS).unref();
    server.close(async () => {
      await gateway.stop();
      logger.info("stopped");
      process.exit(0);
    });
    server.closeIdleConnections();
    setTimeout(() => server.closeAllConnections(), HTTP_DRAIN_MS).unref();
  };
  process.once("SIGTERM", () => shutdown("SIGTERM"));
  process.once("SIGINT", () => shutdown("SIGINT"));
}

run().catch((err) => {
  console.error(err);
  process.exit(1);
});
