import { describe, expect, it } from "vitest";
import { createLingerGate } from "./linger.ts";

describe("createLingerGate", () => {
  it("lingers once items arrive faster than one per twice the linger, and stops after a quiet spell", () => {
    let t = 0;
    const gate = createLingerGate(20, () => t);
    expect(gate.shouldLinger()).toBe(false);
    for (let i = 0; i < 40; i++) {
      t += 10;
      gate.arrived();
    }
    expect(gate.shouldLinger()).toBe(true);
    t += 5000;
    gate.arrived();
    expect(gate.shouldLinger()).toBe(false);
  });

  it("counts items that arrive together, and never lingers with a linger of 0", () => {
    let t = 0;
    const gate = createLingerGate(10, () => t);
    const off = createLingerGate(0, () => t);
    for (let i = 0; i < 40; i++) {
      t += 50;
      gate.arrived(10);
      off.arrived(10);
    }
    expect(gate.shouldLinger()).toBe(true);
    expect(off.shouldLinger()).toBe(false);
  });
});
