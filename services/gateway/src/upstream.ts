import { AppError, HEADROOM_HEADER, parseHeadroom } from "@saga/http";
import { type Logger, traceIdOf } from "@saga/observability";
import { Pool } from "undici";
import type { GatewayMetrics, UpstreamOutcome } from "./metrics.ts";

export type UpstreamOptions = {
  /** The upstream's name in logs, metrics and error messages: `user-service`. */
  name: string;
  /** One origin per instance: `http://127.0.0.1:8081`. */
  origins: readonly string[];
  connectTimeoutMs: number;
  /** Connections kept to each instance for writes, and as many again for reads (GET, HEAD). */
  connections: number;
  /**
   * Connections to each instance for requests it may hold open (`Prefer: wait`), apart from the others,
   * so that held reads never queue the writes behind them.
   */
  heldConnections: number;
  healthPath: string;
  healthIntervalMs: number;
  /**
   * While no request has been sent to the upstream since the last round of checks and every instance is
   * in rotation with nothing against it, rounds come this far apart instead (Envoy's
   * `no_traffic_interval`): at idle the checks are most of what wakes the gateway and the instances.
   */
  healthNoTrafficIntervalMs: number;
  /** A check that takes longer is not a failure (the instance is busy), unless it lasts `stalledAfterMs`. */
  healthTimeoutMs: number;
  /** Health checks answering non-2xx in a row that take an instance out; a refused connection does at once. */
  unhealthyThreshold: number;
  /** Checks that time out for this long in a row (an instance that accepts but never answers) eject it. */
  stalledAfterMs: number;
  /** Responses in a row that are 5xx without Retry-After (a shed 503 is not a failure) that eject it. */
  consecutive5xx: number;
  /**
   * How long an instance's report of no headroom (`HEADROOM_HEADER`: it would refuse new work) is
   * believed without a newer answer; past it, one request goes through and brings a fresh report.
   */
  headroomTtlMs: number;
  /** The Retry-After of a request refused at the edge for want of headroom. */
  retryAfterS: number;
  /**
   * The largest response body read from an instance: every answer is read whole into memory, so a larger
   * one ends its connection and is a 502, not an unbounded buffer.
   */
  maxResponseBytes: number;
  metrics: GatewayMetrics;
  logger: Logger;
  /**
   * Sent with every request, and with the health checks: the gateway's internal credential. A service
   * answers a health check that carries another credential than its own with a 401 (internalCredential).
   */
  headers?: Record<string, string>;
};

export type UpstreamRequest = {
  method: string;
  /** Path and query string, sent unchanged. */
  path: string;
  headers: Record<string, string>;
  body?: Uint8Array | undefined;
};

export type UpstreamResponse = {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
  /** `host:port` of the instance that answered. */
  target: string;
};

export type SendOptions = {
  /** For the whole call, retry included, until the response body is read. */
  timeoutMs: number;
  /** Aborts the call when the client has gone away. */
  clientSignal?: AbortSignal | undefined;
  /**
   * How long the upstream may hold the request open (`Prefer: wait`): it goes over the held connections,
   * with this much more time. Once the gateway drains, it is asked again without its Prefer.
   */
  holdMs?: number;
  /**
   * New work that the instance bounds and reports headroom for (`POST /orders`): refused here with 503 +
   * Retry-After, without a round trip, while every instance in rotation reports none.
   */
  needsHeadroom?: boolean;
};

type Instance = {
  origin: string;
  target: string;
  /** Writes; reads and held reads have pools of their own so that neither queues behind the other. */
  pool: Pool;
  readPool: Pool;
  heldPool: Pool;
  /** One connection for the health checks, which never queue behind requests. */
  checkPool: Pool;
  /** Held calls on `heldPool` now: at `heldConnections`, none more is sent to it (`pick`). */
  heldInFlight: number;
  healthy: boolean;
  /** Its last health check was refused (401): the instance takes another INTERNAL_SECRET than the gateway's. */
  refusesCredential: boolean;
  failedChecks: number;
  /** Since when its health checks have been timing out without a break; undefined while they answer. */
  silentSince: number | undefined;
  /** 5xx in a row that were not shedding. */
  failedResponses: number;
  /**
   * New work it would admit, as its last answer reported (less what was sent to it since); undefined
   * until it reports any. `headroomAt` is when that answer came (`performance.now()`).
   *
   * Kept per instance, though every order-service instance sizes its headroom by the same system-wide
   * backlog: what the edge refuses must be what the instances would refuse, and each refuses by its own
   * view of that backlog (its last count, the orders it accepted since, the sagas it heard of), which
   * differ: one still warming up admits to its ceiling while another is at its bound, and one whose
   * notifications stopped refuses early. A single headroom taken from whichever instance answered last
   * would let any one of them refuse new orders at the edge for all, and would flip with each answer. Per
   * instance, new work goes to those that report room, and is refused here only when none does. The
   * cost: between their answers, each instance's report is spent on its own, so up to N times one
   * report's headroom may be sent; each instance still refuses the excess itself (a round trip, not a
   * wrong answer).
   */
  headroom: number | undefined;
  headroomAt: number;
  /** A request for new work is on its way to ask again, a report of none having outlived its belief. */
  probing: boolean;
};

