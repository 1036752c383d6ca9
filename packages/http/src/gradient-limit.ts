/**
 * A concurrency limit that follows the latency of what it guards: Netflix's Gradient2
 * (https://github.com/Netflix/concurrency-limits, `Gradient2Limit`), the algorithm Envoy's adaptive
 * concurrency filter also builds on. The baseline is a long average of the round trip (`baselineSamples`
 * responses); while responses take no longer than `tolerance` times it the limit grows, by `smoothing`
 * times √limit with each answer (as Gradient2 updates, per sample: with the lane full, about
 * 0.2 × limit × √limit a round trip, so it rises fast to whatever the backend takes), and as they take
 * longer, which is requests queueing behind the limit (in the backend's event loop, its pool, its
 * database), it moves toward the limit times the ratio, which is at least half, by `smoothing` an answer.
 *
 * A long average, not the fastest response seen: on a shared machine the fastest answer is a lucky one,
 * and a limit held to twice it would sit at its floor whenever the machine is busy for reasons of its own.
 * The average follows a machine that got slower within seconds; what the limit reacts to is latency that
 * rises faster than that, which is what a queue building up looks like.
 */
export type GradientLimitOptions = {
  /** The limit never falls below this: the concurrency the backend takes without queueing. */
  minLimit: number;
  /** Nor rises above this (the connections kept to the backend). */
  maxLimit: number;
  /** The limit to begin with; `maxLimit` by default. */
  initialLimit?: number;
  /** Latency up to this multiple of the baseline is no sign of queueing (Gradient2's 1.5–2). */
  tolerance: number;
  /** Responses the baseline averages over (an exponential average; Gradient2's long window is 600). */
  baselineSamples: number;
  /** How much of the new estimate a sample moves the limit by (Gradient2's 0.2). */
  smoothing?: number;
};

export class GradientLimit {
  /** The limit in force; admit while requests in flight are fewer than its floor. */
  limit: number;
  /** The long average round trip, in ms; NaN before the first sample. */
  baselineMs = Number.NaN;
  private samples = 0;
  private readonly minLimit: number;
  private readonly opts: GradientLimitOptions & { smoothing: number };

  constructor(opts: GradientLimitOptions) {
    // A floor above the ceiling (a lane configured smaller than the adaptive floor) is the ceiling.
    this.minLimit = Math.min(opts.minLimit, opts.maxLimit);
    this.opts = { smoothing: 0.2, ...opts };
    this.limit = Math.min(opts.maxLimit, Math.max(this.minLimit, opts.initialLimit ?? opts.maxLimit));
  }

  /**
   * The backend refused a request for want of room (its own admission control): more is being sent
   * than it admits at once, whatever the latency says. The limit backs off as AIMD's does on a drop
   * (Netflix's `AIMDLimit`, 0.9), down to its floor.
   */
  drop(): void {
    this.limit = Math.max(this.minLimit, this.limit * 0.9);
  }

  /** One response that took `rttMs`, while `inFlight` requests (itself included) were in flight. */
  sample(rttMs: number, inFlight: number): void {
    const { tolerance, smoothing, maxLimit, baselineSamples } = this.opts;
    const rtt = Math.max(rttMs, 0.001);
    // A plain mean until there are `baselineSamples`: the first answer (a cold connection) weighs no more.
    this.samples = Math.min(this.samples + 1, baselineSamples);
    this.baselineMs = this.samples === 1 ? rtt : this.baselineMs + (rtt - this.baselineMs) / this.samples;
    // Latency fell far below the average (a queue drained, a burst of GC passed): catch up faster.
    if (this.baselineMs > 2 * rtt) this.baselineMs *= 0.95;
    const gradient = Math.max(0.5, Math.min(1, (tolerance * this.baselineMs) / rtt));
    // A lane far under its limit says nothing about how far the limit may grow.
    if (gradient === 1 && inFlight < this.limit / 2) return;
    const estimate = this.limit * gradient + Math.sqrt(this.limit);
    const next = this.limit * (1 - smoothing) + estimate * smoothing;
    this.limit = Math.max(this.minLimit, Math.min(maxLimit, next));
  }
}
