import { describe, expect, it } from "vitest";
import { MAX_PREFER_WAIT_S, preferredWait } from "./prefer.ts";

describe("preferredWait", () => {
  it.each([
    ["wait=5", 5],
    ["WAIT=5", 5],
    ['wait="7"', 7],
    ["respond-async, wait=10", 10],
    ["return=minimal; foo=bar, wait=3; x=y", 3],
    ["wait=0", 0],
    ["wait=31", MAX_PREFER_WAIT_S],
    ["wait=99999999999999999999999", MAX_PREFER_WAIT_S],
    ["wait=-1", undefined],
    ["wait=1.5", undefined],
    ["wait=", undefined],
    ["respond-async", undefined],
    ["waiting=5", undefined],
    ["", undefined],
    [undefined, undefined],
  ])("reads %j as %j", (header, seconds) => {
    expect(preferredWait(header)).toBe(seconds);
  });
});
