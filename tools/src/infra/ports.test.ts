import { readFile } from "node:fs/promises";
import { describe, expect, it } from "vitest";
import { freePort, isPortFree } from "./ports.ts";

describe("freePort", () => {
  it("chooses free ports below the kernel's ephemeral range, never one it gave before", async () => {
    // The kernel gives outgoing connections their source port from this range.
    const [low] = (await readFile("/proc/sys/net/ipv4/ip_local_port_range", "utf8")).trim().split(/\s+/);
    const given = new Set<number>();
    for (let i = 0; i < 20; i++) {
      // None is listened on: only the memory of what was given keeps the next one different.
      const port = await freePort();
      expect(port).toBeLessThan(Number(low));
      expect(given.has(port)).toBe(false);
      expect(await isPortFree(port)).toBe(true);
      given.add(port);
    }
  });
});
