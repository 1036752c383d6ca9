import type { PendingQuery, Sql } from "postgres";
import { parseSnapshot, type Snapshot } from "./visibility.ts";

/** An unpublished outbox row as the relay reads it. */
export type PendingRow = {
  id: string;
  /** bigint, as text: only compared for tests and logs. */
  position: string;
  aggregateId: string;
  topic: string;
  eventType: string;
  schemaVersion: string;
  payload: string;
  headers: Record<string, string>;
  createdAt: Date;
  /** Seconds since `created_at` when the row was read, on the database's clock. */
  ageSeconds: number;
};

export type Backlog = {
  /** Unpublished rows, counted up to a cap (`OutboxStoreOptions.backlogCap`): at the cap, at least so many. */
  rows: number;
  /** Seconds since `created_at` of the next row to publish (0 when there is none). */
  oldestAgeSeconds: number;
};

/**
 * Asks the server to cancel a running statement. A cancel is a connection of its own, so it fails when
 * the server cannot be reached (a restart, a failover); the statement then ends with its own connection,
 * and the failure is dropped. postgres.js 3.4.10's `query.cancel()` drops the promise of that connection
 * itself, so its failure was a rejection nobody could handle, which ends a Node process: the cancel is
 * sent here through the query's own canceller (what `cancel()` calls), whose promise can be caught. A
 * test holds both halves (relay/test/cancel.int.test.ts).
 */
export function cancelQuery(
  query: { cancel(): unknown },
  { unsent = "leave" }: { unsent?: "leave" | "cancel" } = {},
): void {
  const q = query as { canceller?: ((query: unknown) => Promise<void>) | null; state?: unknown };
  // Not sent yet (postgres.js gives a query its `state` when it writes it): left to run, unless the caller
  // says otherwise. postgres.js 3.4.10 marks such a query cancelled, and when it was the first query of a
  // connection still connecting (a server restarting), that connection skips it once up and never tells
  // the pool it is free: every later query of the pool waits for ever (relay/test/cancel.int.test.ts). A
  // read or a mark that runs late changes nothing the relay relies on.
  if (!q.state && unsent === "leave") return;
  const canceller = q.canceller;
  if (typeof canceller !== "function") return void query.cancel();
  q.canceller = null;
  canceller(query).catch(() => {});
}

/**
 * Runs `query`, and cancels it on the server when `signal` aborts (a client-side timeout, a lost lease):
 * the statement stops there instead of running on while nobody waits for it.
 */
function cancellable<T extends readonly (object | undefined)[]>(
  query: PendingQuery<T>,
  signal?: AbortSignal,
) {
  if (!signal) return query;
  const cancel = () => cancelQuery(query);
  if (signal.aborted) cancel();
  else signal.addEventListener("abort", cancel, { once: true });
  return query.finally(() => signal.removeEventListener("abort", cancel));
}

/**
 * `markPublished`'s statement ($1: the ids, $2: seconds since each was acknowledged), exported so that a
 * test plans the statement the store runs (relay/test/mark-plan.int.test.ts).
 *
 * `published_at is null` leaves a row marked already (by a relay that took over, or a mark sent twice)
 * as it was. It is written as a clause of the join, `or acked.id is null`, which is never true (a row
 * joined by `o.id = acked.id` has an id), so that it is not a filter of the outbox alone: as one, it
 * matches outbox_unpublished_idx's predicate, and the planner may read every unpublished row through
 * that index and hash-join the ids against them, instead of probing outbox_pkey once per id. It does so
 * when the statistics were taken while the backlog was empty (`published_at` null in none of the rows
 * sampled, the steady state): it expects that scan to find next to nothing. A backlog that grew before
 * the next autoanalyze (Kafka or the relay down) was then read whole by every mark: 300,000 rows behind,
 * 150 to 290 ms a mark of 500 instead of 4.5 ms, and a drain quadratic in the backlog.
 */
export const MARK_PUBLISHED = `
  update outbox o set published_at = now() - make_interval(secs => acked.since_ack)
  from unnest($1::uuid[], $2::float8[]) as acked(id, since_ack)
  where o.id = acked.id and (o.published_at is null or acked.id is null)`;

/** `OutboxStoreOptions.backlogCap`'s default. */
export const DEFAULT_BACKLOG_CAP = 100_000;

