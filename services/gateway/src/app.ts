import { createBaseApp } from "@saga/http";
import type { Logger, Metrics } from "@saga/observability";
import { registerProxyRoutes } from "./routes/proxy.ts";
import { registerUserOrdersRoute } from "./routes/user-orders.ts";
import type { Upstream } from "./upstream.ts";

export type AppDeps = {
  logger: Logger;
  metrics: Metrics;
  users: Upstream;
  orders: Upstream;
  /** Per request to an upstream; past it, a 504. */
  timeoutMs: number;
  maxBodyBytes: number;
};

/** The gateway's HTTP API; no port is opened here. */
export function createApp({ logger, metrics, users, orders, timeoutMs, maxBodyBytes }: AppDeps) {
  const app = createBaseApp({
    logger,
    metrics,
    maxBodyBytes,
    // Ready while every upstream has an instance in rotation: without one, every request would fail.
    ready: async () => {
      const missing = [users, orders].filter((u) => u.healthyCount() === 0).map((u) => u.name);
      if (missing.length > 0) throw new Error(`no healthy instance of ${missing.join(", ")}`);
    },
  });
  // Before the /users proxy routes, which would take this path too.
  registerUserOrdersRoute(app, { users, orders, timeoutMs });
  registerProxyRoutes(app, { prefix: "/users", upstream: users, timeoutMs });
  registerProxyRoutes(app, { prefix: "/orders", upstream: orders, timeoutMs });
  return app;
}
