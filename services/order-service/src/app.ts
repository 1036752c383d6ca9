import { type BaseAppOptions, createBaseApp } from "@saga/http";
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
  admission?: BaseAppOptions["admission"];
};

/** The order-service's HTTP API; no port is opened here. */
export function createApp({ db, logger, metrics, saga, ready, admission }: AppDeps) {
  const app = createBaseApp({ logger, metrics, ready, admission, mapError: unavailableWhenRetriable });
  registerOrderRoutes(app, { db, logger, saga });
  return app;
}
