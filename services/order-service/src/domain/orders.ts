import { CANCEL_REASONS, type Order } from "@saga/contracts";
import { orders } from "@saga/db/order";
import type { Executor } from "@saga/messaging";
import { asc, eq } from "drizzle-orm";

type OrderRow = typeof orders.$inferSelect;

/** Why an order ended CANCELED when the client asked for it. */
export const CANCELED_BY_REQUEST = CANCEL_REASONS.byRequest;

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
