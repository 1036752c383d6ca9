import { orderSchema } from "@saga/db";
import { createServiceRuntime } from "@saga/messaging";
import type { Logger } from "@saga/observability";
import { createApp } from "./app.ts";
import { creditEventHandlers } from "./consumers/credit-events.ts";
import type { Env } from "./env.ts";
import { createSagaMetrics } from "./metrics.ts";

/**
 * The order-service: migrates its database and builds the app; `start()` joins the consumer group.
 * Tests run it in process, `main.ts` runs it behind a port.
 */
export async function createOrderService(env: Env, options: { logger?: Logger } = {}) {
  const runtime = await createServiceRuntime({
    service: "order-service",
    database: "order",
    schema: orderSchema,
    env,
    logger: options.logger,
  });
  const saga = createSagaMetrics(runtime.metrics.registry);
  const app = createApp({
    db: runtime.db,
    logger: runtime.logger,
    metrics: runtime.metrics,
    saga,
    ready: runtime.ready,
    internalSecret: env.INTERNAL_SECRET,
  });
  return {
    app,
    runtime,
    start: () => runtime.startConsuming(creditEventHandlers({ messaging: runtime.messagingMetrics, saga })),
    stop: runtime.stop,
  };
}

export type OrderService = Awaited<ReturnType<typeof createOrderService>>;
export { type Env, parseOrderServiceEnv } from "./env.ts";
