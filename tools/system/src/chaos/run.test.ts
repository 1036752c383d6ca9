import { describe, expect, it } from "vitest";
import type { NodeProcess } from "../stack/node-process.ts";
import type { System } from "../stack/system.ts";
import { inflict, parseOptions, strikeEachTarget, underFaults } from "./run.ts";
import { type Fault, targetOf } from "./schedule.ts";

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

describe("the load under faults", () => {
  /** A load that records when it stopped offering and when it was stopped. */
  function fakeLoad(events: string[]) {
    let offering!: () => void;
    const stoppedOffering = new Promise<void>((resolve) => {
      offering = resolve;
    });
    return {
      stoppedOffering,
      stopOffering() {
        events.push("load stopped offering");
        offering();
      },
      async stop() {
        events.push("load stopped, nothing in flight");
      },
    };
  }

  it("stops offering the load at its duration, while faults still go on, and waits for them", async () => {
    const events: string[] = [];
    const load = fakeLoad(events);
    await underFaults(
      1,
      load,
      async () => {
        // The last fault ends only after the load's duration.
        await load.stoppedOffering;
        events.push("faults ended");
      },
      () => events.push("said so"),
    );
    expect(events).toEqual([
      "load stopped offering",
      "said so",
      "faults ended",
      "load stopped, nothing in flight",
    ]);
  });

  it("ends the load at once when a fault fails, and throws its error once nothing is in flight", async () => {
    const events: string[] = [];
    const error = new Error("relay-2 did not come back");
    const run = underFaults(
      3_600_000,
      fakeLoad(events),
      async () => {
        throw error;
      },
      () => events.push("said so"),
    );
    await expect(run).rejects.toBe(error);
    expect(events).toEqual(["load stopped offering", "said so", "load stopped, nothing in flight"]);
  });
});

describe("the schedule's faults", () => {
  it("when a fault fails, lets the faults under way end and starts no more, then throws the first failure", async () => {
    const events: string[] = [];
    const error = new Error("relay-2 did not come back");
    let relayFailed!: () => void;
    const failure = new Promise<void>((resolve) => {
      relayFailed = resolve;
    });
    const schedule: Fault[] = [
      { kind: "kill", atMs: 0, victim: "kafka", durationMs: 10 },
      { kind: "kill", atMs: 0, victim: "relay-2", durationMs: 10 },
      { kind: "kill", atMs: 1, victim: "kafka", durationMs: 10 },
    ];
    const run = strikeEachTarget(schedule, async (fault) => {
      events.push(`${targetOf(fault)} ${fault.atMs} began`);
      if (targetOf(fault) === "relay-2") {
        relayFailed();
        throw error;
      }
      // A Kafka restart asleep before it starts the broker again: it ends after the failure.
      await failure;
      await new Promise((resolve) => setImmediate(resolve));
      events.push(`${targetOf(fault)} ${fault.atMs} ended`);
    }).finally(() => events.push("the run may stop the system"));

    await expect(run).rejects.toBe(error);
    expect(events).toEqual([
      "kafka 0 began",
      "relay-2 0 began",
      "kafka 0 ended",
      "the run may stop the system",
    ]);
  });
});

describe("the run's options", () => {
  it("runs one order-service, named order, unless --order-services asks for more, each of them a victim", () => {
    const one = parseOptions([]);
    expect(one.orderServices).toBe(1);
    expect(one.victims).toEqual([
      "user-1",
      "user-2",
      "order",
      "relay-1",
      "relay-2",
      "gateway",
      "kafka",
      "postgres",
    ]);

    const two = parseOptions(["--order-services", "2"]);
    expect(two.orderServices).toBe(2);
    expect(two.victims).toEqual([
      "user-1",
      "user-2",
      "order-1",
      "order-2",
      "relay-1",
      "relay-2",
      "gateway",
      "kafka",
      "postgres",
    ]);
    expect(parseOptions(["--order-services", "2", "--victims", "order-2,kafka"]).victims).toEqual([
      "order-2",
      "kafka",
    ]);
  });

  it("refuses a victim the system does not run, and a count of instances that is not one or more", () => {
    expect(() => parseOptions(["--order-services", "2", "--victims", "order"])).toThrow(
      /--victims: unknown order; choose from user-1, user-2, order-1, order-2,/,
    );
    expect(() => parseOptions(["--victims", "order-1"])).toThrow(/--victims: unknown order-1/);
    for (const bad of ["0", "1.5", "two"])
      expect(() => parseOptions(["--order-services", bad])).toThrow(
        `--order-services must be a whole number from 1, not "${bad}"`,
      );
  });
});
