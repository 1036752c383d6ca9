/**
 * A concurrency limit that follows the latency of what it guards, after Netflix's Gradient2
 * (https://github.com/Netflix/concurrency-limits) and Envoy's adaptive concurrency filter: while
 * responses take no longer than `tolerance` times the fastest one seen lately, the limit grows (by about
 * √limit per round trip); as they take longer, which is requests queueing behind the limit, in the
 * backend's event loop or in its database, it shrinks in proportion, down to half per round trip.
 *
 * The fastest response is a windowed minimum (the last one to two `minRttWindowMs`), so the baseline
 * follows a machine whose speed changes instead of keeping a minimum from a quiet minute; Envoy
 * re-measures it by cutting concurrency to a trickle, which would shed load by design.
 */
export type GradientLimitOptions = {
  /** The limit never falls below this: the concurrency the backend is known to take without queueing. */
  minLimit: number;
  /** Nor rises above this (the connections kept to the backend). */
  maxLimit: number;
  /** The limit to begin with; `maxLimit` by default. */
  initialLimit?: number;
  /** Latency up to this multiple of the baseline is no sign of queueing. */
  tolerance: number;
  /** The baseline is the fastest response of the last one to two windows of this length. */
  minRttWindowMs: number;
  /** How much of the new estimate a sample moves the limit by (Gradient2's 0.2). */
  smoothing?: number;
  /** For tests: the clock. */
  now?: () => number;
};

export class GradientLimit {
  /** The limit in force; admit while requests in flight are fewer than its floor. */
  limit: number;
  private readonly opts: Required<Omit<GradientLimitOptions, "initialLimit">>;
  private minRtt = Number.POSITIVE_INFINITY;
  private windowMinRtt = Number.POSITIVE_INFINITY;
  private windowEnds = Number.NEGATIVE_INFINITY;

  constructor(opts: GradientLimitOptions) {
    // A floor above the ceiling (a lane configured smaller than the adaptive floor) is the ceiling.
    const minLimit = Math.min(opts.minLimit, opts.maxLimit);
    this.opts = { smoothing: 0.2, now: () => performance.now(), ...opts, minLimit };
    this.limit = Math.min(opts.maxLimit, Math.max(minLimit, opts.initialLimit ?? opts.maxLimit));
  }

  /** The latency the limit holds the backend near: `tolerance` times the baseline. */
  get baselineMs(): number {
    return Math.min(this.minRtt, this.windowMinRtt);
  }

  /** One response that took `rttMs`, while `inFlight` requests (itself included) were in flight. */
  sample(rttMs: number, inFlight: number): void {
    const { tolerance, smoothing, minLimit, maxLimit, minRttWindowMs, now } = this.opts;
    const at = now();
    if (at >= this.windowEnds) {
      this.minRtt = this.windowMinRtt;
      this.windowMinRtt = Number.POSITIVE_INFINITY;
      this.windowEnds = at + minRttWindowMs;
    }
    const rtt = Math.max(rttMs, 0.001);
    this.windowMinRtt = Math.min(this.windowMinRtt, rtt);
    const gradient = Math.max(0.5, Math.min(1, (tolerance * this.baselineMs) / rtt));
    // A lane far under its limit says nothing about how far the limit may grow.
    if (gradient === 1 && inFlight < this.limit / 2) return;
    const estimate = this.limit * gradient + Math.sqrt(this.limit);
    const next = this.limit * (1 - smoothing) + estimate * smoothing;
    this.limit = Math.max(minLimit, Math.min(maxLimit, next));
  }
}
