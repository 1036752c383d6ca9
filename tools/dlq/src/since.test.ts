import { describe, expect, it } from "vitest";
import { parseSince } from "./since.ts";

describe("parseSince", () => {
  const now = new Date("2026-12-01T12:00:00Z");

  it.each([
    ["90s", "2026-12-01T11:58:30.000Z"],
    ["15m", "2026-12-01T11:45:00.000Z"],
    ["2h", "2026-12-01T10:00:00.000Z"],
    ["7d", "2026-11-24T12:00:00.000Z"],
    ["2026-12-01T09:30:00Z", "2026-12-01T09:30:00.000Z"],
    ["2026-12-01T10:30:00+01:00", "2026-12-01T09:30:00.000Z"],
  ])("reads %s", (text, expected) => {
    expect(parseSince(text, now).toISOString()).toBe(expected);
  });

  it.each(["", "yesterday", "1", "June", "15 m", "-2h", "2026-13-45"])(
    "refuses %j with the forms it takes",
    (text) => {
      expect(() => parseSince(text, now)).toThrow(/ISO 8601 time .* or a span ago/);
    },
  );
});
