import { orders } from "@saga/db/order";
import { type AppEnv, AppError, HEADROOM_HEADER } from "@saga/http";
import type { Executor } from "@saga/messaging";
import type { Logger } from "@saga/observability";
import { count, sql } from "drizzle-orm";
import type { Context, MiddlewareHandler } from "hono";
import { Counter, Gauge, type Registry } from "prom-client";
import { createSagaRate } from "./saga-rate.ts";

export type SagaBacklogOptions = {
  db: Executor;
  /** Sagas in flight (orders still PENDING) past which a new order is refused, at most, whatever the rate… */
  limit: number;
  /** …and at least, even when no saga finished lately (an idle system that gets a burst). */
  minLimit: number;
  /** How long the sagas in flight may take to finish at the best rate the saga has shown lately. */
  targetMs: number;
  /** How often the count is taken again from the database. */
  recountMs: number;
  /**
   * After `start()`, until `WARM_AFTER_ON_TIME` sagas in a row finished within `targetMs` and `warmUpMinMs`
   * passed, and for at most this long, the bound holds only once a saga in flight has waited
   * `warmUpAgeMs`: the first sagas after a cold start (a broker, consumers and relays that have just
   * started) take seconds, a cold path stalls now and then for a while after that, and the saga has shown
   * no rate yet to size the bound by.
   */
  warmUpMs: number;
  warmUpMinMs: number;
  warmUpAgeMs: number;
  retryAfterS: number;
  logger: Logger;
  registry: Registry;
};

/** Sagas in a row within the target that end the warm-up: the path is warm. */
const WARM_AFTER_ON_TIME = 50;
/**
 * The throughput is the best rate of sagas finished over `RATE_SPAN_S` seconds since the saga last ran
 * late, or within the last `RATE_SPANS` such spans when it did (saga-rate.ts).
 */
const RATE_SPAN_S = 5;
const RATE_SPANS = 6;

/**
 * Backpressure from the saga: the number of orders still PENDING is everything the saga has not
 * finished, wherever it waits (the relay's backlog of `order.created`, the user-service's consumer lag,
 * the relay of its answer, this service's own consumer lag). Past the bound, `POST /orders` is answered
 * 503 + `Retry-After` before any work, so the orders accepted keep a short saga. Cancels and reads are
 * not limited. New orders are accepted again as soon as sagas finish.
 *
 * The bound is Little's law on what the saga has shown it can do: the best rate of sagas finished over 5
 * seconds (a maximum, as BBR estimates a path's bandwidth), times `targetMs`: the sagas in flight that
 * finish within the target at that rate. A backlog that builds up while the saga stalls for a moment, with
 * throughput to spare, is not refused; demand past the saga's throughput is, once it holds `targetMs` of
 * work. Between `minLimit` and `limit`. A quiet spell does not lower the rate, so a system idle since it
 * carried load takes a burst it finishes within the target; a saga that runs late does, to the best of the
 * last 30 s (saga-rate.ts): a saga this process's consumer ends (or an order canceled) after more than
 * `targetMs`, or a count of the backlog that finds an order PENDING for longer, whichever instance
 * accepted it and whether or not anything finishes (a saga that has stopped).
 *
 * Like with like: the backlog is the whole system's (every PENDING order, whichever instance accepted
 * it), so the rate is the whole system's too, the sagas the user-service's answer finished on every
 * order-service instance (`finishedAnywhere`, from the notification `applyCreditBatch` sends with each
 * batch it applies), not only those this process's consumer applied: in one consumer group each of N
 * instances applies about 1/N of the answers, and a bound on its own rate would refuse at 1/N of the
 * target. Each instance hears every batch on its LISTEN connection; what is sent while that connection is
 * down it never hears, and its bound may be lower than the saga's rate: it refuses early, never late. Its
 * own consumer's sagas say at once that the saga runs late, another instance's by a count (`recountMs`)
 * that finds one still PENDING past the target: an instance whose consumer applies few of the answers
 * keeps a rate remembered from before a slow-down some counts longer.
 *
 * After a start (until sagas run on time, or for `warmUpMs` at most), the saga has shown no throughput
 * yet, and the first sagas through a cold path take seconds: the bound holds only once an order in flight
 * has been pending for `warmUpAgeMs` (more PENDING orders than were accepted within that time, here or,
 * as of the last count, by other instances). A path that is warming up drains its backlog before that; a
 * saga that cannot keep up does not.
 *
 * Every answer says how many new orders would be accepted now (`HEADROOM_HEADER`), so that the gateway
 * refuses at its edge, without a round trip, what this bound would refuse.
 *
 * Cheap: the count is kept in memory (+1 for each order created here, -1 for each saga this process
 * ends, by the user-service's answer or by a cancel) and taken again from the database every `recountMs`
 * (one count of PENDING orders, and of the young and the late among them, from their partial index),
 * which also corrects what other order-service instances created or finished. The throughput costs no
 * statement: one notification per batch applied, which rides on the batch's own statement and commit.
 */
