import { createBaseApp } from "@saga/http";
import { type Database, unavailableWhenRetriable } from "@saga/messaging";
import type { Logger, Metrics } from "@saga/observability";
import { registerUserRoutes } from "./routes/users.ts";

export type AppDeps = { db: Database; logger: Logger; metrics: Metrics; ready: () => Promise<void> };

/** The user-service's HTTP API; no port is opened here. */
export function createApp({ db, logger, metrics, ready }: AppDeps) {
  const app = createBaseApp({ logger, metrics, ready, mapError: unavailableWhenRetriable });
  registerUserRoutes(app, { db, logger });
  return app;
}