/**
 * The backlog, less the rows on Kafka awaiting their mark (`$1`), counted no further than `$2` rows, and
 * the age of the first of them in position order; both read through outbox_unpublished_idx, as far as
 * their limit. It runs at every scrape, bounded by 2 s (service.ts): a count of every unpublished row read
 * them all, by a parallel seq scan of the whole outbox once they are many, about 1 s with 2,000,000 rows
 * behind (an hour of a Kafka outage) and past the bound beyond 4 or 5 million, so the gauges froze while
 * the relay drained. Capped at 100,000 it reads about 4,400 pages (42-60 ms, 2,000,000 published and
 * 2,000,000 unpublished rows, generic plan and custom), the age 25 (0.3 ms); `order by position` keeps the
 * count on the index, where a seq scan stopped by the limit may first read every published row before the
 * unpublished ones, at the table's end (1.7 s).
 *
 * The rows on Kafka are left out by `not in` a subquery, which PostgreSQL hashes once ("hashed SubPlan")
 * whatever the plan (the ids are never null: one null among them and `not in` holds for no row). Not
 * `not id = any($1)`: the statement is prepared, and once PostgreSQL keeps its generic plan the array is a
 * parameter, which it does not hash, so every backlog row was compared with every id (a backlog of 300,000
 * and 250 ids: 749 ms against 67 ms). Nor `not exists`: under a limit the planner prefers an anti-join that
 * scans the ids once per row (500 ids, 100,000 rows: 3.4 s).
 *
 * The age is that of the row the relay publishes next, not the least `created_at`: a row behind it whose
 * transaction began earlier (`created_at` is its transaction's start) is older by less than that
 * transaction ran before its insert.
 */
export const BACKLOG = `
  select
    (select count(*)::int from (
       select from outbox
       where published_at is null and id not in (select unnest($1::uuid[]))
       order by position
       limit $2) as head) as rows,
    (select extract(epoch from clock_timestamp() - created_at)::float8 from outbox
     where published_at is null and id not in (select unnest($1::uuid[]))
     order by position
     limit 1) as age`;

/**
 * `deleteExpired`'s statement ($1: the retention in seconds, $2: the batch), exported so that a test plans
 * it (relay/test/mark-plan.int.test.ts). The rows are found by their `ctid`, a TID scan in any plan, as the
 * inbox's prune does (packages/messaging/src/housekeeping.ts). `where id in (select id …)` was a
 * semi-join that the generic plan made a hash join over a seq scan of the whole outbox (2.4 s a batch
 * of 1,000, 4,000,000 rows, against 1.2 ms): safe only while the relay's sessions keep plan_cache_mode
 * auto, which keeps the custom plan (outbox_pkey probes, 21 ms) while it looks cheaper. A ctid still
 * names the row the subquery found when the delete reaches it: published rows are never updated, and one
 * that another relay deleted first is skipped.
 */
export const DELETE_EXPIRED = `
  delete from outbox where ctid = any(array(
    select ctid from outbox
    where published_at < now() - make_interval(secs => $1)
    order by published_at
    limit $2))`;

export type OutboxStoreOptions = {
  /**
   * Delete a row once Kafka acknowledged it instead of marking it (`OUTBOX_RETENTION_SECONDS=0`). A mark
   * gives the row a new version with new entries in every index it is in (the partial indexes take
   * `published_at` out of HOT updates); a delete only stamps the old version: about a quarter of the
   * mark's work (500 rows: 2.7 against 10.0 ms), which is most of PostgreSQL's share of a drain.
   */
  deleteOnPublish?: boolean;
  /**
   * `backlog` counts no further than this many rows (default `DEFAULT_BACKLOG_CAP`): a count of exactly
   * this many means at least so many.
   */
  backlogCap?: number;
};

