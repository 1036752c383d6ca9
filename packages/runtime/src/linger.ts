/**
 * When to linger: a moving average of the time between arrivals (each gap capped at a second, so that a
 * load after a quiet spell is noticed within a few dozen arrivals). Under load, when items arrive more
 * often than one per `2 × lingerMs` on average, a batch waits `lingerMs` for the items about to arrive;
 * a quiet stream never waits. Used by the consumers (ConsumerOptions.lingerMs) and the relay's sends.
 */
export function createLingerGate(lingerMs: number, now: () => number = () => performance.now()) {
  let meanGap = 1000;
  let last = 0;
  return {
    /** `count` items arrived together. */
    arrived(count = 1): void {
      if (count <= 0) return;
      const at = now();
      meanGap += (Math.min(at - last, 1000) / count - meanGap) / 8;
      last = at;
    },
    /** Whether the next batch should wait `lingerMs` before it starts. */
    shouldLinger: (): boolean => lingerMs > 0 && meanGap < 2 * lingerMs,
  };
}
