import { createBaseApp } from "@saga/http";
import { type Database, unavailableWhenRetriable } from "@saga/messaging";
import type { Logger, Metrics } from "@saga/observability";
import type pg from "pg";
import type { SagaMetrics } from "./metrics.ts";
import type { OrderWaits } from "./order-waits.ts";
import { registerOrderRoutes } from "./routes/orders.ts";

export type AppDeps = {
  db: Database;
  /** The same database's pool, for the hot path's hand-written statements. */
  pool: pg.Pool;
  waits: OrderWaits;
  logger: Logger;
  metrics: Metrics;
  saga: SagaMetrics;
  ready: () => Promise<void>;
};

/** The order-service's HTTP API; no port is opened here. */
export function createApp({ db, pool, waits, logger, metrics, saga, ready }: AppDeps) {
  const app = createBaseApp({ logger, metrics, ready, mapError: unavailableWhenRetriable });
  registerOrderRoutes(app, { db, pool, waits, logger, saga });
  return app;
}
