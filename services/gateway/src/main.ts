import { serve } from "@hono/node-server";
import { httpSettings, serveUntilSignal } from "@saga/http";
import { flushRepeats } from "@saga/observability";
import { createGateway, parseGatewayEnv } from "./gateway.ts";

async function run() {
  const env = parseGatewayEnv(process.env);
  const gateway = createGateway(env);
  await gateway.start();
  gateway.logger.info({ users: gateway.users.instances(), orders: gateway.orders.instances() }, "upstreams");
  serve({ fetch: gateway.metricsApp.fetch, port: env.METRICS_PORT, hostname: env.METRICS_HOST }, (info) =>
    gateway.logger.info({ address: info.address, port: info.port }, "metrics listening"),
  );
  serveUntilSignal({
    app: gateway.app,
    port: env.PORT,
    hostname: env.HOST,
    logger: gateway.logger,
    // Held reads, and requests a slow upstream keeps past the drain, are answered rather than cut off.
    draining: gateway.draining,
    stop: gateway.stop,
    limits: httpSettings(env).server,
  });
}

run().catch((err) => {
  console.error(err);
  // The counts of repeated lines still in their window (a start that failed on a database refusing it).
  flushRepeats();
  process.exit(1);
});
