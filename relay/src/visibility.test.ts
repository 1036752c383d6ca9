import { describe, expect, it } from "vitest";
import { endedBefore, invisibleIn, parseSnapshot } from "./visibility.ts";

describe("invisibleIn", () => {
  it("finds the stream's transactions a snapshot does not see: running, or not ended before it", () => {
    const snapshot = parseSnapshot("100:110:100,104");
    expect(snapshot).toEqual({ xmin: 100n, xmax: 110n, xip: [100n, 104n] });
    expect(invisibleIn([99, 100, 103, 104, 109, 110, 111], snapshot)).toEqual([100, 104, 110, 111]);
    // Nothing running, and the latest to end was 109: 110 is a commit flushed and not yet visible.
    expect(invisibleIn([109, 110], parseSnapshot("110:110:"))).toEqual([110]);
  });

  it("gives a 32-bit xid the epoch of the snapshot it is compared with", () => {
    const epoch = 3n << 32n;
    // xmax just past a wraparound of the 32-bit counter: ids from before it, and after.
    const snapshot = parseSnapshot(`${epoch - 5n}:${epoch + 2n}:${epoch - 5n},${epoch + 1n}`);
    expect(snapshot).toEqual({ xmin: epoch - 5n, xmax: epoch + 2n, xip: [epoch - 5n, epoch + 1n] });
    expect(invisibleIn([0xffff_fffa, 0xffff_fffb, 0xffff_fffc, 0, 1, 2, 3], snapshot)).toEqual([
      0xffff_fffb, 1, 2, 3,
    ]);
    // xmax just before a wraparound: the next ids, past it, are invisible.
    const before = parseSnapshot(`${epoch - 10n}:${epoch - 2n}:`);
    expect(invisibleIn([0xffff_fff0, 0xffff_fffd, 0xffff_fffe, 0xffff_ffff, 0], before)).toEqual([
      0xffff_fffe, 0xffff_ffff, 0,
    ]);
  });

  it("refuses text that is not a snapshot", () => {
    expect(() => parseSnapshot("1:2")).toThrow(/not a snapshot/);
  });
});

describe("endedBefore", () => {
  it("holds once every transaction below the boundary has ended", () => {
    // 752 runs, and has the newest id: no snapshot lists it, but a boundary assigned after it is above it.
    expect(endedBefore(753n, parseSnapshot("752:752:"))).toBe(false);
    expect(endedBefore(753n, parseSnapshot("752:755:752,754"))).toBe(false);
    // Only transactions from the boundary on still run, or none at all (xmin is then xmax, past it).
    expect(endedBefore(753n, parseSnapshot("754:756:754"))).toBe(true);
    expect(endedBefore(753n, parseSnapshot("754:754:"))).toBe(true);
  });
});
