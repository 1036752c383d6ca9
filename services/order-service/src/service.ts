import { orderSchema } from "@saga/db";
import { createServiceRuntime } from "@saga/messaging";
import type { Logger } from "@saga/observability";
import { createApp } from "./app.ts";
import { creditEventHandlers } from "./consumers/credit-events.ts";
import { readOrders } from "./domain/order-hot-path.ts";
import type { Env } from "./env.ts";
import { createSagaMetrics } from "./metrics.ts";
import { createOrderWaits } from "./order-waits.ts";

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
  const waits = createOrderWaits({
    databaseUrl: env.DATABASE_URL,
    applicationName: `order-service/${env.INSTANCE_ID}`,
    readOrders: (ids) => readOrders(runtime.db.pool, ids),
    logger: runtime.logger,
  });
  await waits.start();
  const app = createApp({
    db: runtime.db,
    pool: runtime.db.pool,
    waits,
    logger: runtime.logger,
    metrics: runtime.metrics,
    saga,
    ready: runtime.ready,
  });
  return {
    app,
    runtime,
    waits,
    start: () => runtime.startConsuming(creditEventHandlers({ messaging: runtime.messagingMetrics, saga })),
    stop: async () => {
      await waits.stop();
      await runtime.stop();
    },
  };
}

export type OrderService = Awaited<ReturnType<typeof createOrderService>>;
export { type Env, parseOrderServiceEnv } from "./env.ts";
