import { describe, expect, it } from "vitest";
import { brokenInvariants, exitCodeFor } from "./verdict.ts";

describe("exitCodeFor", () => {
  const broken = brokenInvariants([
    { name: "money is conserved", checked: "100 users", pass: false, counterExamples: ["user u1: 5 short"] },
    { name: "every order is final", checked: "100 users", pass: true, counterExamples: [] },
  ]);

  it("fails the run when the money check after the overload phases fails, the earlier one passing", () => {
    expect(broken).toEqual(["money is conserved: user u1: 5 short"]);
    expect(exitCodeFor([], broken)).toBe(1);
  });

  it("fails it when the check after the measured phases fails", () => {
    expect(exitCodeFor(broken, [])).toBe(1);
  });

  it("passes it when every check passed", () => {
    expect(exitCodeFor([], [])).toBe(0);
    expect(exitCodeFor([])).toBe(0);
  });
});
