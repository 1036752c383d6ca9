import { sql } from "drizzle-orm";
import { bigint, check, pgTable, text, timestamp, uuid } from "drizzle-orm/pg-core";
import { createdAt, deadLetters, idempotencyKeys, inbox, outbox } from "./common.ts";

export { deadLetters, idempotencyKeys, inbox, outbox };

export const users = pgTable(
  "users",
  {
    id: uuid("id").primaryKey().defaultRandom(),
    username: text("username").notNull().unique(),
    initialBalance: bigint("initial_balance", { mode: "number" }).notNull(),
    balance: bigint("balance", { mode: "number" }).notNull(),
    createdAt: createdAt(),
  },
  (t) => [
    check("users_balance_non_negative", sql`${t.balance} >= 0`),
    // Only a reservation debits and only its release credits back what it took: the balance never exceeds
    // where it started. With the check above it also keeps initial_balance from being negative.
    check("users_balance_at_most_initial", sql`${t.balance} <= ${t.initialBalance}`),
  ],
);

/**
 * The reservation ledger, one row per order. RESERVED debited the balance, RELEASED credited it back;
 * REJECTED and CANCELED moved no money. CANCELED records an `order.canceled` that came first, so that
 * a later `order.created` for the order is rejected.
 */
export const RESERVATION_STATUSES = ["RESERVED", "REJECTED", "RELEASED", "CANCELED"] as const;
export type ReservationStatus = (typeof RESERVATION_STATUSES)[number];

export const reservations = pgTable(
  "reservations",
  {
    orderId: uuid("order_id").primaryKey(),
    userId: uuid("user_id").notNull(),
    amount: bigint("amount", { mode: "number" }).notNull(),
    status: text("status").$type<ReservationStatus>().notNull(),
    reason: text("reason"),
    createdAt: createdAt(),
    updatedAt: timestamp("updated_at", { withTimezone: true, mode: "date" }).notNull().defaultNow(),
  },
  // No index but the primary key: every reader finds a reservation by its order (the user-service's
  // batches, the chaos checker reads them all), and one on user_id, which nothing read, was written by each
  // saga at a random page (migration "reservations_user_id_unindexed").
  (t) => [
    // A RESERVED row of -100 would credit its user, and still balance the ledger's arithmetic.
    check("reservations_amount_positive", sql`${t.amount} >= 1`),
    check("reservations_status", sql`${t.status} in ('RESERVED', 'REJECTED', 'RELEASED', 'CANCELED')`),
  ],
);
