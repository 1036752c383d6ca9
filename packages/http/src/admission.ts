import type { Metrics } from "@saga/observability";
import type { Context, MiddlewareHandler } from "hono";
import { AppError } from "./errors.ts";
import { GradientLimit, type GradientLimitOptions } from "./gradient-limit.ts";
import { preferredWait } from "./prefer.ts";

/**
 * What a request costs while it is admitted. `read` and `write` are separate lanes so that clients
 * polling an order cannot starve the writes, nor writes the reads; `wait` is a long poll while it is
 * held (`Prefer: wait=N` on a route that holds it), which holds nothing but a socket and a timer then and
 * so gets a lane of its own with a high bound.
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
  /**
   * How long a queued request waits for a place before it is shed while the queue is standing (it has
   * not been empty for `queueIntervalMs`: overload); short, so a shed answer is fast.
   */
  queueTimeoutMs: number;
  /**
   * A queue that was empty within this long is a burst, not overload: its requests may wait up to this
   * long for a place (CoDel as Facebook's "Fail at Scale" applies it to request queues). A stall of the
   * event loop (a GC, code still compiling after a start) then costs latency instead of 503s, and a
   * queue that stays full sheds after `queueTimeoutMs`. Equal to `queueTimeoutMs` by default.
   */
  queueIntervalMs?: number;
  /**
   * For this long after the app is made, a queued request may wait `warmUpQueueMs`, burst or standing, and
   * a lane's queue may hold `warmUpMaxQueue`: a process that has just started runs its code for the first
   * times (compiling it), its database's caches are cold, and its queue stands for that, not for overload;
   * a refusal then would be a failure the client did not cause. A full queue still sheds at once. 0 by default.
   * Then, for as long again, both ease down to the lane's own in a straight line (a slow start, as Envoy's
   * for a new host): V8 optimizes a function only after thousands of calls, so a process is still warming
   * when the warm-up ends, and a cliff there refused the requests of the seconds after it.
   */
  warmUpMs?: number;
  /**
   * The most requests a lane's queue holds while it is not standing (it was empty within
   * `queueIntervalMs`: a burst), when more than its `maxQueue`: a burst is judged by how long it waits, not
   * by its count, and a standing queue by `maxQueue` again. A lane without a queue (`maxQueue` 0) has none
   * in a burst either. 0 by default.
   */
  burstMaxQueue?: number;
  /** During the warm-up, how long any queued request may wait (never less than outside it); `queueIntervalMs` by default. */
  warmUpQueueMs?: number;
  /**
   * During the warm-up, the most requests a lane's queue holds, when more than its `maxQueue`: a gateway's
   * burst into a process still compiling is judged by how long it waits, not by its count.
   */
  warmUpMaxQueue?: number;
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
   * For an adaptive lane: whether an answer says something of its backend's latency. A proxy's answers of
   * its own (a 401 to a request without a token, a 429) took none of the backend's time, and a flood of
   * them would teach the bound that the backend answers in microseconds. Every answer by default.
   */
  sampled?: (c: Context) => boolean;
  /**
   * The lane of a request: its kind, and a key when one app serves several independent backends (the
   * gateway: `orders:write`). Undefined admits the request outside any lane (health, readiness, metrics).
   */
  laneOf?: (c: Context) => { kind: LaneKind; key?: string } | undefined;
  /**
   * For a proxy: the request paths whose reads its backend holds for `Prefer: wait=N`
   * (`matchesRoute("/orders/:id")`): only there is such a read a long poll, in the `wait` lane from the
   * start, since the proxy holds it whole. None by default: elsewhere a route answers at once whatever the
   * client prefers, and its reads stay in the `read` lane's bound. The service that holds them reads in
   * the `read` lane and moves into `wait` only to hold (`moveToLane`). Read by the default `laneOf`; an
   * app's own passes its test to `requestLane`.
   */
  longPolls?: (path: string) => boolean;
  /** Mark each refusal with `SHED_HEADER` (a service behind the gateway). */
  markShed?: boolean;
  metrics: Metrics;
};

