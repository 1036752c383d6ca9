import { type DecodedEvent, type OrderStatus, TOPICS, type Topic } from "@saga/contracts";
import type { BatchHandler, MessagingMetrics } from "@saga/messaging";
import { applyCreditBatch, readOrderStatuses } from "../domain/apply-credit-batch.ts";
import type { CreditEvent } from "../domain/credit-plan.ts";
import type { SagaMetrics } from "../metrics.ts";

/**
 * The order-service's side of the saga: the user-service's answer confirms or cancels the order. A
 * consumed batch is read (`readOrderStatuses`) and applied (`applyCreditBatch`) as a whole; its
 * outcomes are counted once it has committed.
 */
export function creditEventConsumer(metrics: { messaging: MessagingMetrics; saga: SagaMetrics }): {
  topics: Topic[];
  applyBatch: BatchHandler<Map<string, OrderStatus>>;
} {
  return {
    topics: [TOPICS.creditReserved, TOPICS.creditReservationFailed],
    applyBatch: {
      read: (tx, events) =>
        readOrderStatuses(
          tx,
          events.map((e) => creditEvent(e).orderId),
        ),
      async apply(tx, events, statuses) {
        const applied = await applyCreditBatch(tx, events.map(creditEvent), statuses);
        return () => {
          const reasons = new Map(applied.changes.map((c) => [c.orderId, c.reason]));
          for (const { topic, orderId, found, outcome } of applied.outcomes) {
            if (outcome.kind === "ignored") {
              metrics.messaging.ignored.inc({ topic, state: found });
              continue;
            }
            metrics.saga.record({
              kind: "changed",
              status: outcome.status,
              reason: reasons.get(orderId) ?? null,
              // Each order left PENDING once; the histogram counts that one change.
              sagaSeconds: applied.sagaSeconds.get(orderId),
            });
            applied.sagaSeconds.delete(orderId);
          }
        };
      },
    },
  };
}

function creditEvent(e: DecodedEvent<Topic>): CreditEvent {
  const p = e.payload as { orderId: string; reason?: string };
  return e.topic === TOPICS.creditReservationFailed
    ? { topic: e.topic, orderId: p.orderId, reason: p.reason ?? "" }
    : { topic: TOPICS.creditReserved, orderId: p.orderId };
}