// A failure to connect means the request never left: it is safe to send again whatever the method.
// https://undici.nodejs.org/#/docs/api/Errors
const CONNECT_ERRORS = new Set([
  "ECONNREFUSED",
  "UND_ERR_CONNECT_TIMEOUT",
  "ENOTFOUND",
  "EAI_AGAIN",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "EHOSTDOWN",
]);
// The gateway itself could not open a socket (out of file descriptors, kernel memory or local ports):
// the request never left, and no instance is at fault, so none is ejected and none is tried instead.
const LOCAL_ERRORS = new Set(["EMFILE", "ENFILE", "ENOBUFS", "ENOMEM", "EADDRNOTAVAIL"]);
// The connection broke after the request may have been sent: only a safe method may be sent again.
const RESET_ERRORS = new Set(["ECONNRESET", "EPIPE", "UND_ERR_SOCKET", "UND_ERR_CLOSED"]);
const SAFE_METHODS = new Set(["GET", "HEAD"]);

/**
 * One upstream service: an undici Pool per instance, round-robin over the instances in rotation,
 * active health checks (`GET /health` every interval, less often while idle) and ejection on real failures only, as Envoy's
 * outlier detection does: a refused connection takes the instance out at once; so do
 * `unhealthyThreshold` health checks answering non-2xx, `consecutive5xx` failed responses (a 503 with
 * `Retry-After` is an instance shedding load, alive, and does not count) or health checks that time out
 * for `stalledAfterMs` without a break. A slow health check alone is a busy instance, not a dead one.
 * An instance comes back with its first passing health check. When none is in rotation the upstream is
 * in panic mode (Envoy's panic threshold): requests go round-robin to every instance, since a wrong
 * verdict costs less than refusing everything. Instances start out of rotation until `start()`.
 *
 * An instance that bounds some new work of its own (the order-service's saga backlog) reports on every
 * answer how much it would still admit (`HEADROOM_HEADER`); while every instance reports none, a request
 * for such work (`needsHeadroom`) is refused here with 503 + Retry-After instead of being sent to be
 * refused there. A report is believed for `headroomTtlMs`; past it, a single request per instance goes
 * through to bring a fresh one, and the rest are refused until it is answered (or fails).
 */
