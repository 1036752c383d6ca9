import { type OrderStatus, TOPICS } from "@saga/contracts";
import { onCreditReservationFailed, onCreditReserved } from "./order-machine.ts";

/** An answer of the user-service, as the plan needs it. */
export type CreditEvent =
  | { topic: typeof TOPICS.creditReserved; orderId: string }
  | { topic: typeof TOPICS.creditReservationFailed; orderId: string; reason: string };

type CreditOutcome = { kind: "changed"; status: "CONFIRMED" | "CANCELED" } | { kind: "ignored" };

export type CreditPlan = {
  /**
   * Orders the batch answers for that do not exist (yet): the batch must not be applied (see
   * `applyCreditBatch`). Their outcomes say `found: "NONE"`, `ignored`.
   */
  absent: string[];
  /** The orders that leave PENDING, with their new status and cancel reason. */
  changes: { orderId: string; status: "CONFIRMED" | "CANCELED"; reason: string | null }[];
  /** One per event, in the batch's order: what it did, and the status it found. */
  outcomes: {
    topic: CreditEvent["topic"];
    orderId: string;
    found: OrderStatus | "NONE";
    outcome: CreditOutcome;
  }[];
};

/**
 * What a batch of credit events does to the orders, applied one after the other in the batch's order
 * as one event per transaction would (a second answer for an order finds the status the first left).
 * `statuses` holds each order's status before the batch (absent: no such order). Pure; the statements
 * are in `apply-credit-batch.ts`.
 */
export function planCreditEvents(
  events: readonly CreditEvent[],
  statuses: ReadonlyMap<string, OrderStatus>,
): CreditPlan {
  const status = new Map(statuses);
  const changed = new Map<string, CreditPlan["changes"][number]>();
  const outcomes: CreditPlan["outcomes"] = [];
  const absent = new Set<string>();
  for (const event of events) {
    const found = status.get(event.orderId);
    if (found === undefined) absent.add(event.orderId);
    const next =
      event.topic === TOPICS.creditReserved
        ? onCreditReserved(found) === "confirm" && { status: "CONFIRMED" as const, reason: null }
        : onCreditReservationFailed(found) === "cancel" && {
            status: "CANCELED" as const,
            reason: event.reason,
          };
    if (next) {
      status.set(event.orderId, next.status);
      changed.set(event.orderId, { orderId: event.orderId, ...next });
    }
    outcomes.push({
      topic: event.topic,
      orderId: event.orderId,
      found: found ?? "NONE",
      outcome: next ? { kind: "changed", status: next.status } : { kind: "ignored" },
    });
  }
  return { absent: [...absent], changes: [...changed.values()], outcomes };
}
