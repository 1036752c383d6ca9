import { spawn } from "node:child_process";
import { once } from "node:events";
import { describe, expect, it } from "vitest";
import { cpuSeconds, wakeups } from "./process.ts";

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

// Sleeps 50 times 5 ms once told to: each sleep blocks its thread, and the end wakes it.
const SLEEPER = `process.stdin.once("data", () => {
  for (let i = 0; i < 50; i++) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 5);
  process.stdout.write("slept");
});`;
// Runs a sleeper as its child and relays "go" to it and its answer back.
const PARENT = `const child = require("node:child_process").spawn(process.execPath, ["-e", ${JSON.stringify(SLEEPER)}], {
  stdio: ["pipe", "pipe", "inherit"],
});
process.stdin.once("data", () => child.stdin.write("go"));
child.stdout.once("data", () => process.stdout.write("done"));
setInterval(() => {}, 1000);`;

describe("wakeups", () => {
  it("counts each time the threads of a process and of its children blocked and were woken", async () => {
    const parent = spawn(process.execPath, ["-e", PARENT], { stdio: ["pipe", "pipe", "inherit"] });
    try {
      const pid = parent.pid ?? 0;
      // Both processes up: the child's threads exist before the first reading.
      await new Promise((r) => setTimeout(r, 1000));
      const before = await wakeups({ tree: pid, alone: pid }, ["alone"]);
      parent.stdin.write("go");
      await once(parent.stdout, "data");
      const after = await wakeups({ tree: pid, alone: pid }, ["alone"]);
      expect((after.tree ?? 0) - (before.tree ?? 0)).toBeGreaterThanOrEqual(50);
      // The parent alone only relayed two messages.
      expect((after.alone ?? 0) - (before.alone ?? 0)).toBeLessThan(50);
    } finally {
      parent.kill("SIGKILL");
    }
  });
});