/** The paths every process serves to its operators: they answer whatever the load. */
const UNMETERED = new Set(["/health", "/ready", "/metrics"]);

const NO_LONG_POLLS = () => false;

/**
 * `Prefer: wait=N` (RFC 7240), N > 0, on a read of a path that holds it (`longPolls`): the client asks
 * to be answered when something changed, or after N s. Read as the routes read it (`preferredWait`), so
 * that every request a proxy's backend may hold counts in this lane; and on those paths only, so that a
 * Prefer on any other read (which is answered at once) cannot take it past the read lane's bound.
 */
const isLongPoll = (c: Context, longPolls: (path: string) => boolean) =>
  (c.req.method === "GET" || c.req.method === "HEAD") &&
  (preferredWait(c.req.header("prefer")) ?? 0) > 0 &&
  longPolls(c.req.path);

/**
 * The default lanes: health and metrics outside them, long polls (on the paths `longPolls` names), reads,
 * and everything else a write.
 */
export function requestLane(
  c: Context,
  longPolls: (path: string) => boolean = NO_LONG_POLLS,
): { kind: LaneKind; key?: string } | undefined {
  if (UNMETERED.has(c.req.path)) return undefined;
  if (isLongPoll(c, longPolls)) return { kind: "wait" };
  return { kind: c.req.method === "GET" || c.req.method === "HEAD" ? "read" : "write" };
}

/**
 * Marks an answer refused by admission control (`admission`), between the services and the gateway: a
 * proxy's adaptive lane backs off when its backend refuses for want of room, and only then (a backend's
 * other 503s, such as the saga backlog's, say nothing of the concurrency it takes). Set by the services'
 * admission (`markShed`); the gateway reads it and removes it.
 */
export const SHED_HEADER = "x-shed";

/** The message of every refusal for want of room; an edge that refuses in front of the gateway says the same. */
export const OVERLOADED_MESSAGE = "overloaded: too many requests in flight; retry later";

type Waiter = { admit: () => void; timer: NodeJS.Timeout };

/** The place an admitted request holds, and how it moves to another lane's (`moveToLane`). */
type Place = { lane: Lane; moveTo: (c: Context, place: Place, kind: LaneKind) => Promise<void> };

const places = new WeakMap<Context, Place>();

/**
 * Moves the request from its lane into `kind`'s (keyed by the kind) for the rest of it, for a route that
 * knows only after its read that it will hold the request: a long poll is a read, bounded by the read
 * lane, until it is held on a PENDING order, and only then costs a place in `wait`. The new place is
 * taken first, shed as any request of that lane would be (this throws the lane's 503 with `Retry-After`);
 * then the old one is given back. Nothing without admission, or for a request outside any lane.
 */
export async function moveToLane(c: Context, kind: LaneKind): Promise<void> {
  const place = places.get(c);
  if (place) await place.moveTo(c, place, kind);
}

/** Why a request was shed: its lane's queue was full, or it waited past its time in the queue. */
type ShedReason = "full" | "timeout";

/** A bounded number of places and a bounded FIFO queue in front of them. */
class Lane {
  inFlight = 0;
  readonly queue: Waiter[] = [];
  /** Since when the queue has held a request without a break (`performance.now()`); undefined when empty. */
  private queuedSince: number | undefined;
  readonly name: string;
  readonly limits: LaneLimits;
  /** In an adaptive lane, what sets the bound. */
  readonly gradient: GradientLimit | undefined;
  constructor(name: string, limits: LaneLimits, adaptive: AdmissionOptions["adaptive"]) {
    this.name = name;
    this.limits = limits;
    // From its floor, as Gradient2 starts low: a proxy that has just started knows nothing of its backend's
    // latency, and a backend that has just started (cold, after a restart of both) takes what it admits
    // itself and no more; answers on time with the lane full raise the bound from there.
    this.gradient =
      adaptive &&
      new GradientLimit({ ...adaptive, maxLimit: limits.maxInFlight, initialLimit: adaptive.minLimit });
  }

