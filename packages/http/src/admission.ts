import type { Metrics } from "@saga/observability";
import type { Context, MiddlewareHandler } from "hono";
import { AppError } from "./errors.ts";
import { GradientLimit, type GradientLimitOptions } from "./gradient-limit.ts";

/**
 * What a request costs while it is admitted. `read` and `write` are separate lanes so that clients
 * polling an order cannot starve the writes, nor writes the reads; `wait` is a long poll
 * (`Prefer: wait=N`), which holds nothing while it waits and so gets a lane of its own with a high bound.
 */
export type LaneKind = "read" | "write" | "wait";

export type LaneLimits = {
  /** Requests served at once in one lane. */
  maxInFlight: number;
  /** Requests that may wait for a place; past it, a 503 at once. */
  maxQueue: number;
};

export type AdmissionOptions = {
  limits: Record<LaneKind, LaneLimits>;
  /** How long a queued request waits for a place before it is shed; short, so a shed answer is fast. */
  queueTimeoutMs: number;
  /** Sent as `Retry-After` with every shed request. */
  retryAfterS: number;
  /**
   * For a proxy: a lane's bound follows the latency of what is behind it (`GradientLimit`, between
   * `minLimit` and the lane's `maxInFlight`). When the backend slows down because requests queue in it,
   * the bound falls, and the excess is shed here in microseconds instead of queueing into the backend's
   * event loop and then being shed there. An answer that is itself a 503 with `Retry-After` (the backend
   * shedding, for a reason of its own such as the saga backlog) is not a latency sample.
   */
  adaptive?: Omit<GradientLimitOptions, "maxLimit" | "initialLimit">;
  /**
   * The lane of a request: its kind, and a key when one app serves several independent backends (the
   * gateway: `orders:write`). Undefined admits the request outside any lane (health, readiness, metrics).
   */
  laneOf?: (c: Context) => { kind: LaneKind; key?: string } | undefined;
  metrics: Metrics;
};

/** The paths every process serves to its operators: they answer whatever the load. */
const UNMETERED = new Set(["/health", "/ready", "/metrics"]);

/** `Prefer: wait=N` (RFC 7240): the client asks to be answered when something changed, or after N s. */
export const isLongPoll = (c: Context) =>
  (c.req.method === "GET" || c.req.method === "HEAD") && /\bwait=\d/.test(c.req.header("prefer") ?? "");

/** The default lanes: health and metrics outside them, long polls, reads, and everything else a write. */
export function requestLane(c: Context): { kind: LaneKind; key?: string } | undefined {
  if (UNMETERED.has(c.req.path)) return undefined;
  if (isLongPoll(c)) return { kind: "wait" };
  return { kind: c.req.method === "GET" || c.req.method === "HEAD" ? "read" : "write" };
}

type Waiter = { admit: () => void; timer: NodeJS.Timeout };

/** A bounded number of places and a bounded FIFO queue in front of them. */
class Lane {
  inFlight = 0;
  readonly queue: Waiter[] = [];
  readonly name: string;
  readonly limits: LaneLimits;
  /** In an adaptive lane, what sets the bound. */
  readonly gradient: GradientLimit | undefined;
  constructor(name: string, limits: LaneLimits, adaptive: AdmissionOptions["adaptive"]) {
    this.name = name;
    this.limits = limits;
    this.gradient = adaptive && new GradientLimit({ ...adaptive, maxLimit: limits.maxInFlight });
  }

  /** The bound in force: `maxInFlight`, or what the latency of an adaptive lane's backend allows. */
  get limit(): number {
    return this.gradient ? this.gradient.limit : this.limits.maxInFlight;
  }

  /** True when admitted now; a promise of admission (true) or shedding (false) when queued; false when full. */
  acquire(queueTimeoutMs: number): boolean | Promise<boolean> {
    if (this.inFlight < Math.floor(this.limit)) {
      this.inFlight++;
      return true;
    }
    if (this.queue.length >= this.limits.maxQueue) return false;
    return new Promise<boolean>((resolve) => {
      const waiter: Waiter = {
        admit: () => {
          clearTimeout(waiter.timer);
          resolve(true);
        },
        // Shed in the check phase, after this turn's I/O: on a loop running late the timer fires in the same
        // turn as the answers that free places, and a waiter they can admit must not be shed first.
        timer: setTimeout(
          () =>
            setImmediate(() => {
              const at = this.queue.indexOf(waiter);
              if (at === -1) return;
              this.queue.splice(at, 1);
              resolve(false);
            }),
          queueTimeoutMs,
        ),
      };
      this.queue.push(waiter);
    });
  }

  /** Hands the place to the oldest waiter, or frees it (or drops it, when the bound was lowered). */
  release(): void {
    const next = this.inFlight <= Math.floor(this.limit) ? this.queue.shift() : undefined;
    if (next) next.admit();
    else this.inFlight--;
  }
}

/**
 * Admission control: a bound on the requests served at once per lane and a short queue in front of it.
 * A request that finds its lane and its queue full, or waits longer than `queueTimeoutMs`, is answered
 * 503 with `Retry-After` at once, before its body is read: excess load costs microseconds instead of
 * queueing into timeouts. A service's bounds are configured from measurement (bench/README.md); a
 * proxy's lanes may adapt to their backend's latency (`adaptive`).
 */
export function admission(opts: AdmissionOptions): MiddlewareHandler {
  const { limits, queueTimeoutMs, retryAfterS, laneOf = requestLane, metrics, adaptive } = opts;
  const lanes = new Map<string, Lane>();
  const laneFor = (kind: LaneKind, key: string) => {
    let lane = lanes.get(key);
    if (!lane) {
      lane = new Lane(key, limits[kind], adaptive);
      lanes.set(key, lane);
      metrics.admissionLimit.set({ lane: key }, lane.limit);
    }
    return lane;
  };
  const shed = (lane: Lane) => {
    metrics.admissionShed.inc({ lane: lane.name });
    return new AppError("UNAVAILABLE", "overloaded: too many requests in flight; retry later", {
      retryAfterS,
    });
  };

  return async function admission(c, next) {
    const which = laneOf(c);
    if (!which) return next();
    const lane = laneFor(which.kind, which.key ?? which.kind);
    const admitted = lane.acquire(queueTimeoutMs);
    if (admitted === false) throw shed(lane);
    if (admitted !== true) {
      metrics.admissionQueued.inc({ lane: lane.name });
      const ok = await admitted;
      metrics.admissionQueued.dec({ lane: lane.name });
      if (!ok) throw shed(lane);
    }
    metrics.admissionInFlight.inc({ lane: lane.name });
    const started = performance.now();
    try {
      await next();
      const backendShed = c.res.status === 503 && c.res.headers.has("retry-after");
      if (lane.gradient && !backendShed) {
        lane.gradient.sample(performance.now() - started, lane.inFlight);
        metrics.admissionLimit.set({ lane: lane.name }, lane.limit);
      }
    } finally {
      metrics.admissionInFlight.dec({ lane: lane.name });
      lane.release();
    }
  };
}
