import { mustDiscardClient } from "@saga/db";
import type { NewOutboxRow } from "./outbox.ts";

/** A statement: named, it is prepared once per connection. */
type SqlConfig = { name?: string; text: string; values?: unknown[] };

/**
 * The hot path of the consumers talks to PostgreSQL through node-postgres directly: named prepared
 * statements (parsed and planned once per connection), arrays as parameters, no ORM building the SQL
 * again for every statement. The pooled client of a transaction is this.
 */
export type SqlClient = {
  query<R extends Record<string, unknown>>(
    config: SqlConfig,
  ): Promise<{ rows: R[]; rowCount: number | null }>;
};

type PooledClient = SqlClient & { release(destroy?: boolean | Error): void };

/** The node-postgres pool of a service database (`createPgDatabase().pool`). */
export type SqlPool = { connect(): Promise<PooledClient> };

/** The client of an `inTransaction`: its statements, and a last one that carries COMMIT with it. */
export type TxClient = SqlClient & {
  /**
   * Sends `config`, the transaction's last statement, and COMMIT behind it in one write: one round trip
   * where awaiting the statement and then committing took two. Resolves with the statement's result
   * once both have answered; rejects if either failed, and the transaction has then rolled back (a COMMIT
   * after a failed statement is a ROLLBACK). So the statement must fail by itself whenever the
   * transaction must not commit: a check of what it wrote belongs in its SQL, not in the code that reads
   * its result, which runs after COMMIT. A transaction that does not use it commits after `work`.
   */
  queryThenCommit<R extends Record<string, unknown>>(
    config: SqlConfig,
  ): Promise<{ rows: R[]; rowCount: number | null }>;
};

/**
 * Runs `work` between BEGIN and COMMIT on a client of its own; ROLLBACK when it throws. BEGIN is not
 * waited for: on a pipelining pool (`createPgDatabase`) it goes out with the first statements `work`
 * sends, in one round trip; if it fails, so do they. COMMIT goes out with `work`'s last statement when
 * it uses `queryThenCommit`, after `work` otherwise. A client whose ROLLBACK fails (its connection is
 * gone) is destroyed rather than given back to the pool, and so is one that `mustDiscardClient` rejects,
 * without a ROLLBACK (the server rolls back when the connection goes): one whose statement timed out on
 * the client's side, whose connection still waits for that answer, so a ROLLBACK would only wait behind
 * it; one whose server refused a write as read only (a primary demoted by a failover).
 */
export async function inTransaction<T>(pool: SqlPool, work: (tx: TxClient) => Promise<T>): Promise<T> {
  const client = await pool.connect();
  let broken: Error | undefined;
  writeTogether(client);
  const begun = client.query({ text: "begin" });
  // Its failure is the first to reach `work`'s statements; it is awaited below, never left unheard.
  begun.catch(() => {});
  let committed: Promise<void> | undefined;
  let commitAnswered = false;
  const tx: TxClient = {
    query: (config) => client.query(config),
    async queryThenCommit<R extends Record<string, unknown>>(config: SqlConfig) {
      if (committed) throw new Error("queryThenCommit: the transaction is already committing");
      writeTogether(client);
      const last = client.query<R>(config);
      committed = client.query({ text: "commit" }).then((answer) => {
        commitAnswered = true;
        checkCommitted(answer);
      });
      // Heard below; if the statement failed, its error is the one `work` sees.
      committed.catch(() => {});
      const [result] = await Promise.all([last, committed]);
      return result;
    },
  };
  try {
    const result = await work(tx);
    await begun;
    await (committed ?? client.query({ text: "commit" }).then(checkCommitted));
    return result;
  } catch (err) {
    if (mustDiscardClient(err)) broken = err as Error;
    else if (committed) {
      // Sent with the last statement, COMMIT ended the transaction if it was answered at all (with
      // ROLLBACK after a failed statement); unanswered, the connection is gone.
      await committed.catch(() => {});
      if (!commitAnswered) broken = err as Error;
    } else
      await client.query({ text: "rollback" }).catch((e: Error) => {
        broken = e;
      });
    throw err;
  } finally {
    client.release(broken);
  }
}

