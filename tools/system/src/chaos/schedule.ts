import { uniformInt } from "pure-rand/distribution/uniformInt";
import { xoroshiro128plus } from "pure-rand/generator/xoroshiro128plus";

export const PROCESS_VICTIMS = ["user-1", "user-2", "order", "relay-1", "relay-2", "gateway"] as const;
export const INFRA_VICTIMS = ["kafka", "postgres"] as const;
export type Victim = (typeof PROCESS_VICTIMS)[number] | (typeof INFRA_VICTIMS)[number];

export type Kill = {
  /** When, from the start of the load. */
  atMs: number;
  victim: Victim;
  /** How long it stays down before it is started again. */
  downMs: number;
};

export type ScheduleOptions = {
  seed: number;
  durationMs: number;
  /** Process victims; Kafka and PostgreSQL are restarted once each when listed here. */
  victims: readonly Victim[];
  /** Kills of processes in the whole run (infra restarts come on top). */
  kills: number;
};

/**
 * The kill schedule of a run: a pure function of its options, so a seed replays the same kills.
 * Every process victim is killed about equally often; the broker and the database restart once
 * each, a third and two thirds into the run. Kills land in the first 85% of the run so the last
 * restarts settle while the load still flows.
 */
export function killSchedule({ seed, durationMs, victims, kills }: ScheduleOptions): Kill[] {
  const rng = xoroshiro128plus(seed);
  const processes = victims.filter((v) => (PROCESS_VICTIMS as readonly string[]).includes(v));
  const infra = victims.filter((v) => (INFRA_VICTIMS as readonly string[]).includes(v));

  // Round-robin, then shuffled: counts differ by at most one between victims.
  const order: Victim[] = Array.from(
    { length: processes.length ? kills : 0 },
    (_, i) => processes[i % processes.length] as Victim,
  );
  for (let i = order.length - 1; i > 0; i--) {
    const j = uniformInt(rng, 0, i);
    [order[i], order[j]] = [order[j] as Victim, order[i] as Victim];
  }
  infra.forEach((victim, i) => {
    order.splice(Math.round(((i + 1) * order.length) / (infra.length + 1)), 0, victim);
  });

  const start = durationMs * 0.05;
  const slot = (durationMs * 0.8) / Math.max(order.length, 1);
  const downUntil = new Map<Victim, number>();
  const schedule: Kill[] = [];
  order.forEach((victim, i) => {
    const isInfra = (INFRA_VICTIMS as readonly string[]).includes(victim);
    const jitter = uniformInt(rng, 0, Math.floor(slot * 0.6));
    const atMs = Math.max(Math.round(start + i * slot + jitter), downUntil.get(victim) ?? 0);
    const downMs = isInfra ? uniformInt(rng, 2000, 5000) : uniformInt(rng, 200, 3000);
    downUntil.set(victim, atMs + downMs + 1000);
    schedule.push({ atMs, victim, downMs });
  });
  return schedule.sort((a, b) => a.atMs - b.atMs);
}
