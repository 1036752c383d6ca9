import { type OrderEventPayload, REJECTION_REASONS, TOPICS } from "@saga/contracts";
import { reservations, users } from "@saga/db/user";
import { appendOutbox, type Executor, lockAggregate } from "@saga/messaging";
import { and, eq, gte, sql } from "drizzle-orm";
import { onOrderCanceled, onOrderCreated } from "./reservation-machine.ts";

export type ReservationOutcome =
  | { kind: "reserved" }
  | { kind: "rejected"; reason: string }
  | { kind: "released" }
  | { kind: "cancel-recorded" }
  | { kind: "ignored"; state: string };

/** Locks the order and reads its reservation; every change below is made under this lock. */
async function lockReservation(tx: Executor, orderId: string) {
  await lockAggregate(tx, orderId);
  const [row] = await tx.select().from(reservations).where(eq(reservations.orderId, orderId));
  return row;
}

/**
 * Applies `order.created`: debits the user atomically (never below zero, whoever else debits at the
 * same time) and emits `user.credit-reserved`, or records the rejection and emits
 * `user.credit-reservation-failed` with its reason.
 */
export async function reserveCredit(
  tx: Executor,
  order: OrderEventPayload,
  traceparent: string | undefined,
): Promise<ReservationOutcome> {
  const { orderId, userId, amount } = order;
  const current = await lockReservation(tx, orderId);
  const reject = async (reason: string) => {
    await appendOutbox(tx, {
      topic: TOPICS.creditReservationFailed,
      aggregateId: orderId,
      payload: { orderId, userId, amount, reason },
      traceparent,
    });
    return { kind: "rejected", reason } as const;
  };

  switch (onOrderCreated(current)) {
    case "ignore":
      return { kind: "ignored", state: current?.status ?? "NONE" };
    case "reject-canceled":
      await tx
        .update(reservations)
        .set({ reason: REJECTION_REASONS.orderCanceled, updatedAt: sql`now()` })
        .where(eq(reservations.orderId, orderId));
      return reject(REJECTION_REASONS.orderCanceled);
    case "reserve": {
      const debited = await tx
        .update(users)
        .set({ balance: sql`${users.balance} - ${amount}` })
        .where(and(eq(users.id, userId), gte(users.balance, amount)))
        .returning({ id: users.id });
      if (debited.length > 0) {
        await tx.insert(reservations).values({ orderId, userId, amount, status: "RESERVED" });
        await appendOutbox(tx, {
          topic: TOPICS.creditReserved,
          aggregateId: orderId,
          payload: { orderId, userId, amount },
          traceparent,
        });
        return { kind: "reserved" };
      }
      const [user] = await tx.select({ id: users.id }).from(users).where(eq(users.id, userId));
      const reason = user ? REJECTION_REASONS.insufficientFunds : REJECTION_REASONS.userNotFound;
      await tx.insert(reservations).values({ orderId, userId, amount, status: "REJECTED", reason });
      return reject(reason);
    }
  }
}

/**
 * Applies `order.canceled`: credits a RESERVED amount back exactly once (RELEASED); with no reservation
 * yet it records the cancellation (CANCELED) so that a later `order.created` moves no money.
 */
export async function releaseCredit(tx: Executor, order: OrderEventPayload): Promise<ReservationOutcome> {
  const { orderId, userId, amount } = order;
  const current = await lockReservation(tx, orderId);
  const action = onOrderCanceled(current);
  if (action === "record-cancel") {
    await tx.insert(reservations).values({ orderId, userId, amount, status: "CANCELED" });
    return { kind: "cancel-recorded" };
  }
  if (action === "ignore" || !current) return { kind: "ignored", state: current?.status ?? "NONE" };
  // The ledger, not the event, says how much was taken and from whom.
  await tx
    .update(reservations)
    .set({ status: "RELEASED", updatedAt: sql`now()` })
    .where(eq(reservations.orderId, orderId));
  await tx
    .update(users)
    .set({ balance: sql`${users.balance} + ${current.amount}` })
    .where(eq(users.id, current.userId));
  return { kind: "released" };
}