/** The relay's queries on one outbox table; each is cancelled when its `signal` aborts. */
export function createOutboxStore(
  sql: Sql,
  { deleteOnPublish = false, backlogCap = DEFAULT_BACKLOG_CAP }: OutboxStoreOptions = {},
) {
  return {
    /**
     * The oldest `limit` unpublished rows in position order. Always from the lowest unpublished
     * position, never from a remembered high-water mark: a transaction that took a lower position
     * but committed later shows up here on the next read instead of being skipped.
     */
    async readBatch(limit: number, signal?: AbortSignal): Promise<PendingRow[]> {
      return cancellable(
        sql<PendingRow[]>`
        select id, position::text as position, aggregate_id as "aggregateId", topic, event_type as "eventType",
               schema_version as "schemaVersion", payload, headers, created_at as "createdAt",
               extract(epoch from clock_timestamp() - created_at)::float8 as "ageSeconds"
        from outbox
        where published_at is null
        -- Qualified: a bare "position" would sort by the text alias above, "10" before "9".
        order by outbox.position
        limit ${limit}`,
        signal,
      );
    },

    /**
     * The server's current snapshot, as the next statement would take it: the oldest transaction still
     * running (xmin), one past the latest to have ended (xmax: every transaction from it on is
     * invisible) and those between still running (xip). The CDC mode uses it to know that every
     * transaction committed before its replication slot's starting point is visible to a read, and that
     * the transactions of a streamed batch are visible before it is sent.
     */
    async currentSnapshot(signal?: AbortSignal): Promise<Snapshot> {
      const [row] = await cancellable(
        sql<{ snapshot: string }[]>`select pg_current_snapshot()::text as snapshot`,
        signal,
      );
      if (!row) throw new Error("pg_current_snapshot() returned nothing");
      return parseSnapshot(row.snapshot);
    },

    /**
     * CDC: a transaction id above those of all transactions that may have committed before this call, so
     * that a snapshot with every transaction below it ended (`endedBefore`) sees each of their commits.
     * Taken once a replication stream is up, it covers every commit before the slot's starting point. A
     * fresh id, assigned by this statement's own transaction after all of theirs (one per stream). Not a
     * snapshot's xmax: that is one past the latest transaction to have ended, so a commit flushed and not
     * yet visible (its writer waiting for a synchronous standby) can be at or past it, where a snapshot
     * lists nothing as running.
     */
    async catchUpBoundary(signal?: AbortSignal): Promise<bigint> {
      const [row] = await cancellable(
        sql<{ xid: string }[]>`select pg_current_xact_id()::text as xid`,
        signal,
      );
      if (!row) throw new Error("pg_current_xact_id() returned nothing");
      return BigInt(row.xid);
    },

    /**
     * Marks rows as published, each at the moment Kafka acknowledged it: `now()` less `sinceAck[i]`
     * seconds for `ids[i]`, so a mark made a while after the acknowledgement (the CDC mode marks once per
     * interval) still says when the row reached Kafka, in the server's clock. Late by as long as the
     * statement waited to start (`sinceAck` is taken when it is issued): milliseconds, more on a starved
     * machine. Every row is visible to it: read from the table,
     * or streamed and sent only once its transaction was visible (see `currentSnapshot`). With
     * `deleteOnPublish`, deletes them instead (the publication streams inserts only).
     */
    async markPublished(
      ids: readonly string[],
      sinceAck: readonly number[],
      signal?: AbortSignal,
    ): Promise<void> {
      if (ids.length === 0) return;
      if (deleteOnPublish) {
        await cancellable(
          sql`delete from outbox where id = any(${sql.array(ids as string[], 2950)}::uuid[])`,
          signal,
        );
        return;
      }
      // Prepared, as postgres.js prepares the other statements (tagged templates); `unsafe` would not.
      await cancellable(
        sql.unsafe(MARK_PUBLISHED, [sql.array(ids as string[], 2950), sql.array(sinceAck as number[], 701)], {
          prepare: true,
        }),
        signal,
      );
    },

    /**
     * Deletes up to `limit` rows published more than `retentionSeconds` ago, in one short
     * statement; callers repeat it while it returns `limit`.
     */
    async deleteExpired(retentionSeconds: number, limit: number, signal?: AbortSignal): Promise<number> {
      const result = await cancellable(
        sql.unsafe(DELETE_EXPIRED, [retentionSeconds, limit], { prepare: true }),
        signal,
      );
      return result.count;
    },

    /**
     * Unpublished rows, up to `backlogCap`, and the age of the next to publish, on the database's clock,
     * leaving out `onKafka`: rows acknowledged by Kafka whose mark is still to come (see `BACKLOG`).
     */
    async backlog(signal?: AbortSignal, onKafka: readonly string[] = []): Promise<Backlog> {
      const [row] = await cancellable(
        sql.unsafe<{ rows: number; age: number | null }[]>(
          BACKLOG,
          [sql.array(onKafka as string[], 2950), backlogCap],
          { prepare: true },
        ),
        signal,
      );
      return { rows: row?.rows ?? 0, oldestAgeSeconds: Math.max(0, row?.age ?? 0) };
    },
  };
}

export type OutboxStore = ReturnType<typeof createOutboxStore>;
