import { randomUUID } from "node:crypto";
import { TOPICS } from "@saga/contracts";
import { describe, expect, it } from "vitest";
import { type LedgerRow, type OrderEvent, planReservations } from "./reservation-plan.ts";

const user = randomUUID();
const order = (amount: number, userId = user) => ({ orderId: randomUUID(), userId, amount });
const created = (payload: ReturnType<typeof order>): OrderEvent => ({ topic: TOPICS.orderCreated, payload });
const canceled = (payload: ReturnType<typeof order>): OrderEvent => ({
  topic: TOPICS.orderCanceled,
  payload,
});

describe("planReservations", () => {
  it("gives each order of one user the balance the previous ones left, as one by one would", () => {
    const [a, b, c] = [order(600), order(500), order(400)];
    const plan = planReservations([created(a), created(b), created(c)], new Map(), new Map([[user, 1000]]));
    expect(plan.outcomes.map((o) => o.outcome)).toEqual([
      { kind: "reserved" },
      { kind: "rejected", reason: "INSUFFICIENT_FUNDS" },
      { kind: "reserved" },
    ]);
    expect(plan.balanceChanges).toEqual(new Map([[user, -1000]]));
    expect(plan.emitted.map((e) => e.topic)).toEqual([
      TOPICS.creditReserved,
      TOPICS.creditReservationFailed,
      TOPICS.creditReserved,
    ]);
  });

  it("releases what the ledger says, and a cancel before the create rejects it with ORDER_CANCELED", () => {
    const reserved = order(300);
    const ledger = new Map<string, LedgerRow>([
      [reserved.orderId, { ...reserved, status: "RESERVED", reason: null }],
    ]);
    const early = order(50);
    // The cancel's payload amount is not what is credited back: the ledger's is.
    const plan = planReservations(
      [canceled({ ...reserved, amount: 1 }), canceled(early), created(early)],
      ledger,
      new Map([[user, 0]]),
    );
    expect(plan.balanceChanges).toEqual(new Map([[user, 300]]));
    expect(plan.ledger).toEqual([
      { ...reserved, status: "RELEASED", reason: null },
      { ...early, status: "CANCELED", reason: "ORDER_CANCELED" },
    ]);
    expect(plan.emitted).toEqual([
      expect.objectContaining({ payload: { ...early, reason: "ORDER_CANCELED" } }),
    ]);
  });

  it("rejects an unknown user, ignores a late duplicate and leaves a debit released in the batch unwritten", () => {
    const stranger = order(10, randomUUID());
    const x = order(100);
    const plan = planReservations(
      [created(stranger), created(x), created(x), canceled(x)],
      new Map(),
      new Map([[user, 100]]),
    );
    expect(plan.outcomes.map((o) => o.outcome.kind)).toEqual(["rejected", "reserved", "ignored", "released"]);
    expect(plan.outcomes[0]?.outcome).toEqual({ kind: "rejected", reason: "USER_NOT_FOUND" });
    expect(plan.balanceChanges.size).toBe(0);
    expect(plan.ledger.map((r) => r.status)).toEqual(["REJECTED", "RELEASED"]);
  });
});
