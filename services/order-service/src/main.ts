import { httpSettings, serveUntilSignal } from "@saga/http";
import { flushRepeats } from "@saga/observability";
import { parseOrderServiceEnv } from "./env.ts";
import { createOrderService } from "./service.ts";

async function run() {
  const env = parseOrderServiceEnv(process.env);
  const service = await createOrderService(env);
  const started = service.start();
  serveUntilSignal({
    app: service.app,
    port: env.PORT,
    hostname: env.HOST,
    logger: service.runtime.logger,
    // Requests held by `Prefer: wait` are answered now rather than cut off by the drain.
    draining: () => service.waits.release(),
    stop: service.stop,
    limits: httpSettings(env).server,
    // A gateway's connections are refused until the hot path is warm (the consumer may still be joining
    // its group): its health checks cannot put the instance back in rotation while it warms.
    listenAfter: service.warmUp(),
  });
  await started;
}

run().catch((err) => {
  console.error(err);
  // The counts of repeated lines still in their window (a start that failed on a database refusing it).
  flushRepeats();
  process.exit(1);
});
