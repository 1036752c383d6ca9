import { HELD_LATENCY_BUCKETS, LATENCY_BUCKETS } from "@saga/observability";
import { Counter, Gauge, Histogram, type Registry } from "prom-client";

/**
 * How a call to an upstream ended: the class of the status it answered, or the failure that left
 * no status (`shutdown`: ended by the gateway's own shutdown; `local_error`: the gateway could not open a
 * socket, out of descriptors or ports; `too_large`: a body past the gateway's
 * UPSTREAM_MAX_RESPONSE_BYTES). A bounded set, so the series stay few.
 */
export type UpstreamOutcome =
  | "2xx"
  | "3xx"
  | "4xx"
  | "5xx"
  | "timeout"
  | "connect_error"
  | "local_error"
  | "reset"
  | "canceled"
  | "shutdown"
  | "too_large"
  | "error";

/** The gateway's view of its upstreams, registered on the process's registry. */
export function createGatewayMetrics(registry: Registry) {
  const registers = [registry];
  return {
    /** Every attempt counts, so a retried request counts twice. */
    upstreamRequests: new Counter({
      name: "gateway_upstream_requests_total",
      help: "Requests sent to an upstream instance (each attempt), by upstream, target and outcome",
      labelNames: ["upstream", "target", "outcome"] as const,
      registers,
    }),
    /** An attempt that asked its upstream to hold it (`Prefer: wait`) is timed on `upstreamHeldDuration`. */
    upstreamDuration: new Histogram({
      name: "gateway_upstream_request_duration_seconds",
      help: "Duration of one attempt at an upstream until its body was read, by upstream and outcome, but for attempts held for Prefer: wait (gateway_upstream_held_request_duration_seconds)",
      labelNames: ["upstream", "outcome"] as const,
      buckets: LATENCY_BUCKETS,
      registers,
    }),
    /**
     * Apart, as the HTTP metrics time a held request apart (`createHttpMetrics` says why): an attempt held
     * for `Prefer: wait=N` lasts as long as the saga, up to N + the upstream timeout.
     */
    upstreamHeldDuration: new Histogram({
      name: "gateway_upstream_held_request_duration_seconds",
      help: "Duration of one attempt at an upstream that asked it to hold the request for Prefer: wait, until its body was read, by upstream and outcome",
      labelNames: ["upstream", "outcome"] as const,
      buckets: HELD_LATENCY_BUCKETS,
      registers,
    }),
    healthyInstances: new Gauge({
      name: "gateway_upstream_healthy_instances",
      help: "Instances of an upstream in rotation (passing their health checks)",
      labelNames: ["upstream"] as const,
      registers,
    }),
    panicRequests: new Counter({
      name: "gateway_upstream_panic_requests_total",
      help: "Requests sent while no instance of the upstream was in rotation (panic mode: to any instance)",
      labelNames: ["upstream"] as const,
      registers,
    }),
    healthCheckTimeouts: new Counter({
      name: "gateway_upstream_health_check_timeouts_total",
      help: "Health checks not answered in time: a busy instance, not counted as a failure unless it lasts",
      labelNames: ["upstream", "target"] as const,
      registers,
    }),
    headroomShed: new Counter({
      name: "gateway_upstream_headroom_shed_total",
      help: "Requests for new work refused at the gateway with 503 + Retry-After because every instance reported no headroom for it",
      labelNames: ["upstream"] as const,
      registers,
    }),
    heldShed: new Counter({
      name: "gateway_upstream_held_shed_total",
      help: "Reads with Prefer: wait refused at the gateway with 503 + Retry-After because every instance's held connections (UPSTREAM_HELD_CONNECTIONS) were in use",
      labelNames: ["upstream"] as const,
      registers,
    }),
    ejections: new Counter({
      name: "gateway_upstream_ejections_total",
      help: "Instances taken out of rotation, by upstream, target and cause (passive: a refused connection or 5xx in a row; active: failed health checks)",
      labelNames: ["upstream", "target", "cause"] as const,
      registers,
    }),
  };
}

export type GatewayMetrics = ReturnType<typeof createGatewayMetrics>;
