import { createBaseApp } from "@saga/http";
import { type Database, unavailableWhenRetriable } from "@saga/messaging";
import type { Logger, Metrics } from "@saga/observability";
import type { SagaMetrics } from "./metrics.ts";
import { registerOrderRoutes } from "./routes/orders.ts";

export type AppDeps = {
  db: Database;
  logger: Logger;
  metrics: Metrics;
  saga: SagaMetrics;
  ready: () => Promise<void>;
  /** The gateway's internal credential; undefined (development mode) answers anyone. */
  internalSecret?: string | undefined;
};

/** The order-service's HTTP API; no port is opened here. */
export function createApp({ db, logger, metrics, saga, ready, internalSecret }: AppDeps) {
  const app = createBaseApp({ logger, metrics, ready, mapError: unavailableWhenRetriable, internalSecret });
  registerOrderRoutes(app, { db, logger, saga });
  return app;
}
