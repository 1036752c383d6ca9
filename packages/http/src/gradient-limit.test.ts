import { describe, expect, it } from "vitest";
import { GradientLimit } from "./gradient-limit.ts";

function limitAt(opts: Partial<ConstructorParameters<typeof GradientLimit>[0]> = {}) {
  let now = 0;
  const limit = new GradientLimit({
    minLimit: 2,
    maxLimit: 64,
    tolerance: 2,
    minRttWindowMs: 10_000,
    now: () => now,
    ...opts,
  });
  return {
    limit,
    advance: (ms: number) => {
      now += ms;
    },
    /** `n` responses taking `rttMs`, each while the lane is full. */
    busy: (n: number, rttMs: number) => {
      for (let i = 0; i < n; i++) limit.sample(rttMs, Math.ceil(limit.limit));
    },
  };
}

describe("GradientLimit", () => {
  it("falls when the backend's latency rises past the tolerance, and rises when it comes back", () => {
    const { limit, busy } = limitAt({ initialLimit: 32 });
    busy(20, 10);
    expect(limit.limit).toBeGreaterThanOrEqual(32);
    busy(60, 200);
    const low = limit.limit;
    expect(low).toBeLessThan(8);
    busy(60, 12);
    expect(limit.limit).toBeGreaterThan(low * 3);
  });

  it("holds within the tolerance: latency under twice the fastest is no reason to fall", () => {
    const { limit, busy } = limitAt({ initialLimit: 16 });
    busy(10, 10);
    busy(50, 19);
    expect(limit.limit).toBeGreaterThanOrEqual(16);
  });

  it("never leaves its floor and ceiling", () => {
    const { limit, busy } = limitAt({ minLimit: 6, maxLimit: 20 });
    busy(1, 1);
    busy(200, 1000);
    expect(limit.limit).toBe(6);
    busy(500, 1);
    expect(limit.limit).toBe(20);
  });

  it("does not grow while the lane is far under its limit: that says nothing about how far it may go", () => {
    const { limit } = limitAt({ initialLimit: 10 });
    for (let i = 0; i < 100; i++) limit.sample(5, 1);
    expect(limit.limit).toBe(10);
  });

  it("takes its baseline from recent windows only, so it follows a machine that got slower", () => {
    const { limit, busy, advance } = limitAt({ initialLimit: 16, minRttWindowMs: 1000 });
    busy(10, 5);
    expect(limit.baselineMs).toBe(5);
    // Two windows later every answer takes 50 ms: the baseline is 50, and 50 ms is no longer queueing.
    advance(1000);
    busy(10, 50);
    advance(1000);
    busy(10, 50);
    expect(limit.baselineMs).toBe(50);
    const settled = limit.limit;
    busy(30, 60);
    expect(limit.limit).toBeGreaterThanOrEqual(settled);
  });

  it("takes a floor above its ceiling as the ceiling", () => {
    const { limit, busy } = limitAt({ minLimit: 8, maxLimit: 1 });
    busy(20, 1000);
    expect(limit.limit).toBe(1);
  });
});
