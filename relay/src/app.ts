import { createBaseApp } from "@saga/http";
import type { Logger, Metrics } from "@saga/observability";

export type RelayAppDeps = {
  logger: Logger;
  metrics: Metrics;
  /** Resolves when every outbox database and a Kafka broker answer. */
  ready: () => Promise<void>;
};

/** The relay's HTTP surface: /health, /ready and /metrics; it has no routes of its own. */
export function createApp({ logger, metrics, ready }: RelayAppDeps) {
  return createBaseApp({ logger, metrics, ready });
}
