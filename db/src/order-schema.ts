import { sql } from "drizzle-orm";
import { bigint, check, index, pgTable, text, timestamp, uuid } from "drizzle-orm/pg-core";
import { createdAt, deadLetters, idempotencyKeys, inbox, outbox } from "./common.ts";

export { deadLetters, idempotencyKeys, inbox, outbox };

export const ORDER_STATUSES = ["PENDING", "CONFIRMED", "CANCELED"] as const;
export type OrderStatus = (typeof ORDER_STATUSES)[number];

export const orders = pgTable(
  "orders",
  {
    id: uuid("id").primaryKey().defaultRandom(),
    userId: uuid("user_id").notNull(),
    amount: bigint("amount", { mode: "number" }).notNull(),
    status: text("status").$type<OrderStatus>().notNull(),
    cancelReason: text("cancel_reason"),
    createdAt: createdAt(),
    updatedAt: timestamp("updated_at", { withTimezone: true, mode: "date" }).notNull().defaultNow(),
  },
  (t) => [
    index("orders_user_id_idx").on(t.userId, t.createdAt),
    // The saga deadline sweep (services/order-service/src/domain/saga-deadline.ts): only PENDING orders,
    // oldest first. A decided order's entry stays until a vacuum cleans the index: an idle sweep reads a
    // page or two right after one, and the pages of the orders decided since until the next.
    index("orders_pending_created_at_idx").on(t.createdAt).where(sql`${t.status} = 'PENDING'`),
    check("orders_amount_positive", sql`${t.amount} >= 1`),
    check("orders_status", sql`${t.status} in ('PENDING', 'CONFIRMED', 'CANCELED')`),
  ],
);
