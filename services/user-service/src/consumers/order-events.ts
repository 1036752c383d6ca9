import { type DecodedEvent, HEADERS, TOPICS, type Topic } from "@saga/contracts";
import type { BatchHandler, MessagingMetrics } from "@saga/messaging";
import { nextTraceparent } from "@saga/observability";
import {
  applyReservationBatch,
  type ReservationState,
  readReservationState,
} from "../domain/apply-reservation-batch.ts";
import type { OrderEvent } from "../domain/reservation-plan.ts";
import type { ReservationMetrics } from "../metrics.ts";

/**
 * The user-service's side of the saga: `order.created` reserves credit, `order.canceled` releases it.
 * A consumed batch is read (`readReservationState`) and applied (`applyReservations`,
 * `applyReservationBatch` unless a test gives another) as a whole; its outcomes are counted once it has
 * committed.
 */
export function orderEventConsumer(
  metrics: MessagingMetrics & ReservationMetrics,
  applyReservations: typeof applyReservationBatch = applyReservationBatch,
): {
  topics: Topic[];
  applyBatch: BatchHandler<ReservationState>;
} {
  return {
    topics: [TOPICS.orderCreated, TOPICS.orderCanceled],
    applyBatch: {
      read: (tx, events) => readReservationState(tx, events.map(orderEvent)),
      async apply(tx, events, state) {
        const { outcomes } = await applyReservations(tx, events.map(orderEvent), state);
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
    },
  };
}

function orderEvent(e: DecodedEvent<Topic>): OrderEvent {
  const trace = e.topic === TOPICS.orderCreated ? e.envelope[HEADERS.traceparent] : undefined;
  return {
    topic: e.topic as OrderEvent["topic"],
    payload: e.payload as OrderEvent["payload"],
    traceparent: trace && nextTraceparent(trace),
  };
}
