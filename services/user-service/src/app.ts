import { type BaseAppOptions, createBaseApp } from "@saga/http";
import { type Database, databaseFailure } from "@saga/messaging";
import type { Logger, Metrics } from "@saga/observability";
import { registerUserRoutes } from "./routes/users.ts";

export type AppDeps = {
  db: Database;
  logger: Logger;
  metrics: Metrics;
  ready: () => Promise<void>;
  admission?: BaseAppOptions["admission"];
  /** The gateway's internal credential; undefined (development mode) answers anyone. */
  internalSecret?: string | undefined;
};

/** The user-service's HTTP API; no port is opened here. */
export function createApp({ db, logger, metrics, ready, admission, internalSecret }: AppDeps) {
  const app = createBaseApp({
    logger,
    metrics,
    ready,
    admission,
    mapError: databaseFailure,
    internalSecret,
  });
  registerUserRoutes(app, { db, logger });
  return app;
}
