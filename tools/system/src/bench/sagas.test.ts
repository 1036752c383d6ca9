import { describe, expect, it } from "vitest";
import { type FinishedOrder, phaseSagas } from "./sagas.ts";

describe("phaseSagas", () => {
  const startedAt = new Date("2026-01-01T00:00:00Z");
  const endedAt = new Date("2026-01-01T00:00:10Z");
  // 100 orders finished over the 10 s phase, the last one at its end; one in ten canceled by its client.
  const orders: FinishedOrder[] = Array.from({ length: 100 }, (_, i) => ({
    ms: i % 10 === 7 ? 1 : 100 + i,
    doneAt: new Date(startedAt.getTime() + (i + 1) * 100),
    canceledByRequest: i % 10 === 7,
  }));

  it("counts the orders canceled by request as sagas, in the count and in sagas/s", () => {
    const { sagas, sagasPerS } = phaseSagas(orders, { startedAt, endedAt });
    expect(sagas).toBe(100);
    expect(sagasPerS).toBe(10);
  });

  it("leaves them out of the latency: their last change is the DELETE", () => {
    const { latency } = phaseSagas(orders, { startedAt, endedAt });
    expect(latency.count).toBe(90);
    expect(latency.p50).toBeGreaterThanOrEqual(100);
  });

  it("measures sagas/s until the last final state when it comes after the load", () => {
    const late = [
      ...orders,
      { ms: 5000, doneAt: new Date(endedAt.getTime() + 10_000), canceledByRequest: false },
    ];
    expect(phaseSagas(late, { startedAt, endedAt }).sagasPerS).toBeCloseTo(101 / 20);
  });
});
