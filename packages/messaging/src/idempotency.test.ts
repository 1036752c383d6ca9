import { describe, expect, it } from "vitest";
import { requestFingerprint } from "./idempotency.ts";

describe("requestFingerprint", () => {
  it("is the same for the same route and body, and differs otherwise", () => {
    const a = requestFingerprint("POST /orders", { userId: "u", amount: 1 });
    expect(requestFingerprint("POST /orders", { userId: "u", amount: 1 })).toBe(a);
    expect(requestFingerprint("POST /orders", { userId: "u", amount: 2 })).not.toBe(a);
    expect(requestFingerprint("POST /users", { userId: "u", amount: 1 })).not.toBe(a);
  });
});
