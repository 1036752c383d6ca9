import { describe, expect, it } from "vitest";
import { createWakeSignal } from "./wake.ts";

describe("createWakeSignal", () => {
  it("remembers a wake-up that came while nobody waited", async () => {
    const wake = createWakeSignal();
    wake.notify();
    expect(await wake.wait(10_000)).toBe("woken");
    expect(await wake.wait(5)).toBe("timeout");
  });

  it("forgets wake-ups from before clear()", async () => {
    const wake = createWakeSignal();
    wake.notify();
    wake.clear();
    expect(await wake.wait(5)).toBe("timeout");
  });

  it("wakes a waiter, and stops waiting on abort", async () => {
    const wake = createWakeSignal();
    const waiting = wake.wait(10_000);
    wake.notify();
    expect(await waiting).toBe("woken");
    const abort = new AbortController();
    const aborted = wake.wait(10_000, abort.signal);
    abort.abort();
    expect(await aborted).toBe("aborted");
  });
});
