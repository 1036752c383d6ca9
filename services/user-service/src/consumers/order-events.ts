import { HEADERS, TOPICS } from "@saga/contracts";
import type { EventHandlers, MessagingMetrics } from "@saga/messaging";
import { nextTraceparent } from "@saga/observability";
import { type ReservationOutcome, releaseCredit, reserveCredit } from "../domain/reservations.ts";
import type { ReservationMetrics } from "../metrics.ts";

/** The user-service's side of the saga: `order.created` reserves credit, `order.canceled` releases it. */
export function orderEventHandlers(metrics: MessagingMetrics & ReservationMetrics): EventHandlers {
  const counted = (topic: string) => (outcome: ReservationOutcome) => () => {
    if (outcome.kind === "ignored") metrics.ignored.inc({ topic, state: outcome.state });
    else
      metrics.reservations.inc({ result: outcome.kind, reason: "reason" in outcome ? outcome.reason : "" });
  };
  return {
    [TOPICS.orderCreated]: async (tx, { payload, envelope }) => {
      const trace = envelope[HEADERS.traceparent];
      const outcome = await reserveCredit(tx, payload, trace && nextTraceparent(trace));
      return counted(TOPICS.orderCreated)(outcome);
    },
    [TOPICS.orderCanceled]: async (tx, { payload }) =>
      counted(TOPICS.orderCanceled)(await releaseCredit(tx, payload)),
  };
}