  /** The bound in force: `maxInFlight`, or what the latency of an adaptive lane's backend allows. */
  get limit(): number {
    return this.gradient ? this.gradient.limit : this.limits.maxInFlight;
  }

  /** Whether the queue has not been empty for `intervalMs` (overload), rather than within it (a burst). */
  standing(intervalMs: number): boolean {
    return this.queuedSince !== undefined && performance.now() - this.queuedSince >= intervalMs;
  }

  private dequeued(): void {
    if (this.queue.length === 0) this.queuedSince = undefined;
  }

  /**
   * True when admitted now; a promise of admission (true) or of shedding ("timeout") when queued;
   * "full" when the queue is full. A request queued into a burst may wait `intervalMs` (or `timeoutMs` when
   * longer) and the queue may hold `burstQueue`; into a standing queue, `timeoutMs` and `maxQueue`.
   */
  acquire(
    timeoutMs: number,
    intervalMs: number,
    maxQueue: number,
    burstQueue: number,
  ): true | ShedReason | Promise<true | ShedReason> {
    if (this.inFlight < Math.floor(this.limit)) {
      this.inFlight++;
      return true;
    }
    const standing = this.standing(intervalMs);
    const bound = standing || this.limits.maxQueue === 0 ? maxQueue : Math.max(maxQueue, burstQueue);
    if (this.queue.length >= bound) return "full";
    const waitMs = standing ? timeoutMs : Math.max(timeoutMs, intervalMs);
    if (this.queue.length === 0) this.queuedSince = performance.now();
    return new Promise<true | ShedReason>((resolve) => {
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
              this.dequeued();
              resolve("timeout");
            }),
          waitMs,
        ),
      };
      this.queue.push(waiter);
    });
  }

  /** Hands the place to the oldest waiter, or frees it (or drops it, when the bound was lowered). */
  release(): void {
    const next = this.inFlight <= Math.floor(this.limit) ? this.queue.shift() : undefined;
    if (next) {
      this.dequeued();
      next.admit();
    } else this.inFlight--;
  }
}

/**
 * Admission control: a bound on the requests served at once per lane and a short queue in front of it.
 * A request that finds its lane and its queue full (`burstMaxQueue` in a burst, `maxQueue` in a standing
 * queue), or waits longer than its queue allows (`queueIntervalMs` in a burst, `queueTimeoutMs` in a
 * standing queue), is answered 503 with `Retry-After`
 * at once, before any route's work: excess load costs microseconds instead of queueing into timeouts (its
 * body, read first by `bodyLimit`, came with its head in nearly every case; see createBaseApp). A service's
 * bounds are configured from measurement (bench/README.md); a proxy's lanes may adapt to their backend's
 * latency (`adaptive`).
 */
