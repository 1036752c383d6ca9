import { describe, expect, it } from "vitest";
import { nextTraceparent, traceIdOf } from "./trace.ts";

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

  it("starts a new trace for version ff, which W3C forbids, rather than pass it on", () => {
    const next = nextTraceparent("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
    expect(next).toMatch(shape);
    expect(next).not.toContain("4bf92f3577b34da6a3ce929d0e0e4736");
  });

  it("writes version 00 and keeps only the sampled flag of a caller's later version or other flags", () => {
    const trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    expect(nextTraceparent(`01-${trace}-00f067aa0ba902b7-01`)).toMatch(
      new RegExp(`^00-${trace}-[0-9a-f]{16}-01$`),
    );
    // A later version may carry more fields after the flags; version 00 may not.
    expect(nextTraceparent(`02-${trace}-00f067aa0ba902b7-01-later`)).toMatch(
      new RegExp(`^00-${trace}-[0-9a-f]{16}-01$`),
    );
    expect(nextTraceparent(`00-${trace}-00f067aa0ba902b7-01-later`)).not.toContain(trace);
    expect(nextTraceparent(`00-${trace}-00f067aa0ba902b7-ff`)).toMatch(
      new RegExp(`^00-${trace}-[0-9a-f]{16}-01$`),
    );
    expect(nextTraceparent(`00-${trace}-00f067aa0ba902b7-fe`)).toMatch(
      new RegExp(`^00-${trace}-[0-9a-f]{16}-00$`),
    );
    expect(nextTraceparent(`00-${trace}-00f067aa0ba902b7-00`)).toMatch(
      new RegExp(`^00-${trace}-[0-9a-f]{16}-00$`),
    );
  });

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

describe("traceIdOf", () => {
  it("is the trace id of a usable traceparent, for a log line, and undefined for any other", () => {
    expect(traceIdOf("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")).toBe(
      "4bf92f3577b34da6a3ce929d0e0e4736",
    );
    for (const unusable of [
      undefined,
      "",
      "garbage",
      "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    ])
      expect(traceIdOf(unusable)).toBeUndefined();
  });
});
