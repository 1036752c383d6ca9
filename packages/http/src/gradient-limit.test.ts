import { describe, expect, it } from "vitest";
import { GradientLimit } from "./gradient-limit.ts";

function limitAt(opts: Partial<ConstructorParameters<typeof GradientLimit>[0]> = {}) {
  const limit = new GradientLimit({
    minLimit: 2,
    maxLimit: 64,
    tolerance: 2,
    baselineSamples: 1000,
    ...opts,
  });
  return {
    limit,
    /** `n` responses taking `rttMs`, each while the lane is full. */
    busy: (n: number, rttMs: number) => {
      for (let i = 0; i < n; i++) limit.sample(rttMs, Math.ceil(limit.limit));
    },
  };
}

describe("GradientLimit", () => {
  it("falls when the backend's latency jumps past the tolerance, and rises when it comes back", () => {
    const { limit, busy } = limitAt({ initialLimit: 32 });
    busy(300, 10);
    expect(limit.limit).toBe(64);
    busy(40, 200);
    const low = limit.limit;
    expect(low).toBeLessThan(8);
    busy(100, 10);
    expect(limit.limit).toBeGreaterThan(low * 3);
  });

  it("holds within the tolerance: latency under twice the usual is no reason to fall", () => {
    const { limit, busy } = limitAt({ initialLimit: 16 });
    busy(100, 10);
    busy(50, 19);
    expect(limit.limit).toBeGreaterThanOrEqual(16);
  });

  it("never leaves its floor and ceiling", () => {
    const { limit, busy } = limitAt({ minLimit: 6, maxLimit: 20 });
    busy(500, 1);
    busy(60, 1000);
    expect(limit.limit).toBe(6);
    busy(2000, 1);
    expect(limit.limit).toBe(20);
  });

  it("does not grow while the lane is far under its limit, and still falls when latency jumps", () => {
    const { limit } = limitAt({ initialLimit: 10 });
    for (let i = 0; i < 100; i++) limit.sample(5, 1);
    expect(limit.limit).toBe(10);
    for (let i = 0; i < 20; i++) limit.sample(500, 1);
    expect(limit.limit).toBeLessThan(10);
  });

  it("follows a machine that got slower: latency that stays up becomes the baseline, and the limit grows again", () => {
    const { limit, busy } = limitAt({ initialLimit: 32, baselineSamples: 100 });
    busy(100, 5);
    busy(30, 50);
    const fallen = limit.limit;
    expect(fallen).toBeLessThan(32);
    busy(1000, 50);
    expect(limit.baselineMs).toBeGreaterThan(45);
    expect(limit.limit).toBeGreaterThan(fallen);
  });

  it("takes a floor above its ceiling as the ceiling", () => {
    const { limit, busy } = limitAt({ minLimit: 8, maxLimit: 1 });
    busy(20, 1000);
    expect(limit.limit).toBe(1);
  });
});
