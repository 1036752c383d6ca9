import { type BaseAppOptions, createBaseApp } from "@saga/http";
import { type Database, databaseFailure } from "@saga/messaging";
import type { Logger, Metrics } from "@saga/observability";
import type pg from "pg";
import type { SagaBacklog } from "./backpressure.ts";
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
  admission?: BaseAppOptions["admission"];
  /** Backpressure from the saga on new orders; without it every valid order is accepted. */
  backlog?: Pick<SagaBacklog, "admitNewOrders" | "reportHeadroom">;
  /** The gateway's internal credential; undefined (development mode) answers anyone. */
  internalSecret?: string | undefined;
};

/** The order-service's HTTP API; no port is opened here. */
export function createApp({
  db,
  pool,
  waits,
  logger,
  metrics,
  saga,
  ready,
  admission,
  backlog,
  internalSecret,
}: AppDeps) {
  const app = createBaseApp({
    logger,
    metrics,
    ready,
    // A long poll is a read until its route holds it, and moves to the `wait` lane then (routes/orders.ts).
    admission,
    mapError: databaseFailure,
    internalSecret,
  });
  if (backlog) {
    app.use(backlog.reportHeadroom);
    app.post("/orders", backlog.admitNewOrders);
  }
  registerOrderRoutes(app, { db, pool, waits, logger, saga });
  return app;
}
