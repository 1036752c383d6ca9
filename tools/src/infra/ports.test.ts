import { readFile } from "node:fs/promises";
import { describe, expect, it } from "vitest";
import { freeServerPort, isPortFree } from "./ports.ts";

describe("freeServerPort", () => {
  it("chooses free ports below the kernel's ephemeral range, none of those it is told to avoid", async () => {
    // The kernel gives outgoing connections their source port from this range.
    const [low] = (await readFile("/proc/sys/net/ipv4/ip_local_port_range", "utf8")).trim().split(/\s+/);
    const avoid = new Set<number>();
    for (let i = 0; i < 20; i++) {
      const port = await freeServerPort(avoid);
      expect(port).toBeLessThan(Number(low));
      expect(avoid.has(port)).toBe(false);
      expect(await isPortFree(port)).toBe(true);
      avoid.add(port);
    }
  });
});
