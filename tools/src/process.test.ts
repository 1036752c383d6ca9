import { spawn } from "node:child_process";
import { once } from "node:events";
import { describe, expect, it } from "vitest";
import { cpuSeconds } from "./process.ts";

describe("cpuSeconds", () => {
  it("keeps the CPU of a descendant that exited between two readings (a PostgreSQL backend that ended)", async () => {
    // A parent that runs one busy child (about 0.5 s of CPU) to its end, waits for it, then idles until killed.
    const parent = spawn(
      process.execPath,
      [
        "-e",
        `const { spawnSync } = require("node:child_process");
         process.stdin.once("data", () => {
           spawnSync(process.execPath, ["-e", "const end = process.cpuUsage().user + 5e5; while (process.cpuUsage().user < end);"]);
           process.stdout.write("done\\n");
         });
         setInterval(() => {}, 1000);`,
      ],
      { stdio: ["pipe", "pipe", "inherit"] },
    );
    try {
      const pid = parent.pid ?? 0;
      const before = (await cpuSeconds({ parent: pid })).parent ?? 0;
      parent.stdin.write("go\n");
      await once(parent.stdout, "data");
      const after = (await cpuSeconds({ parent: pid })).parent ?? 0;
      expect(after - before).toBeGreaterThanOrEqual(0.4);
    } finally {
      parent.kill("SIGKILL");
    }
  });
});