/**
 * PostgreSQL answers COMMIT in a transaction that a failed statement aborted with ROLLBACK, not an
 * error: pipelined behind that statement, it must not pass for a commit.
 */
function checkCommitted(result: unknown): void {
  const command = (result as { command?: string }).command;
  if (command !== "COMMIT") throw new Error(`the transaction did not commit: COMMIT answered ${command}`);
}

/** A node-postgres client's socket, as far as `writeTogether` needs it. */
type Corkable = { connection?: { stream?: { cork?(): void; uncork?(): void } } };

/**
 * Holds the client's writes until the code running now has sent what it sends without waiting: BEGIN
 * and the statements `work` sends before it first awaits (a consumer's claim and read) then leave in
 * one write instead of one each. Each write to the loopback socket is a system call that also runs the
 * server's receiving side; the order-service's profile puts its socket writes at a third of its CPU.
 */
function writeTogether(client: object): void {
  const stream = (client as Corkable).connection?.stream;
  if (!stream?.cork || !stream.uncork) return;
  stream.cork();
  queueMicrotask(() => stream.uncork?.());
}

export type InboxClaim = {
  consumerGroup: string;
  eventIds: string[];
  topics: string[];
  partitions: number[];
  offsets: number[];
  /** The aggregates (order ids) the events touch; locked before anything else. */
  aggregateIds: string[];
};

// One statement for the whole batch, the first of its transaction:
// - `locks`: an advisory lock per aggregate, taken in lock-key order (the ordered subquery), so two
//   transactions locking overlapping sets cannot deadlock; the insert reads `locks.n`, so every lock is
//   held before the first inbox row is written (and before the next statement reads any state).
// - the inbox insert: one row per event (consumer group + event id) in the transaction that applies
//   it; ON CONFLICT DO NOTHING absorbs a redelivery, also one within the batch or one that a concurrent
//   transaction is inserting (this one waits for it, then claims nothing).
// - RETURNING: the events that are new, the only ones the batch applies.
const CLAIM_EVENTS = `
with locks as (
  select count(pg_advisory_xact_lock(k)) as n
  from (select distinct hashtextextended(a, 0) as k from unnest($6::text[]) as a order by k) as keys
)
insert into inbox (consumer_group, event_id, topic, partition, "offset")
select $1, e.event_id, e.topic, e.partition, e.off
from locks, unnest($2::text[], $3::text[], $4::int[], $5::bigint[]) as e(event_id, topic, partition, off)
where locks.n >= 0
on conflict do nothing
returning event_id`;

/**
 * Locks the batch's aggregates and writes its inbox rows in one statement; resolves with the ids of
 * the events not seen before by this consumer group.
 */
export async function claimEvents(tx: SqlClient, claim: InboxClaim): Promise<Set<string>> {
  const { rows } = await tx.query<{ event_id: string }>({
    name: "saga-claim-events",
    text: CLAIM_EVENTS,
    values: [
      claim.consumerGroup,
      claim.eventIds,
      claim.topics,
      claim.partitions,
      claim.offsets,
      claim.aggregateIds,
    ],
  });
  return new Set(rows.map((r) => r.event_id));
}

/**
 * The arrays of an outbox insert from `unnest` (id, aggregate_id, topic, event_type, schema_version,
 * payload, headers as text), for a statement that writes all of a batch's events at once.
 */
export function outboxArrays(rows: readonly NewOutboxRow[]): unknown[] {
  return [
    rows.map((r) => r.id),
    rows.map((r) => r.aggregateId),
    rows.map((r) => r.topic),
    rows.map((r) => r.eventType),
    rows.map((r) => r.schemaVersion),
    rows.map((r) => r.payload),
    rows.map((r) => JSON.stringify(r.headers ?? {})),
  ];
}