export function createUpstream(opts: UpstreamOptions) {
  const { name, metrics, logger } = opts;
  // HTTP/1.1 only, which undici 8 no longer keeps to where TLS offers HTTP/2: `connections` bounds the
  // requests an instance is sent at once, and held reads keep off the others' connections, only while a
  // connection carries one request at a time.
  const http1 = { allowH2: false };
  // undici ends a response past this many bytes with UND_ERR_RES_EXCEEDED_MAX_SIZE, destroying its socket.
  const bounded = (connections: number) => ({
    ...http1,
    connections,
    connect: { timeout: opts.connectTimeoutMs },
    maxResponseSize: opts.maxResponseBytes,
  });
  const instances: Instance[] = opts.origins.map((origin) => ({
    origin,
    target: new URL(origin).host,
    pool: new Pool(origin, bounded(opts.connections)),
    readPool: new Pool(origin, bounded(opts.connections)),
    heldPool: new Pool(origin, bounded(opts.heldConnections)),
    checkPool: new Pool(origin, { ...http1, connections: 1, connect: { timeout: opts.connectTimeoutMs } }),
    heldInFlight: 0,
    healthy: false,
    refusesCredential: false,
    failedChecks: 0,
    silentSince: undefined,
    failedResponses: 0,
    headroom: undefined,
    headroomAt: 0,
    probing: false,
  }));
  let next = 0;
  let timer: NodeJS.Timeout | undefined;
  let closed = false;
  // Shutting down (`drain`): requests are no longer held; once cut off, none is waited for.
  let draining = false;
  let cutOff = false;
  /** How to end each call waiting for its answer, and each held one, for `drain`. */
  const calls = new Set<(why: Ending) => void>();
  const heldCalls = new Set<(why: Ending) => void>();
  /** A request was sent since the last round of checks began. */
  let sentSinceCheck = false;
  let checkedAt = 0;

  const healthyCount = () => instances.filter((i) => i.healthy).length;
  metrics.healthyInstances.set({ upstream: name }, 0);

  function setHealthy(instance: Instance, healthy: boolean, cause: "active" | "passive", why?: string) {
    if (instance.healthy === healthy) return;
    instance.healthy = healthy;
    metrics.healthyInstances.set({ upstream: name }, healthyCount());
    if (healthy) {
      logger.info({ upstream: name, target: instance.target }, "instance in rotation");
    } else {
      metrics.ejections.inc({ upstream: name, target: instance.target, cause });
      logger.warn({ upstream: name, target: instance.target, cause, why }, "instance out of rotation");
    }
  }

  /** The instance said that it would refuse new work, and that answer is too old to believe. */
  const stale = (instance: Instance) =>
    instance.headroom !== undefined &&
    instance.headroom <= 0 &&
    performance.now() - instance.headroomAt >= opts.headroomTtlMs;

  /**
   * The instance said, recently enough to believe, that it would refuse new work; once that is too old,
   * one request goes to ask again, and until its answer the others are refused as before.
   */
  const full = (instance: Instance) =>
    instance.headroom !== undefined && instance.headroom <= 0 && (!stale(instance) || instance.probing);

  // Made once, as the admission lanes' refusal is (packages/http/src/admission.ts): an Error captures a stack.
  const atBound = new AppError("UNAVAILABLE", `${name} is at its bound for new work; retry later`, {
    retryAfterS: opts.retryAfterS,
  });

  /** When new work was last asked for (`refusal`). */
  let newWorkAt = Number.NEGATIVE_INFINITY;

  /**
   * The refusal of new work while every instance that would be tried reports no headroom for it. A report
   * older than its belief, when no new work was asked for since it went stale, is forgotten: it describes a
   * moment long past, not a demand still being refused, and believed it turned the first burst after a
   * quiet spell away at the edge (all but the one order sent to ask again; or, on an old report of some
   * headroom, all but that many) however idle the order-service had become. Under sustained demand new
   * work is asked for all the time, and a stale report is asked again by one order, as `full` says.
   */
  function refusal(): AppError | undefined {
    const now = performance.now();
    if (now - newWorkAt >= opts.headroomTtlMs)
      for (const instance of instances)
        if (now - instance.headroomAt >= opts.headroomTtlMs) instance.headroom = undefined;
    newWorkAt = now;
    const panic = healthyCount() === 0;
    if (!instances.every((i) => full(i) || !(i.healthy || panic))) return undefined;
    metrics.headroomShed.inc({ upstream: name });
    return atBound;
  }

  // A held read that no instance has a held connection free for: undici would queue it until one frees,
  // a whole wait later, and send it with only the plain timeout left of its deadline, to be held again
  // past it (a 504 after N + the timeout, which the wait lane's bound let in for nothing).
  const heldFull = new AppError(
    "UNAVAILABLE",
    `${name} has no connection free for a held read; retry later`,
    { retryAfterS: opts.retryAfterS },
  );

  /**
   * The next instance in rotation after the last one picked, skipping `exclude` (and, for new work, those
   * that report no headroom; for a held read, those whose held connections are all in use); in panic mode
   * (none in rotation) the next of all of them.
   */
  function pick(exclude?: Instance, needsHeadroom = false, held = false): Instance | undefined {
    const panic = healthyCount() === 0;
    for (let i = 0; i < instances.length; i++) {
      const index = (next + i) % instances.length;
      const instance = instances[index];
      if (
        instance &&
        (panic || instance.healthy) &&
        instance !== exclude &&
        !(needsHeadroom && full(instance)) &&
        !(held && instance.heldInFlight >= opts.heldConnections)
      ) {
        next = (index + 1) % instances.length;
        if (panic) metrics.panicRequests.inc({ upstream: name });
        return instance;
      }
    }
    return undefined;
  }

  /** Counts a response: a run of real 5xx ejects the instance; anything else ends the run. */
  function observe(instance: Instance, status: number, retryAfter: unknown) {
    const shed = status === 503 && retryAfter !== undefined;
    if (status < 500 || shed) {
      instance.failedResponses = 0;
      return;
    }
    instance.failedResponses++;
    if (instance.failedResponses >= opts.consecutive5xx) {
      instance.failedResponses = 0;
      setHealthy(instance, false, "passive", `${opts.consecutive5xx} responses in a row answered 5xx`);
    }
  }

  async function check(instance: Instance): Promise<void> {
    let refused = false;
    let why: string;
    const timeout = AbortSignal.timeout(opts.healthTimeoutMs);
    try {
      const res = await instance.checkPool.request({
        method: "GET",
        path: opts.healthPath,
        headers: opts.headers,
        signal: timeout,
      });
      await res.body.dump();
      instance.silentSince = undefined;
      // Alive, but every request sent to it would be refused so: out at once, as a refused connection.
      instance.refusesCredential = res.statusCode === 401;
      refused = instance.refusesCredential;
      if (res.statusCode >= 200 && res.statusCode < 300) {
        instance.failedChecks = 0;
        setHealthy(instance, true, "active");
        return;
      }
      why = refused
        ? "health check answered 401: the instance refuses the gateway's internal credential"
        : `health check answered ${res.statusCode}`;
    } catch (err) {
      if (closed) return;
      // No answer: whether it takes the credential is no longer known, and `/ready` says it is not healthy.
      instance.refusesCredential = false;
      if (timeout.aborted) {
        // Busy, or dead? Only a silence that lasts says dead: a saturated event loop answers late.
        metrics.healthCheckTimeouts.inc({ upstream: name, target: instance.target });
        instance.silentSince ??= performance.now() - opts.healthTimeoutMs;
        const silentMs = Math.round(performance.now() - instance.silentSince);
        if (silentMs >= opts.stalledAfterMs)
          setHealthy(instance, false, "active", `no answer to health checks for ${silentMs} ms`);
        return;
      }
      instance.silentSince = undefined;
      const code = errorCode(err) ?? "";
      // The gateway's own shortage says nothing of the instance.
      if (LOCAL_ERRORS.has(code)) return;
      refused = CONNECT_ERRORS.has(code);
      why = `health check failed: ${(err as Error).message}`;
    }
    if (closed) return;
    instance.failedChecks++;
    if (refused || instance.failedChecks >= opts.unhealthyThreshold)
      setHealthy(instance, false, "active", why);
  }

  function checkAll(): Promise<void> {
    sentSinceCheck = false;
    checkedAt = performance.now();
    return Promise.all(instances.map(check)).then(() => {});
  }

  /**
   * A round that can wait for `healthNoTrafficIntervalMs`: nothing was sent since the last one and no
   * instance is suspect. What an idle instance could hide meanwhile, a request finds at once: a refused
   * connection ejects the instance and the request goes to another (`send`), and the next round follows
   * after `healthIntervalMs`, since there was traffic.
   */
  const idle = () =>
    !sentSinceCheck &&
    performance.now() - checkedAt < opts.healthNoTrafficIntervalMs &&
    instances.every((i) => i.healthy && i.failedChecks === 0 && i.silentSince === undefined);

  function schedule() {
    timer = setTimeout(async () => {
      if (!idle()) await checkAll();
      if (!closed) schedule();
    }, opts.healthIntervalMs);
    // The health checks alone never keep the process alive.
    timer.unref();
  }

  function outcomeOf(
    err: unknown,
    endedBy: Ending | undefined,
    clientSignal: AbortSignal | undefined,
  ): UpstreamOutcome {
    if (endedBy === "timeout") return "timeout";
    if (endedBy) return "shutdown";
    if (clientSignal?.aborted) return "canceled";
    const code = errorCode(err) ?? "";
    if (CONNECT_ERRORS.has(code)) return "connect_error";
    if (LOCAL_ERRORS.has(code)) return "local_error";
    if (RESET_ERRORS.has(code)) return "reset";
    if (code === "UND_ERR_HEADERS_TIMEOUT" || code === "UND_ERR_BODY_TIMEOUT") return "timeout";
    if (code === "UND_ERR_RES_EXCEEDED_MAX_SIZE") return "too_large";
    return "error";
  }

  function failure(outcome: UpstreamOutcome, method: string, timeoutMs: number, cause: unknown): AppError {
    switch (outcome) {
      case "shutdown":
        return shuttingDown(method, true, cause);
      case "timeout":
        return new AppError(
          "GATEWAY_TIMEOUT",
          `${name} did not answer within ${timeoutMs} ms${unknownOutcome(method)}`,
          {
            cause,
          },
        );
      case "connect_error":
        return new AppError("BAD_GATEWAY", `${name} is unreachable`, { cause });
      case "local_error":
        return new AppError(
          "UNAVAILABLE",
          `the gateway could not open a connection to ${name} (${errorCode(cause)}): nothing was sent; retry`,
          { cause, retryAfterS: opts.retryAfterS },
        );
      case "reset":
        return new AppError("BAD_GATEWAY", `${name} closed the connection${unknownOutcome(method)}`, {
          cause,
        });
      case "canceled":
        return new AppError("BAD_GATEWAY", "the client canceled the request", { cause });
      case "too_large":
        return new AppError(
          "BAD_GATEWAY",
          `${name} answered more than ${opts.maxResponseBytes} bytes${unknownOutcome(method)}`,
          { cause },
        );
      default:
        // Mostly a malformed or over-long answer (a 204 with a body): the request was sent, and may have
        // been applied.
        return new AppError("BAD_GATEWAY", `${name} failed${unknownOutcome(method)}`, { cause });
    }
  }

  /**
   * What a write's 502 or 504 adds when it reached the upstream and got no answer, or none that could be
   * read: it may have been applied (the API document says so of both statuses), so the client sends it
   * again with its key, not anew. A read adds nothing: it changed nothing.
   */
  function unknownOutcome(method: string): string {
    return SAFE_METHODS.has(method)
      ? ""
      : ": the request may have been applied (send it again with the same Idempotency-Key)";
  }

  /**
   * A request the drain ended (`sent`: still waiting for its answer) or refused (not sent). One that did
   * nothing upstream, a read or one never sent, is a 503 + Retry-After: come back. A write that was sent
   * may have been applied, so it is answered as one the upstream did not answer in time, a 504 without
   * Retry-After (the API document's 504: its outcome is unknown), never as a 503, which says nothing was
   * done.
   */
  function shuttingDown(method: string, sent: boolean, cause?: unknown): ShutdownError {
    if (!sent)
      return new ShutdownError(
        "UNAVAILABLE",
        `the gateway is shutting down and did not send the request to ${name}; retry`,
        { retryAfterS: opts.retryAfterS },
      );
    if (SAFE_METHODS.has(method))
      return new ShutdownError(
        "UNAVAILABLE",
        `the gateway is shutting down and ${name} had not answered; retry`,
        { cause, retryAfterS: opts.retryAfterS },
      );
    return new ShutdownError(
      "GATEWAY_TIMEOUT",
      `the gateway is shutting down and ${name} had not answered: the request may have been applied (send it again with the same Idempotency-Key)`,
      { cause },
    );
  }

  /**
   * One call to the upstream (`send`, once it has chosen the request and the time it gets): an attempt at
   * the next instance, and another for a failure that allows it. Ended by `drain` with `Released` (a held
   * call) or a `ShutdownError`.
   */
  async function call(
    request: UpstreamRequest,
    { timeoutMs, clientSignal, held, needsHeadroom }: CallOptions,
  ): Promise<UpstreamResponse> {
    const refused = needsHeadroom ? refusal() : undefined;
    if (refused) throw refused;
    if (cutOff) throw shuttingDown(request.method, false);
    sentSinceCheck = true;
    // One controller and one timer cleared with the answer. `AbortSignal.timeout` keeps its timer until it
    // fires, seconds after the answer, and then builds a DOMException; with `AbortSignal.any` it was 2% of
    // the gateway's CPU forwarding the clients' reads.
    const controller = new AbortController();
    let endedBy: Ending | undefined;
    const end = (why: Ending) => {
      if (controller.signal.aborted) return;
      endedBy = why;
      controller.abort(
        new Error(
          why === "timeout"
            ? `${name} did not answer within ${timeoutMs} ms`
            : why === "release"
              ? "the gateway is shutting down: the request is no longer held"
              : "the gateway is shutting down",
        ),
      );
    };
    const timer = setTimeout(() => end("timeout"), timeoutMs);
    const clientGone = () => controller.abort(clientSignal?.reason);
    if (clientSignal?.aborted) clientGone();
    else clientSignal?.addEventListener("abort", clientGone, { once: true });
    calls.add(end);
    if (held) heldCalls.add(end);
    const { signal } = controller;
    let failed: Instance | undefined;
    let lastFailure: AppError | undefined;
    try {
      for (let attempt = 1; attempt <= 2; attempt++) {
        const instance = pick(failed, needsHeadroom, held);
        if (!instance) {
          if (held && !lastFailure) {
            metrics.heldShed.inc({ upstream: name });
            throw heldFull;
          }
          break;
        }
        // The one request sent past a stale report of no headroom: its answer brings a fresh one.
        const probe = needsHeadroom && stale(instance);
        if (probe) instance.probing = true;
        // Spent until the next report, so that a burst does not all pass on one report of headroom.
        let spent = false;
        if (needsHeadroom && instance.headroom !== undefined) {
          instance.headroom--;
          spent = true;
        }
        const stop = (held ? metrics.upstreamHeldDuration : metrics.upstreamDuration).startTimer({
          upstream: name,
        });
        const count = (outcome: UpstreamOutcome) => {
          stop({ outcome });
          metrics.upstreamRequests.inc({ upstream: name, target: instance.target, outcome });
        };
        if (held) instance.heldInFlight++;
        try {
          const pool = held
            ? instance.heldPool
            : SAFE_METHODS.has(request.method)
              ? instance.readPool
              : instance.pool;
          const res = await pool.request({
            method: request.method,
            path: request.path,
            headers: { ...request.headers, ...opts.headers },
            body: request.body,
            signal,
          });
          const body = Buffer.from(await res.body.arrayBuffer());
          const headroom = parseHeadroom(res.headers[HEADROOM_HEADER]);
          if (headroom !== undefined) {
            instance.headroom = headroom;
            instance.headroomAt = performance.now();
          }
          count(`${Math.min(Math.floor(res.statusCode / 100), 5)}xx` as UpstreamOutcome);
          observe(instance, res.statusCode, res.headers["retry-after"]);
          return { status: res.statusCode, headers: res.headers, body, target: instance.target };
        } catch (err) {
          const outcome = outcomeOf(err, endedBy, clientSignal);
          count(outcome);
          if (endedBy === "release") throw new Released();
          if (outcome === "connect_error" || outcome === "local_error") {
            if (outcome === "connect_error") setHealthy(instance, false, "passive", (err as Error).message);
            // It never got the request: what it reported is still there to spend.
            if (spent && instance.headroom !== undefined) instance.headroom++;
          }
          // A reset is a failure like a 5xx; a timeout is not (the instance may only be busy).
          if (outcome === "reset") observe(instance, 502, undefined);
          lastFailure = failure(outcome, request.method, timeoutMs, err);
          const retriable =
            outcome === "connect_error" || (outcome === "reset" && SAFE_METHODS.has(request.method));
          if (!retriable) throw lastFailure;
          logger.warn(
            {
              upstream: name,
              target: instance.target,
              outcome,
              method: request.method,
              path: request.path,
              traceId: traceIdOf(request.headers.traceparent),
            },
            "upstream attempt failed; trying another instance",
          );
          failed = instance;
        } finally {
          // Answered or failed (the call's timeout bounds it): the next request may ask again.
          if (probe) instance.probing = false;
          if (held) instance.heldInFlight--;
        }
      }
    } finally {
      clearTimeout(timer);
      clientSignal?.removeEventListener("abort", clientGone);
      calls.delete(end);
      heldCalls.delete(end);
    }
    // Nowhere left to send new work but to instances that report no headroom (the one tried could not be
    // reached, and never got it): refused as the others would refuse it, not as unreachable.
    const refusedNow = needsHeadroom && failed ? refusal() : undefined;
    throw (
      refusedNow ??
      lastFailure ??
      new AppError("UNAVAILABLE", `${name} is unavailable: no instance`, { retryAfterS: 1 })
    );
  }

  return {
    name,
    /** Instances by `host:port`, with whether each is in rotation. */
    instances: () => instances.map((i) => ({ target: i.target, healthy: i.healthy })),
    healthyCount,
    /** Every instance refused the gateway's internal credential at its last health check answered. */
    refusesCredential: () => instances.every((i) => i.refusesCredential),

    /**
     * New work refused here (503 + Retry-After, counted) while every instance reports no headroom for it;
     * undefined otherwise. `send` with `needsHeadroom` asks the same; asked first, it spares a refused
     * request everything else the gateway would do for it.
     */
    refuseNewWork: refusal,

    /**
     * Sends a request to the next healthy instance (any instance in panic mode) and reads the whole
     * response, up to `maxResponseBytes`. A request that could not connect (any method: it never left) or
     * a GET/HEAD whose connection broke is sent once more to another instance. Throws an AppError: 504
     * past the timeout, a `ShutdownError` when the gateway's drain ends first (`drain`), 502 for any other
     * failure (a larger answer included).
     */
    async send(
      request: UpstreamRequest,
      { timeoutMs, clientSignal, holdMs = 0, needsHeadroom = false }: SendOptions,
    ): Promise<UpstreamResponse> {
      if (holdMs <= 0) return call(request, { timeoutMs, clientSignal, held: false, needsHeadroom });
      if (!draining) {
        try {
          return await call(request, {
            timeoutMs: timeoutMs + holdMs,
            clientSignal,
            held: true,
            needsHeadroom,
          });
        } catch (err) {
          if (!(err instanceof Released)) throw err;
        }
      }
      // The gateway is shutting down: what the upstream answers now, asked without the preference to wait
      // (as the order-service answers its own held reads when it drains), rather than an answer the drain
      // would cut off.
      return call(withoutPrefer(request), { timeoutMs, clientSignal, held: false, needsHeadroom });
    },

    /**
     * The gateway is shutting down: requests held by the upstream are asked again without their Prefer
     * and answered at once, and any sent from now on is not held; when `deadline` aborts (shortly before
     * the server closes the connections still open), every request still waiting for the upstream is
     * answered instead of having its connection cut (a `ShutdownError`: 503 + Retry-After, or 504 for a
     * write that may have been applied), and none is sent any more.
     */
    drain(deadline: AbortSignal): void {
      draining = true;
      for (const end of heldCalls) end("release");
      const cut = () => {
        cutOff = true;
        for (const end of calls) end("shutdown");
      };
      if (deadline.aborted) cut();
      else deadline.addEventListener("abort", cut, { once: true });
    },

    /** Checks every instance once, then keeps checking every interval until `close()`. */
    async start(): Promise<void> {
      await checkAll();
      if (!closed) schedule();
    },

    /** Stops the health checks and closes the pools once their requests in flight are done. */
    async close(): Promise<void> {
      closed = true;
      clearTimeout(timer);
      await Promise.all(
        instances.flatMap((i) => [
          i.pool.close(),
          i.readPool.close(),
          i.heldPool.close(),
          i.checkPool.close(),
        ]),
      );
    },
  };
}

