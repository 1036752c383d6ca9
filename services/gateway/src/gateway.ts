import { httpSettings } from "@saga/http";
import { createLogger, createMetrics } from "@saga/observability";
import { createApp } from "./app.ts";
import type { Env } from "./env.ts";
import { createGatewayMetrics } from "./metrics.ts";
import { createUpstream } from "./upstream.ts";

export { type Env, parseGatewayEnv } from "./env.ts";

/**
 * The gateway's parts, wired from its environment: the app, and the upstreams whose health checks
 * `start()` begins and `stop()` ends.
 */
export function createGateway(env: Env) {
  const logger = createLogger("gateway", env.LOG_LEVEL);
  const metrics = createMetrics("gateway", env.INSTANCE_ID);
  const gatewayMetrics = createGatewayMetrics(metrics.registry);
  const common = {
    connectTimeoutMs: env.CONNECT_TIMEOUT_MS,
    connections: env.UPSTREAM_CONNECTIONS,
    heldConnections: env.UPSTREAM_HELD_CONNECTIONS,
    healthPath: env.HEALTH_PATH,
    healthIntervalMs: env.HEALTH_INTERVAL_MS,
    healthTimeoutMs: env.HEALTH_TIMEOUT_MS,
    stalledAfterMs: env.HEALTH_STALLED_AFTER_MS,
    unhealthyThreshold: env.UNHEALTHY_THRESHOLD,
    consecutive5xx: env.CONSECUTIVE_5XX,
    metrics: gatewayMetrics,
    logger,
  };
  const users = createUpstream({ name: "user-service", origins: env.USER_SERVICE_URLS, ...common });
  const orders = createUpstream({ name: "order-service", origins: [env.ORDER_SERVICE_URL], ...common });
  const app = createApp({
    logger,
    metrics,
    users,
    orders,
    timeoutMs: env.UPSTREAM_TIMEOUT_MS,
    maxBodyBytes: env.MAX_BODY_BYTES,
    admission: httpSettings(env).admission,
  });
  return {
    app,
    logger,
    metrics,
    users,
    orders,
    /** Checks every instance once, then keeps checking in the background. */
    start: async () => {
      await Promise.all([users.start(), orders.start()]);
    },
    stop: async () => {
      await Promise.all([users.close(), orders.close()]);
    },
  };
}

export type Gateway = ReturnType<typeof createGateway>;