export function admission(opts: AdmissionOptions): MiddlewareHandler {
  const { limits, queueTimeoutMs, retryAfterS, metrics, adaptive, longPolls } = opts;
  const laneOf = opts.laneOf ?? ((c: Context) => requestLane(c, longPolls));
  const queueIntervalMs = opts.queueIntervalMs ?? queueTimeoutMs;
  const warmUpMs = opts.warmUpMs ?? 0;
  const madeAt = performance.now();
  let warm = warmUpMs <= 0;
  // During the warm-up a standing queue waits as a burst does, both never less than outside it.
  const warmUpIntervalMs = Math.max(opts.warmUpQueueMs ?? 0, queueIntervalMs);
  const warmUpTimeoutMs = Math.max(warmUpIntervalMs, queueTimeoutMs);
  const warmUpMaxQueue = opts.warmUpMaxQueue ?? 0;
  const burstMaxQueue = opts.burstMaxQueue ?? 0;
  /** How much of the warm-up's allowance is left: 1 during it, down to 0 over as long again after it. */
  const warmth = () => {
    const past = performance.now() - madeAt - warmUpMs;
    if (past >= warmUpMs) warm = true;
    return past <= 0 ? 1 : Math.max(0, 1 - past / warmUpMs);
  };
  const ease = (from: number, to: number, left: number) => to + (from - to) * left;
  const lanes = new Map<string, Lane>();
  const laneFor = (kind: LaneKind, key: string) => {
    let lane = lanes.get(key);
    if (!lane) {
      // Long polls keep their fixed bound: a held request's time is its wait for a decision, not queueing
      // in its backend, and as latency it would hold their lane at its floor.
      lane = new Lane(key, limits[kind], kind === "wait" ? undefined : adaptive);
      lanes.set(key, lane);
      metrics.admissionLimit.set({ lane: key }, lane.limit);
    }
    return lane;
  };
  // One error for every shed request, made once: an Error captures a stack trace when it is made, and at
  // thousands of sheds a second that was the largest cost of a refusal in the gateway's profile after the
  // socket write (4% of its CPU). Its stack is never shown: the error handler answers an AppError as JSON.
  const overloaded = new AppError("UNAVAILABLE", OVERLOADED_MESSAGE, {
    retryAfterS,
  });
  const shed = (c: Context, lane: Lane, reason: ShedReason) => {
    metrics.admissionShed.inc({ lane: lane.name, reason });
    if (opts.markShed) c.header(SHED_HEADER, "admission");
    return overloaded;
  };

  /** Takes a place in `lane`: at once (undefined), once queued (a promise), or throws its 503. */
  const enter = (c: Context, lane: Lane): Promise<void> | undefined => {
    // The clock is read only until the warm-up and its easing are over.
    const left = warm ? 0 : warmth();
    const admitted =
      left === 0
        ? lane.acquire(queueTimeoutMs, queueIntervalMs, lane.limits.maxQueue, burstMaxQueue)
        : lane.acquire(
            ease(warmUpTimeoutMs, queueTimeoutMs, left),
            ease(warmUpIntervalMs, queueIntervalMs, left),
            Math.round(ease(Math.max(lane.limits.maxQueue, warmUpMaxQueue), lane.limits.maxQueue, left)),
            burstMaxQueue,
          );
    if (typeof admitted === "string") throw shed(c, lane, admitted);
    if (admitted === true) {
      metrics.admissionInFlight.inc({ lane: lane.name });
      return undefined;
    }
    return queued(c, lane, admitted);
  };
  const queued = async (c: Context, lane: Lane, admitted: Promise<true | ShedReason>) => {
    metrics.admissionQueued.inc({ lane: lane.name });
    const outcome = await admitted;
    metrics.admissionQueued.dec({ lane: lane.name });
    if (outcome !== true) throw shed(c, lane, outcome);
    metrics.admissionInFlight.inc({ lane: lane.name });
  };
  const leave = (lane: Lane) => {
    metrics.admissionInFlight.dec({ lane: lane.name });
    lane.release();
  };
  const moveTo = async (c: Context, place: Place, kind: LaneKind) => {
    const to = laneFor(kind, kind);
    if (to === place.lane) return;
    await enter(c, to);
    leave(place.lane);
    place.lane = to;
  };

  return async function admission(c, next) {
    const which = laneOf(c);
    if (!which) return next();
    const lane = laneFor(which.kind, which.key ?? which.kind);
    const queuing = enter(c, lane);
    if (queuing) await queuing;
    const place: Place = { lane, moveTo };
    places.set(c, place);
    const started = performance.now();
    try {
      await next();
      const backendShed = c.res.status === 503 && c.res.headers.has("retry-after");
      // A request moved to another lane (held) says nothing more of its first lane's backend.
      if (lane.gradient && place.lane === lane) {
        if (!backendShed && (opts.sampled?.(c) ?? true))
          lane.gradient.sample(performance.now() - started, lane.inFlight);
        else if (c.res.headers.get(SHED_HEADER) === "admission") lane.gradient.drop();
        metrics.admissionLimit.set({ lane: lane.name }, lane.limit);
      }
      // Between the services and the gateway only: a proxy does not pass it on.
      if (!opts.markShed) c.res.headers.delete(SHED_HEADER);
    } finally {
      leave(place.lane);
    }
  };
}
