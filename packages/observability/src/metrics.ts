import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from "prom-client";

/** Latency buckets in seconds, from a fast local commit to a slow upstream. */
export const LATENCY_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/**
 * Buckets of a held `Prefer: wait=N` read, in seconds: it lasts as long as the saga it waits for, up to
 * N ≤ 30 s at the order-service and N + the upstream timeout (5 s) at the gateway, past LATENCY_BUCKETS'
 * top.
 */
export const HELD_LATENCY_BUCKETS = [...LATENCY_BUCKETS, 15, 20, 25, 30, 35];

/**
 * One registry per process, with the process metrics, an `up` gauge labelled by instance, and the
 * HTTP metrics every Hono app shares.
 */
export function createMetrics(service: string, instance: string) {
  const registry = new Registry();
  registry.setDefaultLabels({ service, instance });
  // The event-loop delay histogram samples with a timer; at prom-client's default 10 ms that timer alone
  // kept an idle process at 0.005 cores (measured: 14 against 1 CPU tick in 30 s at 100 ms), six
  // processes 0.03 cores. Every 100 ms still sees any stall worth alerting on.
  collectDefaultMetrics({ register: registry, eventLoopMonitoringPrecision: 100 });
  new Gauge({ name: "saga_instance_up", help: "1 while this process is running", registers: [registry] }).set(
    1,
  );

  const { httpRequests, httpDuration, httpHeldDuration } = createHttpMetrics(registry);
  const admissionShed = new Counter({
    name: "http_admission_shed_total",
    help: "Requests answered 503 + Retry-After because their admission lane was full, by lane and reason (full: the queue was full; timeout: waited past the queue's time)",
    labelNames: ["lane", "reason"] as const,
    registers: [registry],
  });
  const admissionInFlight = new Gauge({
    name: "http_admission_in_flight",
    help: "Requests being served, by admission lane",
    labelNames: ["lane"] as const,
    registers: [registry],
  });
  const admissionQueued = new Gauge({
    name: "http_admission_queued",
    help: "Requests waiting for a place in their admission lane, by lane",
    labelNames: ["lane"] as const,
    registers: [registry],
  });
  const admissionLimit = new Gauge({
    name: "http_admission_limit",
    help: "Requests admitted at once, by admission lane (an adaptive lane's bound moves with its backend's latency)",
    labelNames: ["lane"] as const,
    registers: [registry],
  });
  return {
    registry,
    httpRequests,
    httpDuration,
    httpHeldDuration,
    admissionShed,
    admissionInFlight,
    admissionQueued,
    admissionLimit,
  };
}

export type Metrics = ReturnType<typeof createMetrics>;

/**
 * The series `httpMetrics` counts each request on, in `registry` (without one, series no one scrapes).
 *
 * A request held for `Prefer: wait` (`markHeld`) is timed on `http_held_request_duration_seconds`, not on
 * `http_request_duration_seconds`: it lasts as long as the saga it waits for (up to 30 s, 35 s at the
 * gateway), so in the request latency it showed the sagas' duration, and once sagas slowed past 10 s a p99
 * of exactly 10 s (the top bucket) while every process answered in milliseconds. A histogram of its own
 * rather than a `held` label on the latency's: every query of HTTP latency would have to filter
 * `held="false"`, and one that forgot (a new panel, an ad hoc query) would show the sagas again; and the
 * held reads' buckets up to 35 s would be on every route's series, where only `/orders/:id` holds.
 */
export function createHttpMetrics(registry = new Registry()) {
  return {
    httpRequests: new Counter({
      name: "http_requests_total",
      help: "HTTP requests by method, route template and status",
      labelNames: ["method", "route", "status"] as const,
      registers: [registry],
    }),
    httpDuration: new Histogram({
      name: "http_request_duration_seconds",
      help: "HTTP request duration by method, route template and status, held Prefer: wait reads apart (http_held_request_duration_seconds)",
      labelNames: ["method", "route", "status"] as const,
      buckets: LATENCY_BUCKETS,
      registers: [registry],
    }),
    httpHeldDuration: new Histogram({
      name: "http_held_request_duration_seconds",
      help: "Duration of requests held for Prefer: wait (a service's answered with Preference-Applied, the gateway's that asked its upstream to hold them) by method, route template and status: the saga's latency as clients see it",
      labelNames: ["method", "route", "status"] as const,
      buckets: HELD_LATENCY_BUCKETS,
      registers: [registry],
    }),
  };
}

export type HttpMetrics = ReturnType<typeof createHttpMetrics>;
