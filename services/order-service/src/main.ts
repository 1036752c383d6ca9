import { serveUntilSignal } from "@saga/http";
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
    stop: service.stop,
  });
  await service.start();
}

run().catch((err) => {
  console.error(err);
  process.exit(1);
});
