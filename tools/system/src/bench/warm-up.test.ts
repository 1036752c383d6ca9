import { describe, expect, it } from "vitest";
import type { PhaseResult } from "./load.ts";
import { describeWarmUp, warmUp } from "./warm-up.ts";

/** A system whose CPU a saga, window by window, is `costs` (ms), 100 sagas a window. */
function system(costs: number[]) {
  let cpuS = 0;
  let window = 0;
  return {
    cpuSeconds: async () => cpuS,
    run: async () => {
      cpuS += ((costs[Math.min(window, costs.length - 1)] as number) * 100) / 1000;
      window++;
      return { created: 100 } as PhaseResult;
    },
  };
}

const options = { rate: 100, windowS: 15, maxWindows: 8, tolerance: 0.05, log: () => {} };

describe("warmUp", () => {
  it("goes on while the CPU a saga falls, and stops when three windows in a row agree", async () => {
    const w = await warmUp({ ...options, ...system([17, 15.7, 15.0, 13.9, 13.7, 13.8, 13.7, 13.7]) });
    expect(w.cpuMsPerSaga.map((ms) => Math.round(ms * 10) / 10)).toEqual([17, 15.7, 15, 13.9, 13.7, 13.8]);
    expect(w.settled).toBe(true);
    expect(describeWarmUp(w)).toBe(
      "Warm-up: 6 × 15 s at 100 sagas/s, the system's CPU a saga 17.0 → 13.8 ms (settled).",
    );
  });

  it("says so when the cap ends it first", async () => {
    const w = await warmUp({ ...options, maxWindows: 4, ...system([20, 18, 16, 14]) });
    expect(w.cpuMsPerSaga).toHaveLength(4);
    expect(w.settled).toBe(false);
    expect(describeWarmUp(w)).toContain("not settled by the cap");
  });
});
