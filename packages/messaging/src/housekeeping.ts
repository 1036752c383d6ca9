import { prefixedTopic } from "@saga/contracts";
import type { KafkaClient } from "@saga/kafka";
import type { Logger } from "@saga/observability";
import { withTimeout } from "@saga/runtime";
import { type SQL, sql } from "drizzle-orm";
import type { Executor } from "./db.ts";
import type { MessagingMetrics } from "./metrics.ts";

export const PRUNE_BATCH = 5000;

/** What `pruneExpired` deletes: each table by its time column, which has an index of its own. */
export const EXPIRING = [
  ["inbox", "processed_at"],
  ["idempotency_keys", "created_at"],
] as const;

/**
 * One batch of `pruneExpired`: at most `PRUNE_BATCH` rows of `table` older than the retention. Each
 * round's last batch finds fewer, most often none; without an index on `column` that batch read the
 * whole table (and a table past DB_STATEMENT_TIMEOUT_MS's reach stopped pruning for good), with it, the
 * few index entries past the cutoff.
 */
export function expiredBatch([table, column]: (typeof EXPIRING)[number], retentionHours: number): SQL {
  // The retention as a literal, not a parameter: the sessions plan generically (db/src/pg-client.ts), and
  // only a cutoff the planner can evaluate lets it see that few rows are old enough and use the index.
  const cutoff = sql`now() - make_interval(secs => ${sql.raw(String(Math.round(retentionHours * 3600)))})`;
  return sql`
    delete from ${sql.identifier(table)} where ctid = any(array(
      select ctid from ${sql.identifier(table)} where ${sql.identifier(column)} < ${cutoff} limit ${PRUNE_BATCH}
    ))`;
}

/**
 * Deletes inbox rows and idempotency keys older than the retention, in small batches so no long lock is
 * held. An event redelivered after that is no longer recognised by the inbox; how long Kafka can redeliver
 * one: `DEFAULT_INBOX_RETENTION_HOURS`. Returns the number of rows deleted.
 */
export async function pruneExpired(db: Executor, retentionHours: number): Promise<number> {
  let deleted = 0;
  for (const expiring of EXPIRING) {
    for (;;) {
      const rows = await db.execute(expiredBatch(expiring, retentionHours));
      const count = rows.rowCount ?? 0;
      deleted += count;
      if (count < PRUNE_BATCH) break;
    }
  }
  return deleted;
}

export type Periodic = {
  /** Ends the rounds; waits for one in progress, until `signal` aborts, which also aborts the round's. */
  stop(signal?: AbortSignal): Promise<void>;
};

/**
 * Runs `task` every `intervalMs`, never two at once; a failure is logged and the next round tries
 * again. A round gets a signal that aborts when `stop` is cut short by its deadline.
 */
export function every(
  intervalMs: number,
  task: (signal: AbortSignal) => Promise<void>,
  onError: (err: unknown) => void,
): Periodic {
  let running: Promise<void> | undefined;
  const stopped = new AbortController();
  const timer = setInterval(() => {
    running ??= task(stopped.signal)
      .catch(onError)
      .finally(() => {
        running = undefined;
      });
  }, intervalMs);
  timer.unref();
  return {
    async stop(signal) {
      clearInterval(timer);
      const round = running;
      if (!round) return;
      await withTimeout(() => round, Number.POSITIVE_INFINITY, "a periodic task", signal).catch(() =>
        stopped.abort(signal?.reason),
      );
    },
  };
}

/** Prunes the inbox and idempotency keys periodically. */
export function startRetention(opts: {
  db: Executor;
  retentionHours: number;
  intervalMs?: number;
  logger: Logger;
}): Periodic {
  const { db, retentionHours, intervalMs = 15 * 60_000, logger } = opts;
  return every(
    intervalMs,
    async () => {
      const deleted = await pruneExpired(db, retentionHours);
      if (deleted > 0) logger.info({ deleted, retentionHours }, "pruned inbox and idempotency keys");
    },
    (err) => logger.warn({ err }, "pruning the inbox failed; will retry"),
  );
}

/** Publishes the consumer group's lag per partition as `saga_consumer_lag`, labelled by logical topic. */
export function startLagMonitor(opts: {
  kafka: KafkaClient;
  consumerGroup: string;
  topicPrefix: string;
  topics: readonly string[];
  metrics: MessagingMetrics;
  logger: Logger;
  intervalMs?: number;
}): Periodic {
  const { kafka, consumerGroup, topicPrefix, topics, metrics, logger, intervalMs = 15_000 } = opts;
  const physical = new Map(topics.map((t) => [prefixedTopic(topicPrefix, t), t]));
  // The series of the last reading: dropped when a reading fails. Every instance of the group reports the
  // group's lag, taken as the max over them; an instance cut off from the broker would otherwise hold its
  // last reading for as long as it is cut off, over the live instances' (an alert that never clears, or
  // one that fires on a lag long gone). So are those a reading no longer has (a topic deleted, or made
  // again with fewer partitions), which would otherwise stay at their last value for good.
  let published: { group: string; topic: string; partition: string }[] = [];
  return every(
    intervalMs,
    async (stopped) => {
      // Bounded by the client's admin timeout: while the broker is away a round fails fast.
      const lags = await kafka.consumerLag(consumerGroup, [...physical.keys()], stopped);
      const reading = new Map<string, (typeof published)[number]>();
      for (const p of lags) {
        const labels = {
          group: consumerGroup,
          topic: physical.get(p.topic) ?? p.topic,
          partition: String(p.partition),
        };
        metrics.lag.set(labels, p.lag);
        reading.set(`${labels.topic}/${labels.partition}`, labels);
      }
      for (const labels of published)
        if (!reading.has(`${labels.topic}/${labels.partition}`)) metrics.lag.remove(labels);
      published = [...reading.values()];
    },
    (err) => {
      for (const labels of published) metrics.lag.remove(labels);
      published = [];
      logger.warn(
        { err },
        "reading the consumer lag failed; its lag is no longer reported until a reading succeeds",
      );
    },
  );
}
