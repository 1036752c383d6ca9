import type { ReservationStatus } from "@saga/db/user";

/** What the ledger holds for an order when one of its events arrives; undefined when nothing yet. */
export type ReservationState = { status: ReservationStatus; reason: string | null } | undefined;

/**
 * What `order.created` does to an order's reservation:
 * - nothing yet: try to debit the user, which reserves or rejects;
 * - `order.canceled` came first (CANCELED, not yet answered): reject with ORDER_CANCELED, move no money;
 * - anything else: it is a late duplicate, ignored.
 */
export function onOrderCreated(current: ReservationState): "reserve" | "reject-canceled" | "ignore" {
  if (current === undefined) return "reserve";
  if (current.status === "CANCELED" && current.reason === null) return "reject-canceled";
  return "ignore";
}

/**
 * What `order.canceled` does to an order's reservation:
 * - nothing yet: record the cancellation, so a later `order.created` is rejected;
 * - RESERVED: credit the amount back (RELEASED);
 * - REJECTED moved no money, RELEASED and CANCELED were already canceled: ignored.
 */
export function onOrderCanceled(current: ReservationState): "record-cancel" | "release" | "ignore" {
  if (current === undefined) return "record-cancel";
  if (current.status === "RESERVED") return "release";
  return "ignore";
}
