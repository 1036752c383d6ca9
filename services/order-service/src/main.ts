import { httpSettings, serveUntilSignal } from "@saga/http";
import { parseOrderServiceEnv } from "./env.ts";
import { createOrderService } from "./service.ts";

async function run() {
  const env = parseOrderServiceEnv(process.env);
  const service = await createOrderService(env);
  serveUntilSignal({
    app: service.app,
    port: env.PORT,
    hostname: env.HOST,
    logger: service.runtime.logger,
    // Requests held by `Prefer: wait` are answered now rather than cut off by the drain.
    draining: () => service.waits.release(),
    stop: service.stop,
    limits: httpSettings(env).server,
  });
  await service.start();
}

run().catch((err) => {
  console.error(err);
  process.exit(1);
});
