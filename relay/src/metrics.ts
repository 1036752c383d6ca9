import { LATENCY_BUCKETS } from "@saga/observability";
import { Counter, Gauge, Histogram, type Registry } from "prom-client";
import { type Backlog, DEFAULT_BACKLOG_CAP } from "./outbox-store.ts";

/** Where in a round an error happened, for `saga_relay_errors_total`. */
export const RELAY_STAGES = [
  "lock",
  "read",
  "visibility",
  "send",
  "mark",
  "cleanup",
  "wakeup",
  "backlog",
] as const;
export type RelayStage = (typeof RELAY_STAGES)[number];

/** The relay's metrics, labelled by outbox (`user`, `order`), registered on the process's registry. */
export function createRelayMetrics(registry: Registry) {
  const registers = [registry];
  // The backlog is read from the database when Prometheus scrapes, not on a timer: no query runs
  // unless someone looks, and one scrape runs one query per outbox for both gauges.
  let readBacklog: (() => Promise<void>) | undefined;
  let reading: Promise<void> | undefined;
  const refreshBacklog = async () => {
    reading ??= (readBacklog?.() ?? Promise.resolve()).finally(() => {
      setTimeout(() => {
        reading = undefined;
      }, 250);
    });
    await reading;
  };
  const backlog = new Gauge({
    name: "saga_relay_outbox_backlog",
    help: `Unpublished outbox rows, as last read, counted up to ${DEFAULT_BACKLOG_CAP}: at ${DEFAULT_BACKLOG_CAP}, at least that many`,
    labelNames: ["outbox"] as const,
    registers,
    collect: refreshBacklog,
  });
  const lag = new Gauge({
    name: "saga_relay_outbox_lag_seconds",
    help: "Age of the oldest unpublished outbox row, the next to publish (0 when there is none): the relay lag; while the outbox cannot be read, counted on from the last reading",
    labelNames: ["outbox"] as const,
    registers,
    collect: refreshBacklog,
  });
  // Each outbox's last lag reading, and when (this process's monotonic clock).
  const lastRead = new Map<string, { lagS: number; atMs: number }>();
  return {
    /** Sets the function that reads every outbox's backlog (`backlogRead`, `backlogUnread`) at scrape time. */
    onScrapeReadBacklog(read: () => Promise<void>): void {
      readBacklog = read;
    },
    /** The outbox's backlog as just read. */
    backlogRead(outbox: string, { rows, oldestAgeSeconds }: Backlog): void {
      backlog.set({ outbox }, rows);
      lag.set({ outbox }, oldestAgeSeconds);
      lastRead.set(outbox, { lagS: oldestAgeSeconds, atMs: performance.now() });
    },
    /**
     * The outbox could not be read. The lag counts on from the last reading, as the oldest row then, or
     * any written since, has waited at most that long: RelayLagHigh fires rather than going quiet on a
     * stale value while no relay can read (nor publish) the outbox.
     */
    backlogUnread(outbox: string): void {
      const last = lastRead.get(outbox);
      if (last) lag.set({ outbox }, last.lagS + (performance.now() - last.atMs) / 1000);
    },
    commitToAck: new Histogram({
      name: "saga_relay_commit_to_ack_seconds",
      help: "From the writing transaction's start (created_at) to Kafka's acknowledgement, per row",
      labelNames: ["outbox"] as const,
      buckets: [...LATENCY_BUCKETS, 30, 60, 300],
      registers,
    }),
    published: new Counter({
      name: "saga_relay_rows_published_total",
      help: "Outbox rows acknowledged by Kafka (re-sends after a crash count again)",
      labelNames: ["outbox"] as const,
      registers,
    }),
    batchSize: new Histogram({
      name: "saga_relay_batch_size",
      help: "Rows per batch sent to Kafka",
      labelNames: ["outbox"] as const,
      buckets: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000],
      registers,
    }),
    errors: new Counter({
      name: "saga_relay_errors_total",
      help: "Failures, by outbox and stage; each is retried",
      labelNames: ["outbox", "stage"] as const,
      registers,
    }),
    active: new Gauge({
      name: "saga_relay_active",
      help: "1 while this instance owns the outbox and publishes it, 0 on standby",
      labelNames: ["outbox"] as const,
      registers,
    }),
    streaming: new Gauge({
      name: "saga_relay_streaming",
      help: "1 while the owner publishes rows as the replication stream delivers them (RELAY_MODE=cdc), 0 while it reads them from the table",
      labelNames: ["outbox"] as const,
      registers,
    }),
    wakeups: new Counter({
      name: "saga_relay_wakeups_total",
      help: "Rounds started by a replication wake-up, by the poll timer, or (table mode) to look again at a streamed transaction a read could not see yet",
      labelNames: ["outbox", "source"] as const,
      registers,
    }),
    visibilityWaits: new Counter({
      name: "saga_relay_visibility_waits_total",
      help: "Streamed transactions not yet visible to other sessions: CDC, batches held back for one; table mode, reads that could not see one yet",
      labelNames: ["outbox"] as const,
      registers,
    }),
    deleted: new Counter({
      name: "saga_relay_rows_deleted_total",
      help: "Published rows deleted after the retention",
      labelNames: ["outbox"] as const,
      registers,
    }),
  };
}

export type RelayMetrics = ReturnType<typeof createRelayMetrics>;
