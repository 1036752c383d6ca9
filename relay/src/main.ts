import { serveUntilSignal } from "@saga/http";
import { parseRelayEnv } from "./env.ts";
import { createRelayService } from "./service.ts";

async function run() {
  const env = parseRelayEnv(process.env);
  const relay = createRelayService(env);
  serveUntilSignal({
    app: relay.app,
    port: env.PORT,
    hostname: env.HOST,
    logger: relay.logger,
    stop: (deadline) => relay.stop(deadline),
    // A crashed relay loop has given its outbox up; the process exits non-zero to be restarted.
    failed: relay.failed,
  });
  relay.start();
}

run().catch((err) => {
  console.error(err);
  process.exit(1);
});
