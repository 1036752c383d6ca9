import { type BaseAppOptions, createBaseApp, requestLane } from "@saga/http";
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
  admission?: BaseAppOptions["admission"];
};

/** The gateway's HTTP API; no port is opened here. */
export function createApp({ logger, metrics, users, orders, timeoutMs, maxBodyBytes, admission }: AppDeps) {
  const app = createBaseApp({
    logger,
    metrics,
    maxBodyBytes,
    // Lanes per upstream (`orders:write`): a flood of orders cannot starve the users, nor the reverse.
    admission: admission && {
      ...admission,
      laneOf: (c) => {
        const lane = requestLane(c);
        const upstream = c.req.path.split("/")[1];
        return lane && { kind: lane.kind, key: `${upstream === "orders" ? "orders" : "users"}:${lane.kind}` };
      },
    },
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
