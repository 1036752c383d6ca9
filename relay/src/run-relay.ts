import { serveUntilSignal } from "@saga/http";
import type { Env } from "./env.ts";
import { createRelayService, type RelayDependencies, type RelayService } from "./service.ts";

/**
 * The relay process: serves /health, /ready and /metrics, publishes until SIGTERM, and exits non-zero
 * when a relay loop crashed (its outbox already given up), so that its supervisor restarts it.
 */
export function runRelay(env: Env, deps: RelayDependencies = {}): RelayService {
  const relay = createRelayService(env, deps);
  serveUntilSignal({
    app: relay.app,
    port: env.PORT,
    hostname: env.HOST,
    logger: relay.logger,
    stop: (deadline) => relay.stop(deadline),
    failed: relay.failed,
  });
  relay.start();
  return relay;
}
