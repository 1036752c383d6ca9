import { describe, expect, it } from "vitest";
import { nextTraceparent } from "./trace.ts";

const shape = /^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/;

describe("nextTraceparent", () => {
  it("continues the caller's trace with a new span", () => {
    const incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    const next = nextTraceparent(incoming);
    expect(next).toMatch(/^00-4bf92f3577b34da6a3ce929d0e0e4736-[0-9a-f]{16}-01$/);
    expect(next).not.toBe(incoming);
  });

  it.each([undefined, null, "", "garbage", "00-00000000000000000000000000000000-00f067aa0ba902b7-01"])(
    "starts a new trace when the header is %s",
    (incoming) => {
      expect(nextTraceparent(incoming)).toMatch(shape);
    },
  );

  it("never hands out the same random bytes twice, across refills of its pool", () => {
    const spans = new Set<string>();
    const traces = new Set<string>();
    for (let i = 0; i < 2000; i++) {
      const [, trace, span] = nextTraceparent(undefined).split("-");
      spans.add(span ?? "");
      traces.add(trace ?? "");
    }
    expect(spans.size).toBe(2000);
    expect(traces.size).toBe(2000);
  });
});