export type Upstream = ReturnType<typeof createUpstream>;

type CallOptions = {
  timeoutMs: number;
  clientSignal: AbortSignal | undefined;
  held: boolean;
  needsHeadroom: boolean;
};

/** How the gateway ended a call itself: its timeout, or its shutdown (`drain`). */
type Ending = "timeout" | "release" | "shutdown";

/**
 * The gateway's shutdown ended or refused the call (`drain`): 503 + Retry-After when nothing was done
 * upstream, 504 when a write had been sent. A route that turns an upstream's failure into its own answer
 * passes this one on as it is.
 */
export class ShutdownError extends AppError {}

/** A held call that `drain` ended: `send` asks again without the Prefer. */
class Released extends Error {
  override readonly name = "Released";
}

/** The request as it is, but for its preferences (`Prefer: wait`), which it is no longer asked to keep. */
function withoutPrefer(request: UpstreamRequest): UpstreamRequest {
  const headers: Record<string, string> = {};
  for (const [key, value] of Object.entries(request.headers))
    if (key.toLowerCase() !== "prefer") headers[key] = value;
  return { ...request, headers };
}

/** The error code of a Node or undici error, looking into the attempts of a happy-eyeballs connect. */
function errorCode(err: unknown): string | undefined {
  if (!(err instanceof Error)) return undefined;
  const { code } = err as Error & { code?: unknown };
  if (typeof code === "string") return code;
  if (err instanceof AggregateError) return errorCode(err.errors[0]);
  return errorCode(err.cause);
}
