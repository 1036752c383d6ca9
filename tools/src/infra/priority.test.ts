import { spawn } from "node:child_process";
import { once } from "node:events";
import { readFile } from "node:fs/promises";
import { getPriority } from "node:os";
import { describe, expect, it, onTestFinished } from "vitest";
import { setCpuPriority } from "./priority.ts";

describe("setCpuPriority", () => {
  it("sets the priority that counts for a server in a session of its own", async () => {
    // As `supervise` runs a server: detached, so in a session (and, with autogroups, a CPU group) of its own.
    const child = spawn("sleep", ["30"], { detached: true, stdio: "ignore" });
    await once(child, "spawn");
    onTestFinished(() => {
      child.kill("SIGKILL");
    });
    const pid = child.pid ?? -1;
    // A lower priority than its own: allowed to any user, so the test holds without root as well.
    expect(await setCpuPriority(pid, 7)).toBe(true);
    const autogroups = await readFile("/proc/sys/kernel/sched_autogroup_enabled", "utf8").catch(() => "0");
    if (autogroups.trim() === "1")
      expect(await readFile(`/proc/${pid}/autogroup`, "utf8")).toMatch(/ nice 7$/m);
    else expect(getPriority(pid)).toBe(7);
  });

  it("answers false and changes nothing for a process that is gone", async () => {
    const child = spawn("true", [], { stdio: "ignore" });
    await once(child, "exit");
    expect(await setCpuPriority(child.pid ?? -1, 5)).toBe(false);
  });
});
