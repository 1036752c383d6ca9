import { describe, expect, it } from "vitest";
import { BACKENDS, LINKED_PROCESSES, linkedProcesses, linkName } from "../stack/links.ts";
import {
  FAULT_KINDS,
  type Fault,
  faultSchedule,
  INFRA_VICTIMS,
  NETWORK_FAULTS,
  PROCESS_VICTIMS,
  processVictims,
  targetOf,
} from "./schedule.ts";

const victims = [...PROCESS_VICTIMS, ...INFRA_VICTIMS];
// A dense five-minute run: a kill every 5 s, a freeze and a network fault every 10 s.
const fiveMinutes = { durationMs: 300_000, victims, kills: 60, freezes: 30, networkFaults: 30 };

function count(schedule: Fault[], key: (f: Fault) => string): Map<string, number> {
  const counts = new Map<string, number>();
  for (const f of schedule) counts.set(key(f), (counts.get(key(f)) ?? 0) + 1);
  return counts;
}

describe("faultSchedule", () => {
  it("gives the same schedule for the same seed and another for another seed", () => {
    const a = faultSchedule({ seed: 7, ...fiveMinutes });
    expect(faultSchedule({ seed: 7, ...fiveMinutes })).toEqual(a);
    const b = faultSchedule({ seed: 8, ...fiveMinutes });
    expect(b).not.toEqual(a);
    // Each stream differs with the seed, not just one of them.
    const network = (s: Fault[]) => s.filter((f) => "link" in f);
    expect(network(b)).not.toEqual(network(a));
  });

  it("keeps a seed's kills and freezes when the network faults change, and its network faults when they do", () => {
    const all = faultSchedule({ seed: 11, ...fiveMinutes });
    const processOnly = faultSchedule({ seed: 11, ...fiveMinutes, networkFaults: 0 });
    expect(all.filter((f) => "victim" in f)).toEqual(processOnly);
    const networkOnly = faultSchedule({
      seed: 11,
      ...fiveMinutes,
      kills: 0,
      freezes: 0,
      victims: [...PROCESS_VICTIMS],
    });
    expect(all.filter((f) => "link" in f)).toEqual(networkOnly);
  });

  it("has every kind of fault, on every victim and every link, in the counts asked for", () => {
    const schedule = faultSchedule({ seed: 1, ...fiveMinutes });
    expect(new Set(schedule.map((f) => f.kind))).toEqual(new Set(FAULT_KINDS));

    const kills = count(
      schedule.filter((f) => f.kind === "kill"),
      targetOf,
    );
    for (const v of PROCESS_VICTIMS) expect(kills.get(v)).toBe(10);
    expect(kills.get("kafka")).toBe(1);
    expect(kills.get("postgres")).toBe(1);

    // 30 freezes over 8 victims: 3 or 4 each, Kafka and PostgreSQL included.
    const freezes = count(
      schedule.filter((f) => f.kind === "freeze"),
      targetOf,
    );
    expect([...freezes.keys()].sort()).toEqual([...victims].sort());
    for (const n of freezes.values()) expect([3, 4]).toContain(n);

    // 30 network faults: each kind once on each of the 10 links.
    const network = count(
      schedule.filter((f) => "link" in f),
      (f) => `${f.kind} ${targetOf(f)}`,
    );
    for (const kind of NETWORK_FAULTS)
      for (const p of LINKED_PROCESSES)
        for (const b of BACKENDS) expect(network.get(`${kind} ${linkName(p, b)}`)).toBe(1);
    for (const f of schedule) if (f.kind === "latency") expect(f.latencyMs).toBeGreaterThan(0);
  });

  it("hits every pair of kind and link once in kinds × links faults, however many links", () => {
    // Three processes: six links, a multiple of the three kinds.
    const schedule = faultSchedule({
      seed: 4,
      durationMs: 300_000,
      victims: ["user-1", "user-2", "order"],
      kills: 0,
      networkFaults: 18,
    });
    const pairs = count(schedule, (f) => `${f.kind} ${targetOf(f)}`);
    expect(pairs.size).toBe(18);
  });

  it("has every kind of fault in a short CI run too (.ci/run's defaults)", () => {
    for (const seed of [1, 2, 3, 42, 424242]) {
      const schedule = faultSchedule({
        seed,
        durationMs: 75_000,
        victims,
        kills: 8,
        freezes: 4,
        networkFaults: 8,
      });
      expect(new Set(schedule.map((f) => f.kind))).toEqual(new Set(FAULT_KINDS));
    }
  });

  it("hits other victims and links for other seeds in a run too short for all of them", () => {
    // A 40 s run: 4 kills for 6 processes, 2 freezes for 8 victims, 4 network faults for 10 links.
    const hit = { kill: new Set<string>(), freeze: new Set<string>(), network: new Set<string>() };
    for (let seed = 1; seed <= 60; seed++) {
      const schedule = faultSchedule({
        seed,
        durationMs: 40_000,
        victims,
        kills: 4,
        freezes: 2,
        networkFaults: 4,
      });
      for (const f of schedule) {
        if (f.kind === "kill" || f.kind === "freeze") hit[f.kind].add(targetOf(f));
        else hit.network.add(`${f.kind} ${targetOf(f)}`);
      }
    }
    expect([...hit.kill].sort()).toEqual([...victims].sort());
    expect([...hit.freeze].sort()).toEqual([...victims].sort());
    expect(hit.network.size).toBe(NETWORK_FAULTS.length * LINKED_PROCESSES.length * BACKENDS.length);
  });

  it("keeps faults in time order, and never hits a victim or a link before its last fault ended", () => {
    const durationMs = 90_000;
    const schedule = faultSchedule({ seed: 3, durationMs, victims, kills: 18, freezes: 9, networkFaults: 9 });
    expect(schedule.map((f) => f.atMs)).toEqual([...schedule.map((f) => f.atMs)].sort((a, b) => a - b));
    const freeAt = new Map<string, number>();
    for (const f of schedule) {
      expect(f.atMs).toBeGreaterThanOrEqual(0);
      expect(f.atMs).toBeLessThan(durationMs);
      expect(f.durationMs).toBeGreaterThan(0);
      expect(f.atMs).toBeGreaterThan(freeAt.get(targetOf(f)) ?? -1);
      freeAt.set(targetOf(f), f.atMs + f.durationMs);
    }
  });

  it("only hits the victims it was given, and their links", () => {
    const schedule = faultSchedule({
      seed: 5,
      durationMs: 60_000,
      victims: ["relay-1", "relay-2"],
      kills: 10,
      freezes: 4,
      networkFaults: 6,
    });
    expect(new Set(schedule.map(targetOf))).toEqual(
      new Set([
        "relay-1",
        "relay-2",
        ...BACKENDS.flatMap((b) => [linkName("relay-1", b), linkName("relay-2", b)]),
      ]),
    );
    expect(schedule.filter((f) => f.kind === "kill")).toHaveLength(10);
    expect(schedule.filter((f) => f.kind === "freeze")).toHaveLength(4);
    expect(schedule.filter((f) => "link" in f)).toHaveLength(6);
  });

  it("kills and freezes each order-service instance of several, and faults each one's links", () => {
    const victims = [...processVictims(2), ...INFRA_VICTIMS];
    expect(victims).toEqual([
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
    // A kill of each of the 7 processes 10 times, 36 freezes over 9 victims, each network fault once per link.
    const links = linkedProcesses(2).flatMap((p) => BACKENDS.map((b) => linkName(p, b)));
    const schedule = faultSchedule({
      seed: 6,
      durationMs: 300_000,
      victims,
      kills: 70,
      freezes: 36,
      networkFaults: NETWORK_FAULTS.length * links.length,
      orderServices: 2,
    });
    const kills = count(
      schedule.filter((f) => f.kind === "kill"),
      targetOf,
    );
    for (const v of processVictims(2)) expect(kills.get(v), v).toBe(10);
    const freezes = count(
      schedule.filter((f) => f.kind === "freeze"),
      targetOf,
    );
    for (const v of victims) expect(freezes.get(v), v).toBe(4);
    const network = count(
      schedule.filter((f) => "link" in f),
      (f) => `${f.kind} ${targetOf(f)}`,
    );
    for (const kind of NETWORK_FAULTS)
      for (const link of links) expect(network.get(`${kind} ${link}`), `${kind} ${link}`).toBe(1);
    expect(links).toContain("order-2→kafka");
    expect(schedule.some((f) => targetOf(f).startsWith("order→") || targetOf(f) === "order")).toBe(false);
  });

  it("plans no network fault for the gateway, which has no links", () => {
    expect(
      faultSchedule({
        seed: 9,
        durationMs: 60_000,
        victims: ["gateway"],
        kills: 3,
        freezes: 3,
        networkFaults: 5,
      }),
    ).toHaveLength(6);
  });
});
