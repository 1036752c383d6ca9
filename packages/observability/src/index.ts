export { countedOn, httpMetrics, markHeld, metricsHandler } from "./http.ts";
export { createLogger, flushRepeats, type Logger, rootCause } from "./logger.ts";
export {
  createHttpMetrics,
  createMetrics,
  HELD_LATENCY_BUCKETS,
  type HttpMetrics,
  LATENCY_BUCKETS,
  type Metrics,
} from "./metrics.ts";
export { nextTraceparent, parseTraceparent, type TraceContext, traceIdOf } from "./trace.ts";
