import type { PhaseResult } from "./load.ts";

export type WarmUpReport = {
  rate: number;
  windowS: number;
  /** The system's CPU milliseconds a saga (every process but the load client), window by window. */
  cpuMsPerSaga: number[];
  /** Whether the last windows agreed within the tolerance (else the cap ended the warm-up). */
  settled: boolean;
};

export type WarmUpOptions = {
  /** Runs one window of load at `rate` sagas/s for `windowS` seconds. */
  run: (rate: number, windowS: number) => Promise<PhaseResult>;
  /** CPU seconds the system's processes have used so far (all of them but the load client). */
  cpuSeconds: () => Promise<number>;
  rate: number;
  windowS: number;
  maxWindows: number;
  /** How close the last three windows must be to call the system warm: 0.05 is a spread within 5 %. */
  tolerance: number;
  log: (line: string) => void;
};

/**
 * Load until what a saga costs has settled, so that the phases after it measure a warm system. Fresh
 * processes spend minutes compiling: at 100 sagas/s the broker's CPU fell from 0.47 to 0.19 cores over
 * five 20-second phases in a row (bench/JOURNAL.md, session 25), so the 8 or 20 seconds at 30 sagas/s the
 * bench warmed up with left most of that in its first phases. A window's figure is the system's CPU a
 * saga; the warm-up ends when three in a row agree within `tolerance` (two could agree by chance while the
 * figure is still falling), or after `maxWindows`.
 */
export async function warmUp(opts: WarmUpOptions): Promise<WarmUpReport> {
  const cpuMsPerSaga: number[] = [];
  for (let i = 1; i <= opts.maxWindows; i++) {
    const before = await opts.cpuSeconds();
    const phase = await opts.run(opts.rate, opts.windowS);
    const ms = (((await opts.cpuSeconds()) - before) / Math.max(1, phase.created)) * 1000;
    cpuMsPerSaga.push(ms);
    const last = cpuMsPerSaga.slice(-3);
    const settled =
      last.length === 3 && Math.max(...last) - Math.min(...last) <= opts.tolerance * Math.max(...last);
    opts.log(
      `bench:   warm-up ${i}/${opts.maxWindows}: ${ms.toFixed(1)} ms of CPU a saga${settled ? ", settled" : ""}`,
    );
    if (settled) return { rate: opts.rate, windowS: opts.windowS, cpuMsPerSaga, settled };
  }
  return { rate: opts.rate, windowS: opts.windowS, cpuMsPerSaga, settled: false };
}

/** One line for the report: how long the warm-up took and where the CPU a saga went. */
export function describeWarmUp(w: WarmUpReport): string {
  const first = w.cpuMsPerSaga[0] ?? 0;
  const last = w.cpuMsPerSaga.at(-1) ?? 0;
  return `Warm-up: ${w.cpuMsPerSaga.length} × ${w.windowS} s at ${w.rate} sagas/s, the system's CPU a saga ${first.toFixed(1)} → ${last.toFixed(1)} ms (${w.settled ? "settled" : "not settled by the cap"}).`;
}
