import { CANCEL_REASONS } from "@saga/contracts";
import { Counter, Histogram, type Registry } from "prom-client";
import type { SagaBacklog } from "./backpressure.ts";
import type { Transition } from "./domain/orders.ts";

const CANCELED_HERE = new Set<string>(Object.values(CANCEL_REASONS));

/** The order-service's saga outcomes and durations. */
export function createSagaMetrics(
  registry: Registry,
  backlog: Pick<SagaBacklog, "finished" | "canceled"> = { finished: () => {}, canceled: () => {} },
) {
  const outcomes = new Counter({
    name: "saga_outcomes_total",
    help: "Orders reaching CONFIRMED or CANCELED, by outcome and cancel reason",
    labelNames: ["outcome", "reason"] as const,
    registers: [registry],
  });
  const duration = new Histogram({
    name: "saga_duration_seconds",
    help: "Time from an order's creation until its saga left PENDING, by outcome",
    labelNames: ["outcome"] as const,
    buckets: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300],
    registers: [registry],
  });
  return {
    outcomes,
    duration,
    /** Counts a committed status change. */
    record(transition: Transition & { kind: "changed" }) {
      const outcome = transition.status.toLowerCase();
      outcomes.inc({ outcome, reason: transition.reason ?? "" });
      if (transition.sagaSeconds !== undefined) {
        duration.observe({ outcome }, transition.sagaSeconds);
        // Ended here (the client's cancel, the deadline) rather than by the user-service's answer.
        if (CANCELED_HERE.has(transition.reason ?? "")) backlog.canceled(transition.sagaSeconds);
        else backlog.finished(transition.sagaSeconds);
      }
    },
  };
}

export type SagaMetrics = ReturnType<typeof createSagaMetrics>;
