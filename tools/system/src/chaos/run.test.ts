import { describe, expect, it } from "vitest";
import type { NodeProcess } from "../stack/node-process.ts";
import type { System } from "../stack/system.ts";
import { inflict } from "./run.ts";

/** A system of one process, `user-1`, that has exited by itself: what a crash leaves to the schedule. */
function crashedSystem() {
  let running = false;
  const frozen: string[] = [];
  const user1 = {
    isRunning: () => running,
    start: async () => {
      running = true;
    },
  } as unknown as NodeProcess;
  const system = {
    processes: new Map([["user-1", user1]]),
    freeze: async (name: string) => {
      if (!running) throw new Error(`freeze: ${name} is not running`);
      frozen.push(name);
    },
  } as unknown as System;
  return { system, frozen, running: () => running };
}

describe("a fault on a process that exited by itself", () => {
  it("freezes it once started again, as its supervisor would have, instead of ending the run without its report", async () => {
    const { system, frozen, running } = crashedSystem();
    await inflict(system, { kind: "freeze", atMs: 0, victim: "user-1", durationMs: 10 }, () => {});
    expect(running()).toBe(true);
    expect(frozen).toEqual(["user-1"]);
  });
});
