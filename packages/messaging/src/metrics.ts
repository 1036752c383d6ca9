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
      help: "Events given up on and written to <topic>.dlq, by consumer group, logical topic and reason (poison, retries exhausted)",
      labelNames: ["group", "topic", "reason"] as const,
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
      help: "Retries of events whose transaction failed, by consumer group, logical topic and failure (transient, unexpected)",
      labelNames: ["group", "topic", "failure"] as const,
      registers,
    }),
    skipped: new Counter({
      name: "saga_consumer_skipped_records_total",
      help: "Records the consumer group never read because they were deleted first (it was further behind than the topic's retention.ms), by consumer group and logical topic",
      labelNames: ["group", "topic"] as const,
      registers,
    }),
    stuck: createStuckPartitions(registers),
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

type StuckLabels = { group: string; topic: string; partition: string; failure: string };

/**
 * Partitions stuck retrying an event, as a gauge of that event's age: a series per partition while it
 * retries, none once it moves on. The age is taken at each scrape, so it grows while the partition waits.
 */
function createStuckPartitions(registers: Registry[]) {
  const stuck = new Map<string, { labels: StuckLabels; since: number }>();
  new Gauge({
    name: "saga_consumer_stuck_seconds",
    help: "Age of the event a partition is stuck retrying on, by consumer group, logical topic, partition and failure (transient: the database or network, retried without end; unexpected: retried up to CONSUMER_RETRY_ATTEMPTS); no series while no partition is stuck",
    labelNames: ["group", "topic", "partition", "failure"] as const,
    registers,
    collect() {
      this.reset();
      const now = Date.now();
      for (const { labels, since } of stuck.values()) this.set(labels, Math.max(0, (now - since) / 1000));
    },
  });
  const key = ({ group, topic, partition }: StuckLabels) => JSON.stringify([group, topic, partition]);
  return {
    /** The partition retries an event that occurred at `since` (ms since the epoch). */
    retrying(labels: StuckLabels, since: number): void {
      stuck.set(key(labels), { labels, since });
    },
    /** The partition moved on. */
    movedOn(labels: Omit<StuckLabels, "failure">): void {
      stuck.delete(key({ ...labels, failure: "" }));
    },
  };
}

export type MessagingMetrics = ReturnType<typeof createMessagingMetrics>;
