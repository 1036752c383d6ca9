import type { OrderStatus } from "@saga/contracts";
import { describe, expect, it } from "vitest";
import { onCreditReservationFailed, onCreditReserved, onDeadline, onDelete } from "./order-machine.ts";

type Step = "reserved" | "failed" | "delete" | "deadline";

/**
 * Plays the order's events and requests the way `planCreditEvents`, `cancelOrder` and
 * `cancelOverdueSagas` apply the decisions.
 */
function play(steps: Step[]) {
  let status: OrderStatus = "PENDING";
  const emitted: string[] = [];
  for (const step of steps) {
    if (step === "reserved" && onCreditReserved(status) === "confirm") status = "CONFIRMED";
    if (step === "failed" && onCreditReservationFailed(status) === "cancel") status = "CANCELED";
    if (step === "delete" && onDelete(status) === "cancel") {
      status = "CANCELED";
      emitted.push("order.canceled");
    }
    if (step === "deadline" && onDeadline(status) === "cancel") {
      status = "CANCELED";
      emitted.push("order.canceled");
    }
  }
  return { status, emitted };
}

describe("the order state machine", () => {
  it("confirms on credit-reserved and cancels on credit-reservation-failed", () => {
    expect(play(["reserved"])).toEqual({ status: "CONFIRMED", emitted: [] });
    expect(play(["failed"])).toEqual({ status: "CANCELED", emitted: [] });
  });

  it("cancels on DELETE from PENDING or CONFIRMED, emitting order.canceled once", () => {
    expect(play(["delete"])).toEqual({ status: "CANCELED", emitted: ["order.canceled"] });
    expect(play(["reserved", "delete", "delete"])).toEqual({
      status: "CANCELED",
      emitted: ["order.canceled"],
    });
  });

  it("keeps CANCELED final whatever arrives late", () => {
    expect(play(["delete", "reserved"])).toEqual({ status: "CANCELED", emitted: ["order.canceled"] });
    expect(play(["failed", "reserved", "delete"])).toEqual({ status: "CANCELED", emitted: [] });
  });

  it("ignores duplicates and events that do not fit", () => {
    expect(play(["reserved", "reserved", "failed"])).toEqual({ status: "CONFIRMED", emitted: [] });
    expect(play(["failed", "failed"])).toEqual({ status: "CANCELED", emitted: [] });
  });

  it("cancels a PENDING order at its deadline, emitting order.canceled once; a late answer changes nothing", () => {
    expect(play(["deadline", "reserved", "failed", "deadline"])).toEqual({
      status: "CANCELED",
      emitted: ["order.canceled"],
    });
    expect(play(["deadline", "delete"])).toEqual({ status: "CANCELED", emitted: ["order.canceled"] });
    // A decided saga has no deadline: a CONFIRMED order keeps its reservation.
    expect(play(["reserved", "deadline"])).toEqual({ status: "CONFIRMED", emitted: [] });
    expect(play(["failed", "deadline"])).toEqual({ status: "CANCELED", emitted: [] });
  });
});
