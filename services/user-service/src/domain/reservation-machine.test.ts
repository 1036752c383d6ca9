import { describe, expect, it } from "vitest";
import { onOrderCanceled, onOrderCreated, type ReservationState } from "./reservation-machine.ts";

/**
 * Plays events against one order's ledger row the way `planReservations` applies the decisions, so every
 * arrival order can be checked for its final state and the money it moved.
 */
function play(events: ("created" | "canceled")[], affordable: boolean) {
  let state: ReservationState;
  let debited = 0;
  const emitted: string[] = [];
  for (const event of events) {
    if (event === "created") {
      const action = onOrderCreated(state);
      if (action === "reserve") {
        state = affordable
          ? { status: "RESERVED", reason: null }
          : { status: "REJECTED", reason: "INSUFFICIENT_FUNDS" };
        if (affordable) debited++;
        emitted.push(affordable ? "reserved" : "failed:INSUFFICIENT_FUNDS");
      } else if (action === "reject-canceled") {
        state = { status: "CANCELED", reason: "ORDER_CANCELED" };
        emitted.push("failed:ORDER_CANCELED");
      }
    } else {
      const action = onOrderCanceled(state);
      if (action === "record-cancel") state = { status: "CANCELED", reason: null };
      if (action === "release") {
        state = { status: "RELEASED", reason: null };
        debited--;
      }
    }
  }
  return { status: state?.status, debited, emitted };
}

describe("the reservation state machine", () => {
  it.each([true, false])(
    "ends the same for created→canceled and canceled→created (affordable: %s)",
    (affordable) => {
      const createdFirst = play(["created", "canceled"], affordable);
      const canceledFirst = play(["canceled", "created"], affordable);
      // Either way no money stays taken from a canceled order.
      expect(createdFirst.debited).toBe(0);
      expect(canceledFirst.debited).toBe(0);
      expect(canceledFirst).toEqual({ status: "CANCELED", debited: 0, emitted: ["failed:ORDER_CANCELED"] });
      expect(createdFirst.status).toBe(affordable ? "RELEASED" : "REJECTED");
    },
  );

  it("reserves once however often order.created comes", () => {
    expect(play(["created", "created", "created"], true)).toEqual({
      status: "RESERVED",
      debited: 1,
      emitted: ["reserved"],
    });
  });

  it("releases once however often order.canceled comes", () => {
    expect(play(["created", "canceled", "canceled"], true)).toMatchObject({ status: "RELEASED", debited: 0 });
    expect(play(["canceled", "canceled", "created", "created"], true)).toEqual({
      status: "CANCELED",
      debited: 0,
      emitted: ["failed:ORDER_CANCELED"],
    });
  });

  it("never credits back what a rejected reservation did not take", () => {
    expect(play(["created", "canceled"], false)).toEqual({
      status: "REJECTED",
      debited: 0,
      emitted: ["failed:INSUFFICIENT_FUNDS"],
    });
  });

  it("decides from the ledger row alone", () => {
    expect(onOrderCreated(undefined)).toBe("reserve");
    expect(onOrderCreated({ status: "CANCELED", reason: null })).toBe("reject-canceled");
    for (const status of ["RESERVED", "REJECTED", "RELEASED"] as const) {
      expect(onOrderCreated({ status, reason: null })).toBe("ignore");
    }
    expect(onOrderCanceled(undefined)).toBe("record-cancel");
    expect(onOrderCanceled({ status: "RESERVED", reason: null })).toBe("release");
    for (const status of ["REJECTED", "RELEASED", "CANCELED"] as const) {
      expect(onOrderCanceled({ status, reason: null })).toBe("ignore");
    }
  });
});
