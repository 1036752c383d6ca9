import { readFile } from "node:fs/promises";
import { describe, expect, it } from "vitest";
import { freePort, isPortFree } from "./ports.ts";

describe("freePort", () => {
  it("chooses free ports below the kernel's ephemeral range, never one it gave before", async () => {
    // The kernel gives outgoing connections their source port from this range.
    const [low] = (await readFile("/proc/sys/net/ipv4/ip_local_port_range", "utf8")).trim().split(/\s+/);
    // None is listened on, so only the memory of what was given keeps them apart: 2,000 random picks
    // from the 20,000-odd ports below the range would repeat one about 90 times without it.
    const given: number[] = [];
    for (let i = 0; i < 2000; i++) given.push(await freePort());
    expect(new Set(given).size).toBe(given.length);
    expect(given.filter((port) => port >= Number(low))).toEqual([]);
    for (const port of given.slice(0, 20)) expect(await isPortFree(port)).toBe(true);
  });
});
