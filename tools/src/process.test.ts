import { spawn } from "node:child_process";
import { once } from "node:events";
import { describe, expect, it } from "vitest";
import { cpuSeconds, wakeups, wakeupsBetween } from "./process.ts";

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
      const woken = wakeupsBetween(before, after);
      expect(woken.tree).toBeGreaterThanOrEqual(50);
      // The parent alone only relayed two messages.
      expect(woken.alone).toBeLessThan(50);
    } finally {
      parent.kill("SIGKILL");
    }
  });

  it("leaves out a child that exited between the readings, whatever it was woken for before", async () => {
    // The child sleeps 50 times at once, then lives until its input ends; the parent ends it when told.
    const child = `for (let i = 0; i < 50; i++) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 5);
      process.stdin.resume();`;
    const parent = spawn(
      process.execPath,
      [
        "-e",
        `const child = require("node:child_process").spawn(process.execPath, ["-e", ${JSON.stringify(child)}], {
           stdio: ["pipe", "inherit", "inherit"],
         });
         process.stdin.once("data", () => child.stdin.end());
         child.once("exit", () => process.stdout.write("gone"));
         setInterval(() => {}, 1000);`,
      ],
      { stdio: ["pipe", "pipe", "inherit"] },
    );
    try {
      const pid = parent.pid ?? 0;
      await new Promise((r) => setTimeout(r, 1000));
      const before = await wakeups({ tree: pid });
      expect(before.tree?.size).toBeGreaterThan(10);
      parent.stdin.write("go");
      await once(parent.stdout, "data");
      const woken = wakeupsBetween(before, await wakeups({ tree: pid }));
      // A difference of totals would be the parent's few wake-ups less the child's 50 and more.
      expect(woken.tree).toBeGreaterThanOrEqual(0);
      expect(woken.tree).toBeLessThan(50);
    } finally {
      parent.kill("SIGKILL");
    }
  });
});
