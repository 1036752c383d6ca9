import type { OrderStatus } from "@saga/contracts";

/** `user.credit-reserved` confirms a PENDING order; a CONFIRMED or CANCELED one ignores it. */
export function onCreditReserved(status: OrderStatus | undefined): "confirm" | "ignore" {
  return status === "PENDING" ? "confirm" : "ignore";
}

/** `user.credit-reservation-failed` cancels a PENDING order; nothing was reserved, so nothing is emitted. */
export function onCreditReservationFailed(status: OrderStatus | undefined): "cancel" | "ignore" {
  return status === "PENDING" ? "cancel" : "ignore";
}

/**
 * `DELETE` cancels a PENDING or CONFIRMED order and emits `order.canceled`, which releases a reservation
 * made meanwhile or before; a CANCELED order stays as it is. Its statement (`CANCEL_ORDER` in
 * `order-hot-path.ts`) cancels exactly the orders this answers "cancel" for, and checks it.
 */
export function onDelete(status: OrderStatus): "cancel" | "none" {
  return status === "CANCELED" ? "none" : "cancel";
}

/**
 * The saga deadline (`SAGA_TIMEOUT`) cancels a PENDING order with reason TIMEOUT and emits
 * `order.canceled`, which releases a reservation made before or after it; a decided order is left
 * alone. Its statement (`saga-deadline.ts`) selects exactly the orders this answers "cancel" for.
 */
export function onDeadline(status: OrderStatus): "cancel" | "none" {
  return status === "PENDING" ? "cancel" : "none";
}
