import { uniformInt } from "pure-rand/distribution/uniformInt";
import { xoroshiro128plus } from "pure-rand/generator/xoroshiro128plus";
import type { RandomGenerator } from "pure-rand/types/RandomGenerator";
import { BACKENDS, type Link, type LinkedProcess, linkedProcesses, linkName } from "../stack/links.ts";

/** Every process of a system with `orderServices` order-service instances: each may be killed and frozen. */
export const processVictims = (orderServices = 1): ProcessVictim[] => [
  ...linkedProcesses(orderServices),
  "gateway",
];
/** Those of a system with one order-service instance. */
export const PROCESS_VICTIMS: readonly ProcessVictim[] = processVictims(1);
export const INFRA_VICTIMS = ["kafka", "postgres"] as const;
export type ProcessVictim = LinkedProcess | "gateway";
export type Victim = ProcessVictim | (typeof INFRA_VICTIMS)[number];

export const NETWORK_FAULTS = ["blackhole", "latency", "reset"] as const;
type NetworkFaultKind = (typeof NETWORK_FAULTS)[number];
export const FAULT_KINDS = ["kill", "freeze", ...NETWORK_FAULTS] as const;
export type FaultKind = (typeof FAULT_KINDS)[number];

/** What happens to a process: killed (SIGKILL; Kafka and PostgreSQL are stopped) or frozen (SIGSTOP). */
type ProcessFault = {
  kind: "kill" | "freeze";
  /** When, from the start of the load. */
  atMs: number;
  victim: Victim;
  /** How long it stays down before it is started again, or frozen before SIGCONT. */
  durationMs: number;
};

/** What happens to a process's connections to PostgreSQL or Kafka, through its proxy. */
type NetworkFault = {
  kind: NetworkFaultKind;
  atMs: number;
  link: Link;
  durationMs: number;
  /** `latency`: added to each direction. */
  latencyMs?: number;
};

export type Fault = ProcessFault | NetworkFault;

/** Who a fault hits, for logs and reports: `user-1`, `relay-2→kafka`. */
export const targetOf = (f: Fault): string => ("victim" in f ? f.victim : f.link);

export type ScheduleOptions = {
  seed: number;
  durationMs: number;
  /** Victims of kills and freezes; Kafka and PostgreSQL are restarted once each when listed here. */
  victims: readonly Victim[];
  /** Kills of processes in the whole run (infra restarts come on top). */
  kills: number;
  /** Freezes of victims, Kafka and PostgreSQL included, in the whole run. */
  freezes?: number;
  /** Network faults on the links of the listed services and relays, in the whole run. */
  networkFaults?: number;
  /** Order-service instances of the system (1 by default): which processes have links. */
  orderServices?: number;
};

// Each kind of fault draws from a stream of its own, so that adding one kind keeps a seed's others.
const NETWORK_STREAM = 0x6e6574;

/**
 * The fault schedule of a run: a pure function of its options, so a seed replays the same faults.
 * Kills and freezes share one timeline (a victim is never hit while it is still down or frozen):
 * every process victim is killed about equally often, every victim frozen about equally often, and
 * the broker and the database restart once each, a third and two thirds into the run. Network faults
 * have a timeline of their own: every kind on every link about equally often, one at a time per link.
 * Faults start in the first 85% of the run so the last ones settle while the load still flows.
 */
export function faultSchedule(opts: ScheduleOptions): Fault[] {
  return [...processFaults(opts), ...networkFaults(opts)].sort((a, b) => a.atMs - b.atMs);
}

function processFaults({ seed, durationMs, victims, kills, freezes = 0 }: ScheduleOptions): ProcessFault[] {
  const rng = xoroshiro128plus(seed);
  const isInfra = (v: Victim) => (INFRA_VICTIMS as readonly string[]).includes(v);
  const processes = victims.filter((v) => !isInfra(v));
  const infra = victims.filter(isInfra);

  // Round-robin, then shuffled: counts differ by at most one between victims. Each from a start the seed
  // draws: in a short run not every victim comes round (4 freezes for 8 victims), and the seed picks which.
  const order: { kind: "kill" | "freeze"; victim: Victim }[] = [
    ...roundRobin(processes.length ? kills : 0, processes, rng).map((victim) => ({
      kind: "kill" as const,
      victim,
    })),
    ...roundRobin(victims.length ? freezes : 0, victims, rng).map((victim) => ({
      kind: "freeze" as const,
      victim,
    })),
  ];
  shuffle(order, rng);
  infra.forEach((victim, i) => {
    order.splice(Math.round(((i + 1) * order.length) / (infra.length + 1)), 0, { kind: "kill", victim });
  });

  return place(order, durationMs, rng, ({ kind, victim }) => {
    const durationMs =
      kind === "kill"
        ? isInfra(victim)
          ? uniformInt(rng, 2000, 5000)
          : uniformInt(rng, 200, 3000)
        : // Freezes of the services reach past the consumers' 10 s session timeout now and then, so
          // that a frozen consumer's partitions move to the other instance while it holds its locks.
          isInfra(victim)
          ? uniformInt(rng, 1000, 4000)
          : uniformInt(rng, 1000, 12_000);
    return { target: victim, fault: { kind, victim, durationMs } };
  });
}

