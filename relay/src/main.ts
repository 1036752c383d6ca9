import { serve } from "@hono/node-server";
import { parseRelayEnv } from "./env.ts";
import { createRelayService } from "./service.ts";

// Kubernetes and our own tooling allow 5 s between SIGTERM and SIGKILL.
const SHUTDOWN_DEADLINE_MS = 4500;

async function run() {
  const env = parseRelayEnv(process.env);
  const relay = createRelayService(env);
  const { logger } = relay;
  const server = serve({ fetch: relay.app.fetch, port: env.PORT }, (info) =>
    logger.info({ port: info.port }, "listening"),
  );
  relay.start();

  let shuttingDown = false;
  const shutdown = async (signal: NodeJS.Signals) => {
    if (shuttingDown) return;
    shuttingDown = true;
    logger.info({ signal }, "shutting down");
    setTimeout(() => {
      logger.error("shutdown did not finish in time; exiting");
      process.exit(1);
    }, SHUTDOWN_DEADLINE_MS).unref();
    try {
      server.close();
      if ("closeAllConnections" in server) server.closeAllConnections();
      await relay.stop();
      logger.info("stopped");
      process.exit(0);
    } catch (err) {
      logger.error({ err }, "shutdown failed");
      process.exit(1);
    }
  };
  process.once("SIGTERM", (s) => void shutdown(s));
  process.once("SIGINT", (s) => void shutdown(s));
}

run().catch((err) => {
  console.error(err);
  process.exit(1);
});
