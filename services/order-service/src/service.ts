import { orderSchema } from "@saga/db";
import { httpSettings } from "@saga/http";
import { createServiceRuntime, sessionTimeouts } from "@saga/messaging";
import type { Logger } from "@saga/observability";
import { createApp } from "./app.ts";
import { createSagaBacklog } from "./backpressure.ts";
import { creditEventConsumer } from "./consumers/credit-events.ts";
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
  const backlog = createSagaBacklog({
    db: runtime.db.db,
    limit: env.SAGA_BACKLOG_LIMIT,
    minLimit: env.SAGA_BACKLOG_MIN,
    targetMs: env.SAGA_TARGET_MS,
    recountMs: env.SAGA_BACKLOG_RECOUNT_MS,
    retryAfterS: env.RETRY_AFTER_S,
    logger: runtime.logger,
    registry: runtime.metrics.registry,
  });
  const saga = createSagaMetrics(runtime.metrics.registry, backlog.finished);
  const waits = createOrderWaits({
    databaseUrl: env.DATABASE_URL,
    applicationName: `order-service/${env.INSTANCE_ID}`,
    timeouts: sessionTimeouts(env),
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
    admission: httpSettings(env).admission,
    backlog,
    internalSecret: env.INTERNAL_SECRET,
  });
  return {
    app,
    runtime,
    backlog,
    waits,
    start: async () => {
      // Both at once: the consumer is wanted (and /ready waits for it) from the first tick.
      await Promise.all([
        runtime.startConsuming(creditEventConsumer({ messaging: runtime.messagingMetrics, saga })),
        backlog.start(),
      ]);
    },
    /** Everything `runtime.stop` says, after the held requests are answered; cut short when `signal` aborts. */
    stop: async (signal?: AbortSignal) => {
      backlog.stop();
      await waits.stop();
      await runtime.stop(signal);
    },
  };
}

export type OrderService = Awaited<ReturnType<typeof createOrderService>>;
export { type Env, parseOrderServiceEnv } from "./env.ts";