function networkFaults({
  seed,
  durationMs,
  victims,
  networkFaults = 0,
  orderServices = 1,
}: ScheduleOptions): NetworkFault[] {
  const rng = xoroshiro128plus(seed ^ NETWORK_STREAM);
  // In the system's order, whatever the victims' order: a seed keeps its faults.
  const links = linkedProcesses(orderServices)
    .filter((p) => (victims as readonly string[]).includes(p))
    .flatMap((p) => BACKENDS.map((b) => linkName(p, b)));
  if (links.length === 0) return [];
  // Kinds and links both round-robin, so that a few faults already spread over kinds and links; past
  // each lcm(kinds, links) the links shift by one, so that kinds × links faults hit every pair once. Both
  // from a start the seed draws: a run with fewer faults than links leaves out links the seed picks.
  const kinds = NETWORK_FAULTS.length;
  const cycle = lcm(kinds, links.length);
  const firstKind = uniformInt(rng, 0, kinds - 1);
  const firstLink = uniformInt(rng, 0, links.length - 1);
  const order = Array.from({ length: networkFaults }, (_, i) => ({
    kind: NETWORK_FAULTS[(firstKind + i) % kinds] as NetworkFaultKind,
    link: links[(firstLink + i + Math.floor(i / cycle)) % links.length] as Link,
  }));
  shuffle(order, rng);
  return place(order, durationMs, rng, ({ kind, link }) => {
    switch (kind) {
      // Long enough for the clients' own timeouts to fire now and then.
      case "blackhole":
        return { target: link, fault: { kind, link, durationMs: uniformInt(rng, 2000, 10_000) } };
      case "latency": {
        const durationMs = uniformInt(rng, 3000, 15_000);
        return { target: link, fault: { kind, link, durationMs, latencyMs: uniformInt(rng, 20, 400) } };
      }
      // Resets every connection, and for a moment every new one: the pools reconnect.
      case "reset":
        return { target: link, fault: { kind, link, durationMs: uniformInt(rng, 200, 2000) } };
    }
  });
}

function lcm(a: number, b: number): number {
  const gcd = (x: number, y: number): number => (y === 0 ? x : gcd(y, x % y));
  return (a * b) / gcd(a, b);
}

/** `count` of `of` in turn, from a start `rng` draws. */
function roundRobin<T>(count: number, of: readonly T[], rng: RandomGenerator): T[] {
  if (count === 0) return [];
  const start = uniformInt(rng, 0, of.length - 1);
  return Array.from({ length: count }, (_, i) => of[(start + i) % of.length] as T);
}

function shuffle<T>(items: T[], rng: RandomGenerator) {
  for (let i = items.length - 1; i > 0; i--) {
    const j = uniformInt(rng, 0, i);
    [items[i], items[j]] = [items[j] as T, items[i] as T];
  }
}

/**
 * Spreads `order` over 80% of the run from 5% in, one slot each with some jitter, and never starts a
 * fault on a target before its previous one ended and a second passed.
 */
function place<T, F extends Fault>(
  order: T[],
  durationMs: number,
  rng: RandomGenerator,
  draw: (item: T) => { target: string; fault: Omit<F, "atMs"> },
): F[] {
  const start = durationMs * 0.05;
  const slot = (durationMs * 0.8) / Math.max(order.length, 1);
  const busyUntil = new Map<string, number>();
  return order.map((item, i) => {
    const jitter = uniformInt(rng, 0, Math.floor(slot * 0.6));
    const { target, fault } = draw(item);
    const atMs = Math.max(Math.round(start + i * slot + jitter), busyUntil.get(target) ?? 0);
    busyUntil.set(target, atMs + fault.durationMs + 1000);
    return { ...fault, atMs } as F;
  });
}
