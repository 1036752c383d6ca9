import { CANCEL_REASONS, type Order, PAGE_CURSOR_PATTERN } from "@saga/contracts";
import { orders } from "@saga/db/order";
import type { Executor } from "@saga/messaging";
import { and, asc, eq, getTableColumns, sql } from "drizzle-orm";

type OrderRow = typeof orders.$inferSelect;

/** Why an order ended CANCELED when the client asked for it. */
export const CANCELED_BY_REQUEST = CANCEL_REASONS.byRequest;

const toOrder = (row: OrderRow): Order => ({
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

/**
 * Where a page of a user's orders starts: after this order, in (createdAt, id) order. `seconds` and
 * `micros` are its created_at since the epoch, to the microsecond: a Date (and the API's createdAt) keeps
 * milliseconds, and orders created in one millisecond, or one transaction (now() is the transaction's),
 * would be repeated or skipped at a page's edge by a cursor that kept less.
 */
export type PageCursor = { seconds: string; micros: string; id: string };

/** A page of a user's orders, and the cursor of the next one (undefined on the last). */
export type OrderPage = { orders: Order[]; next: string | undefined };

export type PageRequest = { limit: number; after?: PageCursor | undefined };

// `1740823200.000133`: exact, whatever the session's TimeZone or DateStyle (extract's numeric).
const cursorEpoch = sql<string>`extract(epoch from ${orders.createdAt})::numeric(17, 6)::text`;

/**
 * The `after` of the page that follows this order, `<seconds>.<micros>_<id>`, which clients pass back as
 * they got it. PAGE_CURSOR_PATTERN is exactly what `decodeCursor` takes, so that the API document calls
 * valid exactly the cursors that are (any such position is one, whether or not an order is there).
 */
const encodeCursor = ({ seconds, micros, id }: PageCursor): string => `${seconds}.${micros}_${id}`;

/** The position a cursor holds, or undefined for anything that is not one. */
export function decodeCursor(cursor: string): PageCursor | undefined {
  if (!PAGE_CURSOR_PATTERN.test(cursor)) return undefined;
  const [, seconds = "", micros = "", id = ""] = /^(\d+)\.(\d+)_(.+)$/.exec(cursor) ?? [];
  return { seconds, micros, id };
}

/**
 * The statement that reads a page of a user's orders, oldest first (createdAt, then id: the order of the
 * list before it had pages), at most `limit` after `after`, and one more, which says there is a next page.
 * Served by orders_user_id_idx (user_id, created_at): `created_at >=` the cursor's is its index
 * condition, the rest of the row comparison a filter, and the sort by id is incremental, within one
 * created_at, so a page reads its own rows and the cursor's ties (orders of one transaction, and the API
 * writes one order a transaction), however many orders the user has: a page of 1,000 deep into 200,000
 * orders of one user read 31 buffers in 1 ms (PostgreSQL 18). An index on (user_id, created_at, id)
 * would spare only the ties' sort, and building it would block every write to orders for the upgrade.
 */
export function ordersPage(db: Executor, userId: string, { limit, after }: PageRequest) {
  // The cursor's instant from whole seconds and microseconds apart: each is exact as the float8 that
  // to_timestamp takes, and any the pattern allows is a valid timestamptz (no error for a client's value).
  const position =
    after &&
    sql`(${orders.createdAt}, ${orders.id}) > (to_timestamp(${after.seconds}::bigint) + ${after.micros}::int * interval '1 microsecond', ${after.id}::uuid)`;
  return db
    .select({ ...getTableColumns(orders), cursorEpoch })
    .from(orders)
    .where(and(eq(orders.userId, userId), position))
    .orderBy(asc(orders.createdAt), asc(orders.id))
    .limit(limit + 1);
}

/**
 * A page of a user's orders (`ordersPage`) and the cursor of the next. A position never moves (an
 * order's createdAt and id do not change), so a client paging through sees no order twice and misses none
 * that existed when it began; an order placed meanwhile comes after them (created_at is its transaction's
 * start: one begun before a page was read and committed after may sort before that page's end, and is
 * not seen, as it was not there).
 */
export async function listOrders(db: Executor, userId: string, page: PageRequest): Promise<OrderPage> {
  const rows = await ordersPage(db, userId, page);
  const shown = rows.slice(0, page.limit);
  const last = shown.at(-1);
  if (rows.length <= page.limit || !last) return { orders: shown.map(toOrder), next: undefined };
  const [seconds = "", micros = ""] = last.cursorEpoch.split(".");
  return { orders: shown.map(toOrder), next: encodeCursor({ seconds, micros, id: last.id }) };
}
