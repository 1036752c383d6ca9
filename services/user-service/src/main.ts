import { httpSettings, serveUntilSignal } from "@saga/http";
import { flushRepeats } from "@saga/observability";
import { parseUserServiceEnv } from "./env.ts";
import { createUserService } from "./service.ts";

async function run() {
  const env = parseUserServiceEnv(process.env);
  const service = await createUserService(env);
  serveUntilSignal({
    app: service.app,
    port: env.PORT,
    hostname: env.HOST,
    logger: service.runtime.logger,
    stop: service.stop,
    limits: httpSettings(env).server,
  });
  await service.start();
}

run().catch((err) => {
  console.error(err);
  // The counts of repeated lines still in their window (a start that failed on a database refusing it).
  flushRepeats();
  process.exit(1);
});
