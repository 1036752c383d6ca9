import { type Order, TOPICS } from "@saga/contracts";
import { orders } from "@saga/db/order";
import { appendOutbox, type Executor, lockAggregate } from "@saga/messaging";
import { asc, eq, sql } from "drizzle-orm";
import { onDelete } from "./order-machine.ts";

type OrderRow = typeof orders.$inferSelect;

/** Why an order ended CANCELED when the client asked for it. */
export const CANCELED_BY_REQUEST = "CANCELED_BY_REQUEST";

export const toOrder = (row: OrderRow): Order => ({
  id: row.id,
  userId: row.userId,
  amount: row.amount,
  status: row.status,
  createdAt: row.createdAt.toISOString(),
});

/** A finished saga step: the order's new status, why, and how long the saga took if this ended it. */
export type Transition =
  | {
      kind: "changed";
      status: "CONFIRMED" | "CANCELED";
      reason: string | null;
      sagaSeconds: number | undefined;
    }
  | { kind: "ignored"; state: string };

/** A user's orders, oldest first. */
export async function listOrders(db: Executor, userId: string): Promise<Order[]> {
  const rows = await db
    .select()
    .from(orders)
    .where(eq(orders.userId, userId))
    .orderBy(asc(orders.createdAt), asc(orders.id));
  return rows.map(toOrder);
}

async function lockOrder(tx: Executor, id: string) {
  await lockAggregate(tx, id);
  const [row] = await tx.select().from(orders).where(eq(orders.id, id));
  return row;
}

async function setStatus(
  tx: Executor,
  before: OrderRow,
  status: "CONFIRMED" | "CANCELED",
  reason: string | null,
) {
  const [after] = await tx
    .update(orders)
    .set({ status, cancelReason: reason, updatedAt: sql`now()` })
    .where(eq(orders.id, before.id))
    .returning();
  if (!after) throw new Error(`order ${before.id} vanished under its lock`);
  // Only the step that leaves PENDING ends the saga; a later cancel of a CONFIRMED order is compensation.
  const sagaSeconds =
    before.status === "PENDING" ? (after.updatedAt.getTime() - after.createdAt.getTime()) / 1000 : undefined;
  return { kind: "changed", status, reason, sagaSeconds } as const;
}

/**
 * Cancels an order on request and emits `order.canceled` so the user-service releases its reservation.
 * Undefined when there is no such order; `ignored` when it was already CANCELED.
 */
export async function cancelOrder(
  tx: Executor,
  orderId: string,
  traceparent: string,
): Promise<Transition | undefined> {
  const order = await lockOrder(tx, orderId);
  if (!order) return undefined;
  if (onDelete(order.status) === "none") return { kind: "ignored", state: order.status };
  const transition = await setStatus(tx, order, "CANCELED", CANCELED_BY_REQUEST);
  await appendOutbox(tx, {
    topic: TOPICS.orderCanceled,
    aggregateId: order.id,
    payload: { orderId: order.id, userId: order.userId, amount: order.amount },
    traceparent,
  });
  return transition;
}
