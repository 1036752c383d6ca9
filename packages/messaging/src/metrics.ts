import { LATENCY_BUCKETS } from "@saga/observability";
import { Counter, Gauge, Histogram, type Registry } from "prom-client";

/** What every consuming service reports about its events, registered on the process's registry. */
export function createMessagingMetrics(registry: Registry) {
  const registers = [registry];
  return {
    applied: new Counter({
      name: "saga_events_applied_total",
      help: "Events applied, by consumer group and logical topic",
      labelNames: ["group", "topic"] as const,
      registers,
    }),
    applyDuration: new Histogram({
      name: "saga_event_apply_duration_seconds",
      help: "Time to apply a consumed batch (one event at low load) in its transaction, by logical topic",
      labelNames: ["topic"] as const,
      buckets: LATENCY_BUCKETS,
      registers,
    }),
    duplicates: new Counter({
      name: "saga_inbox_duplicates_total",
      help: "Redelivered events absorbed by the inbox, by consumer group and logical topic",
      labelNames: ["group", "topic"] as const,
      registers,
    }),
    deadLettered: new Counter({
      name: "saga_dlq_events_total",
      help: "Events that can never be applied, written to <topic>.dlq, by consumer group and logical topic",
      labelNames: ["group", "topic"] as const,
      registers,
    }),
    ignored: new Counter({
      name: "saga_events_ignored_total",
      help: "Events that did not fit the state they found (late or duplicate), by logical topic and that state",
      labelNames: ["topic", "state"] as const,
      registers,
    }),
    retries: new Counter({
      name: "saga_consumer_retries_total",
      help: "Retries of events whose transaction failed with a transient error, by consumer group and topic",
      labelNames: ["group", "topic"] as const,
      registers,
    }),
    batchFallbacks: new Counter({
      name: "saga_inbox_batch_fallbacks_total",
      help: "Batches of events whose shared transaction failed (a poison event, a lost connection) and that were applied one by one, by consumer group and topic",
      labelNames: ["group", "topic"] as const,
      registers,
    }),
    lag: new Gauge({
      name: "saga_consumer_lag",
      help: "Messages not yet committed by the consumer group, by logical topic and partition",
      labelNames: ["group", "topic", "partition"] as const,
      registers,
    }),
  };
}

export type MessagingMetrics = ReturnType<typeof createMessagingMetrics>;
