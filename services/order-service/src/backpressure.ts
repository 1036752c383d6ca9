import { orders } from "@saga/db/order";
import { type AppEnv, AppError } from "@saga/http";
import type { Executor } from "@saga/messaging";
import type { Logger } from "@saga/observability";
import { count, eq } from "drizzle-orm";
import type { MiddlewareHandler } from "hono";
import { Counter, Gauge, type Registry } from "prom-client";

export type SagaBacklogOptions = {
  db: Executor;
  /** Sagas in flight (orders still PENDING) past which a new order is refused, at most… */
  limit: number;
  /** …and at least: the bound adapts between the two to keep sagas within `targetMs`. */
  minLimit: number;
  /** The saga duration the bound aims at. */
  targetMs: number;
  /** How often the count is taken again from the database. */
  recountMs: number;
  /**
   * After `start()`, until `WARM_AFTER_ON_TIME` sagas in a row finished within `targetMs` and for at most
   * this long, the bound is at least `warmUpLimit` and slow sagas do not lower it: the first sagas after
   * a cold start (a broker, consumers and relays that have just started) take seconds, and a backlog that
   * builds up while they warm and is cleared in seconds is no reason to refuse orders.
   */
  warmUpMs: number;
  warmUpLimit: number;
  retryAfterS: number;
  logger: Logger;
  registry: Registry;
};

/**
 * Backpressure from the saga: the number of orders still PENDING is everything the saga has not
 * finished, wherever it waits (the relay's backlog of `order.created`, the user-service's consumer lag,
 * the relay of its answer, this service's own consumer lag). Past `limit`, `POST /orders` is answered
 * 503 + `Retry-After` before any work, so the orders accepted keep a short saga: by Little's law a
 * backlog of `limit` sagas at the saga's throughput X waits about limit / X seconds. Cancels and reads
 * are not limited. New orders are accepted again as soon as sagas finish.
 *
 * The bound adapts (AIMD, as TCP and Netflix's concurrency limits do): each saga that took longer than
 * `targetMs` lowers it by 2%, each one on time raises it by 1/bound, between `minLimit` and `limit`. A
 * fixed bound would let saga time grow as throughput falls (a slower machine, a cold broker).
 *
 * After a start, until sagas run on time (or for `warmUpMs` at most), the bound is at least `warmUpLimit`
 * and does not adapt down: sagas are slow then because everything on their path is cold, not because
 * the saga cannot keep up.
 *
 * Cheap: the count is kept in memory (+1 for each order created here, -1 for each saga this process
 * ends) and taken again from the database every `recountMs` (one count of PENDING orders), which also
 * corrects what other order-service instances created or finished.
 */
/** Sagas in a row within the target that end the warm-up: the path is warm. */
const WARM_AFTER_ON_TIME = 50;

export function createSagaBacklog(opts: SagaBacklogOptions) {
  const { db, limit: maxLimit, recountMs, retryAfterS, logger, registry } = opts;
  const minLimit = Math.min(opts.minLimit, maxLimit);
  let limit = maxLimit;
  let warmUntil = Number.POSITIVE_INFINITY;
  let onTimeInARow = 0;
  const warming = () => performance.now() < warmUntil;
  const bound = () => Math.max(minLimit, Math.round(limit), warming() ? opts.warmUpLimit : 0);
  let pending = 0;
  // Orders being created now: counted at once, so concurrent POSTs cannot all pass the bound together.
  let creating = 0;
  let shedding = false;
  let timer: NodeJS.Timeout | undefined;

  new Gauge({
    name: "saga_backlog",
    help: "Sagas in flight (orders still PENDING, and orders being created) as the order-service counts them",
    registers: [registry],
    collect() {
      this.set(pending + creating);
    },
  });
  new Gauge({
    name: "saga_backlog_limit",
    help: "Sagas in flight past which POST /orders is answered 503 + Retry-After (it adapts to saga time)",
    registers: [registry],
    collect() {
      this.set(bound());
    },
  });
  const shed = new Counter({
    name: "saga_backlog_shed_total",
    help: "POST /orders refused with 503 + Retry-After because the saga backlog was at its bound",
    registers: [registry],
  });

  function note(over: boolean) {
    if (over === shedding) return;
    shedding = over;
    const fields = { backlog: pending + creating, bound: bound() };
    if (over) logger.warn(fields, "saga backlog at its bound: refusing new orders");
    else logger.info(fields, "saga backlog below its bound: accepting orders");
  }

  async function recount() {
    const [row] = await db.select({ n: count() }).from(orders).where(eq(orders.status, "PENDING"));
    pending = row?.n ?? 0;
  }

  return {
    /** Middleware for `POST /orders`. */
    admitNewOrders: async function admitNewOrders(c, next) {
      const over = pending + creating >= bound();
      note(over);
      if (over) {
        shed.inc();
        throw new AppError(
          "UNAVAILABLE",
          `the saga backlog is at its bound (${bound()} orders in flight); retry later`,
          {
            retryAfterS,
          },
        );
      }
      creating++;
      try {
        await next();
      } finally {
        creating--;
        if (c.res.status === 201) pending++;
      }
    } satisfies MiddlewareHandler<AppEnv>,

    /** A saga left PENDING (confirmed, rejected or canceled) in this process, after `sagaSeconds`. */
    finished(sagaSeconds: number) {
      pending = Math.max(0, pending - 1);
      if (sagaSeconds * 1000 > opts.targetMs) {
        onTimeInARow = 0;
        if (!warming()) limit = Math.max(minLimit, limit * 0.98);
      } else {
        limit = Math.min(maxLimit, limit + 1 / Math.max(1, limit));
        if (++onTimeInARow >= WARM_AFTER_ON_TIME && warming()) {
          warmUntil = performance.now();
          logger.info({ bound: bound() }, "sagas run on time: warm-up over");
        }
      }
      if (shedding && pending + creating < bound()) note(false);
    },

    /** Counts once, then again every `recountMs`; the warm-up begins. */
    async start() {
      warmUntil = performance.now() + opts.warmUpMs;
      await recount();
      const loop = () => {
        timer = setTimeout(() => {
          recount()
            .catch((err) => logger.warn({ err }, "counting the saga backlog failed; keeping the last count"))
            .finally(() => {
              if (timer) loop();
            });
        }, recountMs);
        timer.unref();
      };
      loop();
    },

    stop() {
      clearTimeout(timer);
      timer = undefined;
    },
  };
}

export type SagaBacklog = ReturnType<typeof createSagaBacklog>;