// The `POST /orders` answered from an Idempotency-Key's stored answer: a 201 that created nothing.
const replays = new WeakSet<Context>();

/** Says that this request's 201 replays an earlier one (its order is in the backlog already). */
export function markReplayed(c: Context): void {
  replays.add(c);
}

export function createSagaBacklog(opts: SagaBacklogOptions) {
  const { db, limit: maxLimit, targetMs, recountMs, retryAfterS, logger, registry } = opts;
  const minLimit = Math.min(opts.minLimit, maxLimit);
  let warmUntil = Number.POSITIVE_INFINITY;
  // The warm-up cannot end before this (`performance.now()`), nor before sagas ran on time.
  let warmAtLeastUntil = Number.POSITIVE_INFINITY;
  let ranOnTime = false;
  let onTimeInARow = 0;
  const warming = () => performance.now() < warmUntil;
  const rate = createSagaRate({
    spanMs: RATE_SPAN_S * 1000,
    spans: RATE_SPANS,
    now: () => performance.now(),
  });
  /** Sagas finished per second: the best rate the saga has shown. */
  const throughput = rate.perSecond;
  /** A saga ended here after more than the target: the path is not on time, nor the rate there. */
  const ranLate = () => {
    onTimeInARow = 0;
    rate.late();
  };
  const bound = () => Math.min(maxLimit, Math.max(minLimit, Math.round((throughput() * targetMs) / 1000)));
  // While warming: when each order accepted here within the last `warmUpAgeMs` was accepted.
  const acceptedAt: number[] = [];
  const acceptedLately = () => {
    const since = performance.now() - opts.warmUpAgeMs;
    while ((acceptedAt[0] ?? since) < since) acceptedAt.shift();
    return acceptedAt.length;
  };
  let pending = 0;
  // As of the last count: PENDING orders younger than `warmUpAgeMs` beyond those accepted here within it,
  // that is, accepted lately by other instances.
  let youngElsewhere = 0;
  // Orders being created now: counted at once, so concurrent POSTs cannot all pass the bound together.
  let creating = 0;
  let shedding = false;
  let timer: NodeJS.Timeout | undefined;
  // Between start() and stop(): the recount goes on.
  let running = false;

  /**
   * Warming, and no order has been pending longer than `warmUpAgeMs`: the bound does not hold. Another
   * instance's order counts as young until the next count, though it may reach the age before: with
   * several instances the bound holds at most `recountMs` later than it would at one.
   */
  const young = () => warming() && pending <= acceptedLately() + youngElsewhere;
  /** At the bound; while warming, only once an order has been pending longer than `warmUpAgeMs`. */
  const over = () => pending + creating >= bound() && !young();
  // While the bound does not hold, only the ceiling does.
  const headroom = () => (over() ? 0 : Math.max(0, (young() ? maxLimit : bound()) - pending - creating));

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
    help: "Sagas in flight past which POST /orders is answered 503 + Retry-After: the saga's throughput times SAGA_TARGET_MS",
    registers: [registry],
    collect() {
      this.set(bound());
    },
  });
  new Gauge({
    name: "saga_throughput",
    help: `Sagas finished per second by the user-service's answer, on every order-service instance, the best ${RATE_SPAN_S}-second rate since a saga last ran late (then the best of the last ${RATE_SPAN_S * RATE_SPANS} s): what the backlog bound is sized by`,
    registers: [registry],
    collect() {
      this.set(throughput());
    },
  });
  const heard = new Counter({
    name: "saga_finished_anywhere_total",
    help: "Sagas the user-service's answer finished on any order-service instance, this one included, as this instance heard of them: saga_throughput is their rate",
    registers: [registry],
  });
  const shed = new Counter({
    name: "saga_backlog_shed_total",
    help: "POST /orders refused with 503 + Retry-After because the saga backlog was at its bound",
    registers: [registry],
  });

  function note(isOver: boolean) {
    if (isOver === shedding) return;
    shedding = isOver;
    const fields = { backlog: pending + creating, bound: bound(), warming: warming() };
    if (isOver) logger.warn(fields, "saga backlog at its bound: refusing new orders");
    else logger.info(fields, "saga backlog below its bound: accepting orders");
  }

  async function recount() {
    // 'PENDING' as a literal, not a parameter: the sessions plan generically (db/src/pg-client.ts), and
    // only a literal lets that plan count from the partial index of pending orders, not scan them all.
    // The young and the late ones are counted from the same index (its key is `created_at`), on the
    // database's clock.
    const [row] = await db
      .select({
        n: count(),
        young:
          sql<number>`count(*) filter (where ${orders.createdAt} > now() - ${opts.warmUpAgeMs}::float8 * interval '1 millisecond')`.mapWith(
            Number,
          ),
        late: sql<number>`count(*) filter (where ${orders.createdAt} < now() - ${targetMs}::float8 * interval '1 millisecond')`.mapWith(
          Number,
        ),
      })
      .from(orders)
      .where(sql`${orders.status} = 'PENDING'`);
    pending = row?.n ?? 0;
    // An order in flight longer than the target, on any instance: the saga runs late, though it may finish
    // nothing to say so (a user-service away).
    if ((row?.late ?? 0) > 0) rate.late();
    // Taken after the count: an order accepted here meanwhile lowers the estimate, never raises it.
    youngElsewhere = Math.max(0, (row?.young ?? 0) - acceptedLately());
  }

  return {
    /** New orders this process would accept now before its bound. */
    headroom,

    /**
     * Middleware for every route: each answer says how many new orders would be accepted now
     * (`HEADROOM_HEADER`), so that the gateway refuses at its edge the orders this bound would refuse.
     */
    reportHeadroom: async function reportHeadroom(c, next) {
      await next();
      c.res.headers.set(HEADROOM_HEADER, String(headroom()));
    } satisfies MiddlewareHandler<AppEnv>,

    /** Middleware for `POST /orders`. */
    admitNewOrders: async function admitNewOrders(c, next) {
      const isOver = over();
      note(isOver);
      if (isOver) {
        shed.inc();
        throw new AppError(
          "UNAVAILABLE",
          `the saga backlog is at its bound (${bound()} orders in flight); retry later`,
          { retryAfterS },
        );
      }
      creating++;
      try {
        await next();
      } finally {
        creating--;
        if (c.res.status === 201 && !replays.has(c)) {
          pending++;
          if (warming()) acceptedAt.push(performance.now());
        }
      }
    } satisfies MiddlewareHandler<AppEnv>,

    /**
     * A saga the user-service's answer ended (confirmed or refused) in this process, after `sagaSeconds`:
     * it leaves the backlog, and says whether the path runs on time. Its throughput is counted by
     * `finishedAnywhere`, which hears of it too.
     */
    finished(sagaSeconds: number) {
      pending = Math.max(0, pending - 1);
      if (sagaSeconds * 1000 > targetMs) ranLate();
      else if (++onTimeInARow >= WARM_AFTER_ON_TIME) ranOnTime = true;
      // Once the path has shown it runs on time, the minimum ends the warm-up even if sagas are late by
      // then: late because of overload, which the bound is for.
      if (ranOnTime && warming() && performance.now() >= warmAtLeastUntil) {
        warmUntil = performance.now();
        acceptedAt.length = 0;
        logger.info({ bound: bound() }, "sagas run on time: warm-up over");
      }
      if (shedding && !over()) note(false);
    },

    /**
     * `n` sagas the user-service's answer ended in one batch, on any order-service instance (this one
     * included): the saga's throughput, the system's as the backlog is.
     */
    finishedAnywhere(n: number) {
      heard.inc(n);
      rate.finished(n);
      if (shedding && !over()) note(false);
    },

    /**
     * An order this process canceled while PENDING (its client's cancel, or past its deadline), after
     * `sagaSeconds`: it leaves the backlog, but the saga did not finish it, and counting it as throughput
     * would let a flood of cancels (or a sweep of hundreds at once) raise the bound for new orders. A late
     * one still says the path runs late.
     */
    canceled(sagaSeconds: number) {
      pending = Math.max(0, pending - 1);
      if (sagaSeconds * 1000 > targetMs) ranLate();
      if (shedding && !over()) note(false);
    },

    /** Counts once, then again every `recountMs`; the warm-up begins. */
    async start() {
      warmUntil = performance.now() + opts.warmUpMs;
      warmAtLeastUntil = performance.now() + opts.warmUpMinMs;
      running = true;
      await recount();
      // Stopped during the first count: no timer outlives the stop.
      if (!running) return;
      const loop = () => {
        timer = setTimeout(() => {
          recount()
            .catch((err) => logger.warn({ err }, "counting the saga backlog failed; keeping the last count"))
            .finally(() => {
              if (running) loop();
            });
        }, recountMs);
        timer.unref();
      };
      loop();
    },

    stop() {
      running = false;
      clearTimeout(timer);
      timer = undefined;
    },
  };
}

export type SagaBacklog = ReturnType<typeof createSagaBacklog>;
