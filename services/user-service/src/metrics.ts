import { Counter, type Registry } from "prom-client";

/** The user-service's saga outcomes. */
export function createReservationMetrics(registry: Registry) {
  return {
    reservations: new Counter({
      name: "saga_reservations_total",
      help: "Reservation ledger changes: reserved, rejected (by reason), released, cancel-recorded",
      labelNames: ["result", "reason"] as const,
      registers: [registry],
    }),
  };
}

export type ReservationMetrics = ReturnType<typeof createReservationMetrics>;
