import { describe, expect, it } from "vitest";
import { quantile, summarize } from "./stats.ts";

describe("quantile", () => {
  it("takes the nearest rank", () => {
    const values = Array.from({ length: 100 }, (_, i) => 100 - i);
    expect(quantile(values, 0.5)).toBe(50);
    expect(quantile(values, 0.99)).toBe(99);
    expect(quantile(values, 1)).toBe(100);
    expect(quantile([7], 0.99)).toBe(7);
    expect(quantile([], 0.5)).toBeNaN();
  });

  it("summarizes", () => {
    expect(summarize([3, 1, 2])).toEqual({ count: 3, p50: 2, p95: 3, p99: 3, max: 3 });
    expect(summarize([]).max).toBeNaN();
  });

  it("summarizes as many values as a phase of 5× overload refuses", () => {
    const values = Array.from({ length: 200_000 }, (_, i) => (i * 7919) % 200_000);
    expect(summarize(values)).toEqual({
      count: 200_000,
      p50: 99_999,
      p95: 189_999,
      p99: 197_999,
      max: 199_999,
    });
  });
});
