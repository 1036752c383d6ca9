import { HEADERS, TOPICS, type Topic } from "@saga/contracts";
import type { BatchHandler, MessagingMetrics } from "@saga/messaging";
import { nextTraceparent } from "@saga/observability";
import { applyReservationBatch } from "../domain/apply-reservation-batch.ts";
import type { OrderEvent } from "../domain/reservation-plan.ts";
import type { ReservationMetrics } from "../metrics.ts";

/**
 * The user-service's side of the saga: `order.created` reserves credit, `order.canceled` releases it.
 * A consumed batch is applied as a whole (`applyReservations`, `applyReservationBatch` unless a test
 * gives another); its outcomes are counted once it has committed.
 */
export function orderEventConsumer(
  metrics: MessagingMetrics & ReservationMetrics,
  applyReservations: typeof applyReservationBatch = applyReservationBatch,
): {
  topics: Topic[];
  applyBatch: BatchHandler;
} {
  return {
    topics: [TOPICS.orderCreated, TOPICS.orderCanceled],
    async applyBatch(tx, events) {
      const orderEvents = events.map((e): OrderEvent => {
        const trace = e.topic === TOPICS.orderCreated ? e.envelope[HEADERS.traceparent] : undefined;
        return {
          topic: e.topic as OrderEvent["topic"],
          payload: e.payload as OrderEvent["payload"],
          traceparent: trace && nextTraceparent(trace),
        };
      });
      const { outcomes } = await applyReservations(tx, orderEvents);
      return () => {
        for (const { topic, outcome } of outcomes) {
          if (outcome.kind === "ignored") metrics.ignored.inc({ topic, state: outcome.state });
          else
            metrics.reservations.inc({
              result: outcome.kind,
              reason: "reason" in outcome ? outcome.reason : "",
            });
        }
      };
    },
  };
}
