import { every, type Periodic } from "@saga/messaging";
import { type Logger, nextTraceparent, traceIdOf } from "@saga/observability";
import type pg from "pg";
import { Counter, Gauge, type Registry } from "prom-client";
import { CANCELED_BY_TIMEOUT, cancelOverdueSagas } from "./domain/saga-deadline.ts";
import type { SagaMetrics } from "./metrics.ts";

export type SagaDeadlinesOptions = {
  pool: pg.Pool;
  /** `SAGA_TIMEOUT`: a saga still PENDING this long after its order was created is canceled. */
  timeoutMs: number;
  intervalMs: number;
  /** Orders canceled per statement. */
  batch: number;
  saga: SagaMetrics;
  logger: Logger;
  registry: Registry;
};

/**
 * The PENDING orders by age, as bands: under 1 s, 1 to 10 s, 10 s to the deadline, past it (bands at or
 * past the deadline are dropped, so a short deadline gives fewer).
 */
export function ageBands(timeoutS: number): { label: string; below: number }[] {
  const bands: { label: string; below: number }[] = [];
  let from = 0;
  for (const edge of [1, 10]) {
    if (edge >= timeoutS) break;
    bands.push({ label: `${from}-${edge}s`, below: edge });
    from = edge;
  }
  bands.push({ label: from === 0 ? "0s-deadline" : `${from}s-deadline`, below: timeoutS });
  bands.push({ label: "past-deadline", below: Number.POSITIVE_INFINITY });
  return bands;
}

/**
 * Ends sagas that outlive the deadline: every `intervalMs` one statement cancels the overdue orders with
 * reason TIMEOUT and writes their `order.canceled` (`cancelOverdueSagas`), again at once while batches
 * come back full. Any number of order-service instances may sweep at once. Counts the cancels in
 * `saga_outcomes_total{outcome="canceled",reason="TIMEOUT"}` and reports the PENDING orders by age.
 */
export function createSagaDeadlines(opts: SagaDeadlinesOptions) {
  const { pool, timeoutMs, intervalMs, batch, saga, logger, registry } = opts;
  const bands = ageBands(timeoutMs / 1000);

  new Gauge({
    name: "saga_deadline_seconds",
    help: "SAGA_TIMEOUT: a saga still PENDING this long is canceled with reason TIMEOUT",
    registers: [registry],
  }).set(timeoutMs / 1000);
  // The oldest PENDING order's age at the last sweep, and when (this process's monotonic clock, so the
  // database's and this host's clocks never mix). Scrapes count on from there: while sweeps fail the age
  // grows, and the SagaPastDeadline alert fires rather than going quiet on a stale value.
  let oldest: { ageS: number; atMs: number } | undefined;
  new Gauge({
    name: "saga_pending_oldest_age_seconds",
    help: "Age of the oldest order PENDING at the last deadline sweep, counted on to now (0 when there was none)",
    registers: [registry],
    collect() {
      this.set(oldest ? oldest.ageS + (performance.now() - oldest.atMs) / 1000 : 0);
    },
  });
  const byAge = new Gauge({
    name: "saga_pending_orders",
    help: "Orders still PENDING after the last deadline sweep, by age band",
    labelNames: ["age"] as const,
    registers: [registry],
  });
  const failures = new Counter({
    name: "saga_deadline_sweep_failures_total",
    help: "Deadline sweeps that failed (the next one tries again)",
    registers: [registry],
  });
  for (const band of bands) byAge.set({ age: band.label }, 0);

  function report(ages: number[]) {
    oldest =
      ages.length === 0
        ? undefined
        : { ageS: ages.reduce((a, b) => Math.max(a, b)), atMs: performance.now() };
    const counts = new Map(bands.map((b) => [b.label, 0]));
    for (const age of ages) {
      const band = bands.find((b) => age < b.below) ?? bands[bands.length - 1];
      if (band) counts.set(band.label, (counts.get(band.label) ?? 0) + 1);
    }
    for (const [age, n] of counts) byAge.set({ age }, n);
  }

  /** One sweep: cancels every overdue saga, a batch per statement. Resolves with how many it canceled. */
  async function sweep(): Promise<number> {
    // One trace per sweep, which its line names: the events it writes have one cause. Not each order's own:
    // that is kept only in its order.created outbox row, which no index finds by order and which goes
    // after OUTBOX_RETENTION_SECONDS (design.md, Saga deadline).
    const traceparent = nextTraceparent(undefined);
    let total = 0;
    for (;;) {
      const { canceledSagaSeconds, pendingAges } = await cancelOverdueSagas(pool, {
        timeoutMs,
        batch,
        traceparent,
      });
      for (const sagaSeconds of canceledSagaSeconds)
        saga.record({ kind: "changed", status: "CANCELED", reason: CANCELED_BY_TIMEOUT, sagaSeconds });
      total += canceledSagaSeconds.length;
      if (canceledSagaSeconds.length < batch) {
        report(pendingAges);
        break;
      }
    }
    // One line per sweep, never one per order: the orders are in the metrics and in order_db.
    if (total > 0)
      logger.info(
        { canceled: total, timeoutS: timeoutMs / 1000, traceId: traceIdOf(traceparent) },
        "canceled sagas past their deadline",
      );
    return total;
  }

  let periodic: Periodic | undefined;
  return {
    sweep,
    start() {
      periodic ??= every(
        intervalMs,
        async () => void (await sweep()),
        (err) => {
          failures.inc();
          logger.warn({ err }, "the saga deadline sweep failed; the next one tries again");
        },
      );
    },
    /** Stops sweeping; waits for a sweep in progress, no longer than until `signal` aborts. */
    async stop(signal?: AbortSignal) {
      await periodic?.stop(signal);
      periodic = undefined;
    },
  };
}
