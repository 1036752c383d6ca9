import type { Context, MiddlewareHandler } from "hono";
import type { HttpMetrics, Metrics } from "./metrics.ts";

const COUNTED_ON = Symbol("the HTTP metrics a request of the process's own is counted on");

/**
 * The env of a request that a process sends through its own app (`app.request(path, init, env)`), such
 * as its warm-up's: `httpMetrics` counts it on `metrics` instead of the app's, whose series are then its
 * clients' alone. A request from a socket cannot carry it.
 */
export function countedOn(metrics: HttpMetrics): { [COUNTED_ON]: HttpMetrics } {
  return { [COUNTED_ON]: metrics };
}

const held = new WeakSet<Context>();

/**
 * Marks a request as held for `Prefer: wait` (RFC 7240): `httpMetrics` times it on
 * `http_held_request_duration_seconds` instead of `http_request_duration_seconds`, as it lasts as long as
 * what it waits for, not as long as serving it takes. Counted in `http_requests_total` all the same.
 */
export function markHeld(c: Context): void {
  held.add(c);
}

/**
 * Counts and times every request by its route template (`/orders/:id`, never the raw path), so the
 * number of series stays bounded whatever ids clients send.
 */
export function httpMetrics({ metrics: clients }: { metrics: HttpMetrics }): MiddlewareHandler {
  return async function httpMetrics(c, next) {
    const metrics = (c.env as { [COUNTED_ON]?: HttpMetrics } | undefined)?.[COUNTED_ON] ?? clients;
    const start = performance.now();
    try {
      await next();
    } finally {
      const labels = { method: c.req.method, route: routeOf(c), status: String(c.res.status) };
      (held.has(c) ? metrics.httpHeldDuration : metrics.httpDuration).observe(
        labels,
        (performance.now() - start) / 1000,
      );
      metrics.httpRequests.inc(labels);
    }
  };
}

function routeOf(c: Context): string {
  const route = c.req.routePath;
  // Unmatched paths all share one label instead of one series per probe.
  return !route || route === "/*" || route === "*" ? "unmatched" : route;
}

/** Serves the registry in Prometheus text format. */
export function metricsHandler({ metrics }: { metrics: Metrics }) {
  return async (c: Context) =>
    c.body(await metrics.registry.metrics(), 200, { "content-type": metrics.registry.contentType });
}
