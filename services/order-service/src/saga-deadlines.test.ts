import { describe, expect, it } from "vitest";
import { ageBands } from "./saga-deadlines.ts";

describe("ageBands", () => {
  it("splits the PENDING orders at 1 s, 10 s and the deadline", () => {
    expect(ageBands(60).map((b) => [b.label, b.below])).toEqual([
      ["0-1s", 1],
      ["1-10s", 10],
      ["10s-deadline", 60],
      ["past-deadline", Number.POSITIVE_INFINITY],
    ]);
  });

  it("drops the bands a short deadline cuts off", () => {
    expect(ageBands(5).map((b) => b.label)).toEqual(["0-1s", "1s-deadline", "past-deadline"]);
    expect(ageBands(0.5).map((b) => b.label)).toEqual(["0s-deadline", "past-deadline"]);
  });
});
