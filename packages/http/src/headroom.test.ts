import { describe, expect, it } from "vitest";
import { parseHeadroom } from "./headroom.ts";

describe("parseHeadroom", () => {
  it("reads a count of new work an instance would admit, and nothing else", () => {
    expect(parseHeadroom("0")).toBe(0);
    expect(parseHeadroom("17")).toBe(17);
    for (const bad of [undefined, null, "", "-1", "1.5", "ten", " 3", ["1", "2"], "9999999999"])
      expect(parseHeadroom(bad)).toBeUndefined();
  });
});
