import { TOPICS } from "@saga/contracts";
import type { EventHandlers, MessagingMetrics } from "@saga/messaging";
import { confirmOrder, rejectOrder, type Transition } from "../domain/orders.ts";
import type { SagaMetrics } from "../metrics.ts";

/** The order-service's side of the saga: the user-service's answer confirms or cancels the order. */
export function creditEventHandlers(metrics: {
  messaging: MessagingMetrics;
  saga: SagaMetrics;
}): EventHandlers {
  const counted = (topic: string) => (transition: Transition) => () => {
    if (transition.kind === "ignored") metrics.messaging.ignored.inc({ topic, state: transition.state });
    else metrics.saga.record(transition);
  };
  return {
    [TOPICS.creditReserved]: async (tx, { payload }) =>
      counted(TOPICS.creditReserved)(await confirmOrder(tx, payload.orderId)),
    [TOPICS.creditReservationFailed]: async (tx, { payload }) =>
      counted(TOPICS.creditReservationFailed)(await rejectOrder(tx, payload.orderId, payload.reason)),
  };
}
