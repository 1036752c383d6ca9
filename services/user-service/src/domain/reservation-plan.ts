import { type OrderEventPayload, REJECTION_REASONS, type RejectionReason, TOPICS } from "@saga/contracts";
import type { ReservationStatus } from "@saga/db/user";
import type { OutboxEvent } from "@saga/messaging";
import { onOrderCanceled, onOrderCreated } from "./reservation-machine.ts";

type ReservationOutcome =
  | { kind: "reserved" }
  | { kind: "rejected"; reason: RejectionReason }
  | { kind: "released" }
  | { kind: "cancel-recorded" }
  | { kind: "ignored"; state: string };

/** An order's row of the reservation ledger. */
export type LedgerRow = {
  orderId: string;
  userId: string;
  amount: number;
  status: ReservationStatus;
  reason: string | null;
};

/** An event of a consumed batch, as the plan needs it. */
export type OrderEvent = {
  topic: typeof TOPICS.orderCreated | typeof TOPICS.orderCanceled;
  payload: OrderEventPayload;
  /** The trace context of the event this one emits, if it emits one. */
  traceparent?: string | undefined;
};

export type ReservationPlan = {
  /** Amount added to each user's balance (negative: debited), for the users whose balance changes. */
  balanceChanges: Map<string, number>;
  /** Each order's ledger row as the batch leaves it, for the orders whose row changes. */
  ledger: LedgerRow[];
  /** What the batch emits, in the order of the events that caused it. */
  emitted: OutboxEvent<typeof TOPICS.creditReserved | typeof TOPICS.creditReservationFailed>[];
  /** One outcome per event, in the batch's order, for the metrics. */
  outcomes: { topic: OrderEvent["topic"]; outcome: ReservationOutcome }[];
};

/**
 * What a batch of order events does to the ledger and the balances, applied one after the other in
 * the batch's order exactly as one event per transaction would: `ledger` is what each order's row is
 * before the batch (absent: no row), `balances` each user's balance before it (absent: no such user).
 * Two orders of one user in a batch see the balance the first one left, so when their sum exceeds it
 * the first is reserved and the second rejected. A pure function: the statements that read the state
 * and write the plan are in `apply-reservation-batch.ts`.
 */
export function planReservations(
  events: readonly OrderEvent[],
  ledger: ReadonlyMap<string, LedgerRow>,
  balances: ReadonlyMap<string, number>,
): ReservationPlan {
  const rows = new Map<string, LedgerRow>();
  const balance = new Map(balances);
  const balanceChanges = new Map<string, number>();
  const emitted: ReservationPlan["emitted"] = [];
  const outcomes: ReservationPlan["outcomes"] = [];

  const credit = (userId: string, amount: number) => {
    balance.set(userId, (balance.get(userId) ?? 0) + amount);
    balanceChanges.set(userId, (balanceChanges.get(userId) ?? 0) + amount);
  };

  for (const { topic, payload, traceparent } of events) {
    const { orderId, userId, amount } = payload;
    const current = rows.get(orderId) ?? ledger.get(orderId);
    const write = (row: LedgerRow) => rows.set(orderId, row);
    const reject = (reason: RejectionReason): ReservationOutcome => {
      emitted.push({
        topic: TOPICS.creditReservationFailed,
        aggregateId: orderId,
        payload: { orderId, userId, amount, reason },
        traceparent,
      });
      return { kind: "rejected", reason };
    };
    const ignored = (): ReservationOutcome => ({ kind: "ignored", state: current?.status ?? "NONE" });

    let outcome: ReservationOutcome;
    if (topic === TOPICS.orderCreated) {
      switch (onOrderCreated(current)) {
        case "ignore":
          outcome = ignored();
          break;
        case "reject-canceled":
          write({ ...(current as LedgerRow), reason: REJECTION_REASONS.orderCanceled });
          outcome = reject(REJECTION_REASONS.orderCanceled);
          break;
        case "reserve": {
          const available = balance.get(userId);
          if (available !== undefined && available >= amount) {
            credit(userId, -amount);
            write({ orderId, userId, amount, status: "RESERVED", reason: null });
            emitted.push({
              topic: TOPICS.creditReserved,
              aggregateId: orderId,
              payload: { orderId, userId, amount },
              traceparent,
            });
            outcome = { kind: "reserved" };
          } else {
            const reason =
              available === undefined ? REJECTION_REASONS.userNotFound : REJECTION_REASONS.insufficientFunds;
            write({ orderId, userId, amount, status: "REJECTED", reason });
            outcome = reject(reason);
          }
        }
      }
    } else {
      switch (onOrderCanceled(current)) {
        case "record-cancel":
          write({ orderId, userId, amount, status: "CANCELED", reason: null });
          outcome = { kind: "cancel-recorded" };
          break;
        case "release": {
          // The ledger, not the event, says how much was taken and from whom.
          const reserved = current as LedgerRow;
          credit(reserved.userId, reserved.amount);
          write({ ...reserved, status: "RELEASED" });
          outcome = { kind: "released" };
          break;
        }
        case "ignore":
          outcome = ignored();
      }
    }
    outcomes.push({ topic, outcome });
  }
  // A user debited and credited back by the same amount within the batch needs no update.
  for (const [userId, change] of balanceChanges) if (change === 0) balanceChanges.delete(userId);
  return { balanceChanges, ledger: [...rows.values()], emitted, outcomes };
}
