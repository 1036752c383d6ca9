import { describe, expect, it } from "vitest";
import { checkExits, describeExit } from "./checker.ts";
import { type ChaosReport, formatReport } from "./report.ts";

const report = (r: Partial<ChaosReport>): ChaosReport => ({
  seed: 1,
  durationS: 60,
  rate: 10,
  orderServices: 1,
  faults: { kill: {}, freeze: {}, blackhole: {}, latency: {}, reset: {} },
  proxy: { connections: 0, resets: 0, megabytes: 0 },
  outcomes: { CONFIRMED: 3 },
  load: {},
  loadStoppedS: 60,
  faultsEndedS: 58,
  timeoutCancels: [],
  duplicateCopies: 0,
  unplannedExits: [],
  maxRelayLagS: 0,
  timeToQuietS: 1,
  invariants: [],
  ...r,
});

describe("formatReport", () => {
  it("names a process that exited by itself as a FAIL of the summary, with the exit", () => {
    const exit = { name: "order", code: 1, upMs: 12_000 };
    const text = formatReport(
      report({
        unplannedExits: [describeExit(exit)],
        invariants: [checkExits([exit], 6)],
      }),
    );
    expect(text).toMatch(/\| FAIL +\| no process exited by itself[^|]*\| 6 processes +\|/);
    expect(text).toContain("  - order exited by itself (code 1) after 12.0 s up");
  });

  it("says SKIP for an invariant not checked, with why", () => {
    const text = formatReport(
      report({
        invariants: [
          {
            name: "no TIMEOUT cancel",
            pass: true,
            skipped: true,
            checked: "not checked: why",
            counterExamples: [],
          },
        ],
      }),
    );
    expect(text).toMatch(/\| SKIP +\| no TIMEOUT cancel +\| not checked: why +\|/);
  });
});
