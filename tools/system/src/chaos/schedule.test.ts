import { describe, expect, it } from "vitest";
import { INFRA_VICTIMS, killSchedule, PROCESS_VICTIMS } from "./schedule.ts";

const victims = [...PROCESS_VICTIMS, ...INFRA_VICTIMS];

describe("killSchedule", () => {
  it("gives the same schedule for the same seed and another for another seed", () => {
    const a = killSchedule({ seed: 7, durationMs: 300_000, victims, kills: 54 });
    expect(killSchedule({ seed: 7, durationMs: 300_000, victims, kills: 54 })).toEqual(a);
    expect(killSchedule({ seed: 8, durationMs: 300_000, victims, kills: 54 })).not.toEqual(a);
  });

  it("kills every process victim at least kills/victims times and restarts Kafka and PostgreSQL once", () => {
    const schedule = killSchedule({ seed: 1, durationMs: 300_000, victims, kills: 54 });
    const counts = new Map<string, number>();
    for (const k of schedule) counts.set(k.victim, (counts.get(k.victim) ?? 0) + 1);
    for (const v of PROCESS_VICTIMS) expect(counts.get(v)).toBe(9);
    expect(counts.get("kafka")).toBe(1);
    expect(counts.get("postgres")).toBe(1);
  });

  it("keeps kills inside the run, in time order, and never kills a victim that is still down", () => {
    const durationMs = 90_000;
    const schedule = killSchedule({ seed: 3, durationMs, victims, kills: 18 });
    expect(schedule.map((k) => k.atMs)).toEqual([...schedule.map((k) => k.atMs)].sort((a, b) => a - b));
    const backAt = new Map<string, number>();
    for (const k of schedule) {
      expect(k.atMs).toBeGreaterThanOrEqual(0);
      expect(k.atMs).toBeLessThan(durationMs);
      expect(k.atMs).toBeGreaterThan(backAt.get(k.victim) ?? -1);
      backAt.set(k.victim, k.atMs + k.downMs);
    }
  });

  it("only picks the victims it was given", () => {
    const schedule = killSchedule({
      seed: 5,
      durationMs: 60_000,
      victims: ["relay-1", "relay-2"],
      kills: 10,
    });
    expect(new Set(schedule.map((k) => k.victim))).toEqual(new Set(["relay-1", "relay-2"]));
    expect(schedule).toHaveLength(10);
  });
});
