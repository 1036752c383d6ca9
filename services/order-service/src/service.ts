import { INTERNAL_CREDENTIAL_HEADER } from "@saga/contracts";
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
import { createSagaDeadlines } from "./saga-deadlines.ts";
import { prewarmHotPath, prewarmHttpPath } from "./warm-up.ts";

// Requests of each kind the HTTP path's warm-up sends: enough for V8 to compile the path (its optimizing
// tier takes over after some hundreds of calls), a second or so of a start.
const WARM_UP_ROUNDS = 400;

/**
 * The order-service: migrates its database and builds the app; `start()` joins the consumer group.
 * Tests run it in process, `main.ts` runs it behind a port.
 */
export async function createOrderService(
  env: Env,
  options: {
    logger?: Logger;
    /** Run before `/ready` says yes, after the hot path's own warm-up (tests hold readiness with it). */
    warmUp?: () => Promise<void>;
  } = {},
) {
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
    warmUpMs: env.SAGA_BACKLOG_WARMUP_MS,
    warmUpMinMs: env.SAGA_BACKLOG_WARMUP_MIN_MS,
    warmUpAgeMs: env.SAGA_BACKLOG_WARMUP_AGE_MS,
    retryAfterS: env.RETRY_AFTER_S,
    logger: runtime.logger,
    registry: runtime.metrics.registry,
  });
  const saga = createSagaMetrics(runtime.metrics.registry, backlog);
  const deadlines = createSagaDeadlines({
    pool: runtime.db.pool,
    timeoutMs: env.SAGA_TIMEOUT,
    intervalMs: env.SAGA_SWEEP_INTERVAL_MS,
    batch: env.SAGA_SWEEP_BATCH,
    saga,
    logger: runtime.logger,
    registry: runtime.metrics.registry,
  });
  const waits = createOrderWaits({
    databaseUrl: env.DATABASE_URL,
    applicationName: `order-service/${env.INSTANCE_ID}`,
    timeouts: sessionTimeouts(env),
    readOrders: (ids) => readOrders(runtime.db.pool, ids),
    onSagasFinished: backlog.finishedAnywhere,
    logger: runtime.logger,
  });
  await waits.start();
  // Set once stop() begins: a start still running ends without an error and starts no sweep.
  let stopping = false;
  // Set by the warm-up until it is done; as with the consumer, a service never started is not held.
  let warming = false;
  let warm: Promise<void> | undefined;
  const app = createApp({
    db: runtime.db,
    pool: runtime.db.pool,
    waits,
    logger: runtime.logger,
    metrics: runtime.metrics,
    saga,
    ready: async () => {
      await runtime.ready();
      if (warming) throw new Error("warming up: the hot path's connections and statements are not ready yet");
    },
    // Its refusals are marked, so that the gateway's lane backs off (SHED_HEADER).
    admission: { ...httpSettings(env).admission, markShed: true },
    backlog,
    internalSecret: env.INTERNAL_SECRET,
  });
  const warmUp = () =>
    (warm ??= (async () => {
      warming = true;
      const started = performance.now();
      // A failed warm-up costs speed, not correctness: the service still becomes ready.
      await prewarmHotPath(runtime.db.pool).catch((err) =>
        runtime.logger.warn({ err }, "warming the hot path up failed; ready without it"),
      );
      await prewarmHttpPath(app, {
        headers: env.INTERNAL_SECRET ? { [INTERNAL_CREDENTIAL_HEADER]: env.INTERNAL_SECRET } : {},
        rounds: WARM_UP_ROUNDS,
        admitsOrders: (n) => backlog.headroom() > n,
      }).catch((err) => runtime.logger.warn({ err }, "warming the HTTP path up failed; ready without it"));
      await options.warmUp?.();
      warming = false;
      runtime.logger.info({ ms: Math.round(performance.now() - started) }, "hot path warm");
    })());
  return {
    app,
    runtime,
    backlog,
    waits,
    deadlines,
    /**
     * Warms the hot path up, once: `start()` begins it, and `main.ts` listens only once it is done, so that
     * no client's request meets a cold path (nor waits behind the warm-up's hold on every connection).
     */
    warmUp,
    /** Joins the consumer group and starts the sweeps; a `stop()` meanwhile cuts it short, without an error. */
    start: async () => {
      try {
        // All at once: the consumer is wanted (and /ready waits for it) from the first tick.
        await Promise.all([
          runtime.startConsuming(creditEventConsumer({ messaging: runtime.messagingMetrics, saga })),
          backlog.start(),
          warmUp(),
        ]);
      } catch (err) {
        // The stop closed the pool or the client under it: what the stop asked for.
        if (!stopping) throw err;
      }
      if (!stopping) deadlines.start();
    },
    /**
     * Everything `runtime.stop` says (which waits for a consumer still starting), after the held requests
     * are answered; cut short when `signal` aborts.
     */
    stop: async (signal?: AbortSignal) => {
      stopping = true;
      backlog.stop();
      await deadlines.stop(signal);
      await waits.stop();
      await runtime.stop(signal);
    },
  };
}

export type OrderService = Awaited<ReturnType<typeof createOrderService>>;
export { type Env, parseOrderServiceEnv } from "./env.ts";
