import type { Context, MiddlewareHandler } from "hono";
import type { Metrics } from "./metrics.ts";

/**
 * Counts and times every request by its route template (`/orders/:id`, never the raw path), so the
 * number of series stays bounded whatever ids clients send.
 */
export function httpMetrics({ metrics }: { metrics: Metrics }): MiddlewareHandler {
  return async function httpMetrics(c, next) {
    const stop = metrics.httpDuration.startTimer();
    try {
      await next();
    } finally {
      const labels = { method: c.req.method, route: routeOf(c), status: String(c.res.status) };
      stop(labels);
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
