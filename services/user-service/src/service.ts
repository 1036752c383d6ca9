import { userSchema } from "@saga/db";
import { httpSettings } from "@saga/http";
import { createServiceRuntime } from "@saga/messaging";
import type { Logger } from "@saga/observability";
import { createApp } from "./app.ts";
import { orderEventConsumer } from "./consumers/order-events.ts";
import type { applyReservationBatch } from "./domain/apply-reservation-batch.ts";
import type { Env } from "./env.ts";
import { createReservationMetrics } from "./metrics.ts";

export type UserServiceOptions = {
  logger?: Logger;
  /** The consumer's ledger statement (`applyReservationBatch`); a test injects a failing one. */
  applyReservations?: typeof applyReservationBatch;
};

/**
 * One user-service instance: migrates its database and builds the app; `start()` joins the consumer
 * group. Tests run several of these in one process, `main.ts` runs one behind a port.
 */
export async function createUserService(env: Env, options: UserServiceOptions = {}) {
  const runtime = await createServiceRuntime({
    service: "user-service",
    database: "user",
    schema: userSchema,
    env,
    logger: options.logger,
  });
  const metrics = { ...runtime.messagingMetrics, ...createReservationMetrics(runtime.metrics.registry) };
  const app = createApp({
    db: runtime.db,
    logger: runtime.logger,
    metrics: runtime.metrics,
    ready: runtime.ready,
    // Its refusals are marked, so that the gateway's lane backs off (SHED_HEADER).
    admission: { ...httpSettings(env).admission, markShed: true },
    internalSecret: env.INTERNAL_SECRET,
  });
  return {
    app,
    runtime,
    start: () => runtime.startConsuming(orderEventConsumer(metrics, options.applyReservations)),
    stop: runtime.stop,
  };
}

export type UserService = Awaited<ReturnType<typeof createUserService>>;
export { applyReservationBatch } from "./domain/apply-reservation-batch.ts";
export { type Env, parseUserServiceEnv } from "./env.ts";
