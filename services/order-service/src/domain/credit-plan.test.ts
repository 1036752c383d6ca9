import { randomUUID } from "node:crypto";
import { TOPICS } from "@saga/contracts";
import { describe, expect, it } from "vitest";
import { planCreditEvents } from "./credit-plan.ts";

describe("planCreditEvents", () => {
  it("moves each PENDING order once, in the batch's order, and ignores what does not fit", () => {
    const [a, b, done, unknown] = [randomUUID(), randomUUID(), randomUUID(), randomUUID()];
    const plan = planCreditEvents(
      [
        { topic: TOPICS.creditReserved, orderId: a },
        { topic: TOPICS.creditReservationFailed, orderId: a, reason: "INSUFFICIENT_FUNDS" },
        { topic: TOPICS.creditReservationFailed, orderId: b, reason: "USER_NOT_FOUND" },
        { topic: TOPICS.creditReserved, orderId: done },
        { topic: TOPICS.creditReserved, orderId: unknown },
      ],
      new Map([
        [a, "PENDING"],
        [b, "PENDING"],
        [done, "CANCELED"],
      ]),
    );
    expect(plan.absent).toEqual([unknown]);
    expect(plan.changes).toEqual([
      { orderId: a, status: "CONFIRMED", reason: null },
      { orderId: b, status: "CANCELED", reason: "USER_NOT_FOUND" },
    ]);
    expect(plan.outcomes.map((o) => [o.found, o.outcome.kind])).toEqual([
      ["PENDING", "changed"],
      ["CONFIRMED", "ignored"],
      ["PENDING", "changed"],
      ["CANCELED", "ignored"],
      ["NONE", "ignored"],
    ]);
  });
});
