import type { Metrics } from "@saga/observability";
import type { Context, MiddlewareHandler } from "hono";
import { AppError } from "./errors.ts";

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
   * For a proxy: a lane's bound follows what is behind it (AIMD, as Netflix's concurrency limits do).
   * Each answer that is itself a 503 with `Retry-After` (the backend shedding) lowers it by 10%, down to
   * `minInFlight`; each other answer under 500 raises it by 1/bound, up to `maxInFlight`. So while a
   * backend sheds, most of its excess is shed here, in microseconds, and never reaches its event loop.
   */
  adaptive?: { minInFlight: number };
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
  /** The bound in force: `maxInFlight`, or less while an adaptive lane's backend sheds. */
  limit: number;
  constructor(name: string, limits: LaneLimits) {
    this.name = name;
    this.limits = limits;
    this.limit = limits.maxInFlight;
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
        timer: setTimeout(() => {
          this.queue.splice(this.queue.indexOf(waiter), 1);
          resolve(false);
        }, queueTimeoutMs),
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
 * queueing into timeouts. https://github.com/Netflix/concurrency-limits names the idea; the bounds here
 * are configured from measurement (bench/README.md), not adapted.
 */
export function admission(opts: AdmissionOptions): MiddlewareHandler {
  const { limits, queueTimeoutMs, retryAfterS, laneOf = requestLane, metrics, adaptive } = opts;
  const lanes = new Map<string, Lane>();
  const laneFor = (kind: LaneKind, key: string) => {
    let lane = lanes.get(key);
    if (!lane) {
      lane = new Lane(key, limits[kind]);
      lanes.set(key, lane);
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
    try {
      await next();
      if (adaptive) {
        const backendShed = c.res.status === 503 && c.res.headers.has("retry-after");
        if (backendShed) lane.limit = Math.max(adaptive.minInFlight, lane.limit * 0.9);
        else if (c.res.status < 500)
          lane.limit = Math.min(lane.limits.maxInFlight, lane.limit + 1 / Math.max(1, lane.limit));
      }
    } finally {
      metrics.admissionInFlight.dec({ lane: lane.name });
      lane.release();
    }
  };
}
