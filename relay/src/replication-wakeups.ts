import { randomBytes } from "node:crypto";
import type { Duplex } from "node:stream";
import { postgresJsOptions, sessionParameters } from "@saga/db";
import type { Logger } from "@saga/observability";
import { sleep } from "@saga/runtime";
import postgres from "postgres";
import type { PendingRow } from "./outbox-store.ts";
import { decodePgoutput, outboxRowOf, relationRole, type StreamedRow } from "./pgoutput.ts";

/** The publication the migrations create: inserts into `outbox`, nothing else. */
const OUTBOX_PUBLICATION = "outbox_relay";

export type ReplicationWakeupsOptions = {
  url: string;
  /** Becomes part of the slot's name and the session's application_name. */
  holderName: string;
  /** Called for every committed outbox insert, and once after each (re)connection to catch up. */
  onWake: () => void;
  onError: (err: Error) => void;
  /** Back-off between reconnection attempts, doubling from `minRetryMs` to `maxRetryMs`. */
  minRetryMs?: number;
  maxRetryMs?: number;
  /** How often the received position is confirmed to the server when it does not ask. */
  feedbackMs?: number;
  /**
   * Change data capture (RELAY_MODE=cdc): keep the outbox rows the stream carries for `take()`, and
   * confirm a transaction's position only once `acknowledge()` says its rows are on Kafka.
   *
   * At most `maxQueuedRows` received rows are held, half for whole transactions not yet taken, half for
   * the one being received: past the first half reading pauses (TCP holds the rest back in the WAL
   * sender), and a transaction with more rows than the second half is not kept: its rows are dropped as
   * they arrive, and at its commit it is given up to the table with every row held (see `generation`),
   * which sends it in batches, in position order. Only pgoutput's whole transactions are taken, so
   * without that bound one large transaction (a bulk insert) would be held whole, however large.
   *
   * Once rows have held the position `maxHoldMs` without an acknowledgement, they are given up to the
   * table, so that the slot's position moves on: a held position keeps every WAL record the server
   * writes after it, in every database, for as long as it is held. Checked at each status update
   * (`feedbackMs`).
   */
  rows?: { maxQueuedRows: number; maxHoldMs: number };
  /** Says which transactions are given up to the table for their size, and which tables are skipped. */
  logger?: Logger;
};

/** Rows of whole committed transactions, in commit order, taken from the stream for one send. */
export type StreamBatch = {
  rows: PendingRow[];
  /** The transactions' ids (32 bits): their rows are sent only once they are visible to other sessions. */
  xids: number[];
  /** Where the last of these transactions ends: confirmed once the rows are acknowledged. */
  endLsn: bigint;
  /** The connection they came from: a batch of an earlier one confirms nothing. */
  generation: number;
};

export type ReplicationWakeups = {
  /** True while the stream is up; while it is not, the caller polls faster. */
  readonly connected: boolean;
  /**
   * Counts the stream's starting points so far: each connection (a new slot), and in the CDC mode each
   * time the rows received and not yet acknowledged were given up: because they were held too long
   * (`rows.maxHoldMs`: the sends failing, or hanging on a broker that is away), or at the commit of a
   * transaction too large to hold (`rows.maxQueuedRows`), or of one that inserted into a table that may
   * be the outbox under another name (see `relationRole`). Rows committed before a starting point are not
   * streamed (or no longer kept), so a CDC caller reads the table once per generation before it takes
   * rows from the stream.
   */
  readonly generation: number;
  /**
   * Table mode only: the ids (32 bits) of the transactions whose outbox inserts were streamed since the
   * last call, oldest first. The stream has a commit a moment before other sessions see it; a read that
   * should see these transactions first checks that they are visible (outbox-relay.ts, `unseen`).
   */
  takeAnnounced(): number[];
  /** CDC only: rows received on the current connection and not yet taken. */
  readonly queuedRows: number;
  /**
   * CDC only: whole transactions of `generation` (the one the caller has read the table for) received
   * and not yet taken, oldest first, up to `maxRows` rows (at least one transaction, which holds at most
   * half of `rows.maxQueuedRows`); undefined when none, or when the stream has started over since (their
   * rows are in the table).
   */
  take(maxRows: number, generation: number | undefined): StreamBatch | undefined;
  /**
   * CDC only: the batches' rows are on Kafka (and marked), so their positions may be confirmed to the
   * server: one status update for all of them.
   */
  acknowledge(batches: readonly StreamBatch[]): void;
  /**
   * CDC only: drops the connection (and its slot) and starts a new one, after a batch that could not be
   * sent or marked: its rows are still unpublished in the table, which the next generation reads first.
   */
  restart(): void;
  stop(): Promise<void>;
};

// Byte offsets in the replication protocol's CopyData messages.
// https://www.postgresql.org/docs/current/protocol-replication.html#PROTOCOL-REPLICATION-XLOGDATA
const XLOG_DATA = 0x77; // 'w': 1 + walStart(8) + walEnd(8) + sendTime(8) + pgoutput message
const KEEPALIVE = 0x6b; // 'k': 1 + walEnd(8) + sendTime(8) + replyRequested(1)
const PGOUTPUT_BEGIN = 0x42; // 'B': 1 + finalLsn(8) + commitTime(8) + xid(4)
const PGOUTPUT_INSERT = 0x49; // 'I', https://www.postgresql.org/docs/current/protocol-logicalrep-message-formats.html
// Table mode: announced transaction ids kept until taken. The loop takes them every round; past this (a
// loop stuck on a statement) the newest are dropped, which costs their rows a wait for the poll.
const MAX_ANNOUNCED = 10_000;
const PG_EPOCH_MS = Date.UTC(2000, 0, 1);

/** A table the stream described, and what the relay makes of its inserts (see relationRole). */
type Relation = {
  namespace: string;
  name: string;
  columns: string[];
  role: ReturnType<typeof relationRole>;
};

type QueuedTransaction = {
  xid: number;
  rows: StreamedRow[];
  endLsn: bigint;
  /** When it arrived (ours) and how old its rows were then (the server's clock, from the message). */
  receivedAt: number;
  ageAtReceipt: number[];
};

/**
 * Wakes the relay when a transaction that inserted outbox rows commits, by streaming the outbox
 * publication through a TEMPORARY logical replication slot (pgoutput). In the table mode the stream
 * carries no data we rely on: rows are always read from the table, so a lost or late message costs
 * latency, never a row. In the CDC mode (`rows`) it also keeps the rows it carries, for the relay to
 * send without reading them back; the table stays the record of what is unpublished, so a slot that is
 * lost (with its connection) costs one read of the table, never a row.
 *
 * Why a temporary slot: it exists only while this session does, so a relay that is down (or on
 * standby) holds back no WAL at all; and every position is confirmed as soon as it may be (at once in
 * the table mode, once its rows are acknowledged in the CDC mode), so a live one holds back only what
 * it has not published yet, and in the CDC mode for at most `rows.maxHoldMs` without progress: a relay
 * that cannot publish (Kafka away) would otherwise keep all the server's WAL for the whole outage.
 * Nothing runs on the writers' commit path (unlike NOTIFY, whose commit-time lock serialises every
 * notifying commit: see README.md for the numbers).
 */
export function startReplicationWakeups(opts: ReplicationWakeupsOptions): ReplicationWakeups {
  const { url, holderName, onWake, onError, minRetryMs = 500, maxRetryMs = 10_000, feedbackMs = 5000 } = opts;
  const { logger } = opts;
  const server = postgresJsOptions(url);
  // CDC: the rows of whole transactions past which reading pauses, and the most one transaction may
  // hold: together, `rows.maxQueuedRows`.
  const maxQueued = (opts.rows?.maxQueuedRows ?? 0) / 2;
  const maxTransactionRows = (opts.rows?.maxQueuedRows ?? 0) - maxQueued;
  const stopping = new AbortController();
  let connected = false;
  let generation = 0;
  let current: { sql: postgres.Sql; stream?: Duplex } | undefined;
  // CDC: whole transactions received and not yet taken, and what the current connection may confirm.
  const queue: QueuedTransaction[] = [];
  let queuedRows = 0;
  let taken = 0;
  let acknowledged = 0n;
  // CDC: when rows last were acknowledged, or began to wait with nothing held before them.
  let progressAt = 0;
  let confirmNow: (replyRequested?: boolean) => void = () => {};
  // Table mode: transactions streamed with outbox inserts, not yet taken.
  let announced: number[] = [];
  // CDC: the tables other than the outbox whose inserts were skipped or sent to the table: said once each.
  const reported = new Set<string>();

  const report = (relation: Relation, what: string) => {
    const table = `${relation.namespace}.${relation.name}`;
    if (reported.has(table)) return;
    reported.add(table);
    logger?.warn({ table, publication: OUTBOX_PUBLICATION }, `${table}, in the publication, ${what}`);
  };

  const slotName = `relay_${holderName
    .toLowerCase()
    .replace(/[^a-z0-9_]/g, "_")
    .slice(0, 40)}_${randomBytes(4).toString("hex")}`;

  /** Runs one replication session; resolves when it ends, rejects when it could not start. */
  async function session(): Promise<void> {
    // No statement_timeout here: START_REPLICATION is one statement that streams for as long as the
    // session lives. A poll underneath covers a stream that stalls (in the CDC mode, a read of the table).
    const sql = postgres({
      ...server,
      max: 1,
      max_lifetime: null,
      idle_timeout: 0,
      connect_timeout: 5,
      fetch_types: false,
      onnotice: () => {},
      // The date settings also fix the text form of the timestamps pgoutput sends (outboxRowOf parses it).
      connection: sessionParameters({ application_name: `${holderName}/wakeups`, replication: "database" }),
    });
    current = { sql };
    try {
      const [slot] = await sql.unsafe<{ consistent_point: string }[]>(
        `CREATE_REPLICATION_SLOT ${slotName} TEMPORARY LOGICAL pgoutput NOEXPORT_SNAPSHOT`,
      );
      if (!slot) throw new Error("CREATE_REPLICATION_SLOT returned nothing");
      if (stopping.signal.aborted) return;
      // postgres.js types the COPY BOTH stream as Writable; it is the Duplex it reads replication data from.
      const stream = (await sql
        .unsafe(
          `START_REPLICATION SLOT ${slotName} LOGICAL ${slot.consistent_point} (proto_version '1', publication_names '${OUTBOX_PUBLICATION}')`,
        )
        .writable()) as unknown as Duplex;
      current.stream = stream;
      let received = lsnToBigInt(slot.consistent_point);
      let confirmed = 0n;
      acknowledged = received;
      progressAt = performance.now();
      queue.length = 0;
      queuedRows = 0;
      taken = 0;
      // CDC: the tables the stream has described (its Relation messages) by their ids, which their
      // inserts name: each is decoded with its own table's columns, in their order.
      const relations = new Map<number, Relation>();
      // The transaction being received (both modes); CDC: whether it goes to the table at its commit
      // (too large to hold, or it inserted into a table that may be the outbox: see relationRole).
      let xid = 0;
      let inTransaction: StreamedRow[] | undefined;
      let ageAtReceipt: number[] = [];
      let givenUp = false;
      const giveUp = () => {
        givenUp = true;
        // Still a transaction being received (nothing past it may be confirmed yet), with no rows.
        inTransaction = [];
        ageAtReceipt = [];
      };
      const idle = () => queue.length === 0 && taken === 0 && inTransaction === undefined;
      const confirm = (replyRequested = false) => {
        // In the CDC mode a position is confirmed once every row before it is on Kafka; with nothing
        // received and not yet acknowledged, everything received so far may be.
        const position = !opts.rows || idle() ? received : acknowledged;
        if (position === confirmed && !replyRequested) return;
        confirmed = max(confirmed, position);
        stream.write(standbyStatus(confirmed));
      };
      confirmNow = confirm;
      /**
       * CDC: gives up the rows received and not yet acknowledged, and confirms the position past them
       * (`through`: past a transaction given up as it arrived, too). They are unpublished in the table,
       * which the caller reads first for the new generation: pgoutput sends a transaction once it has
       * committed, so each got its id before the caller's catch-up boundary, and the catch-up sees it. A
       * batch of them still being sent is on Kafka before that read (the caller's loop does one thing at
       * a time), and its acknowledgement confirms nothing.
       */
      const release = (through = queue.at(-1)?.endLsn) => {
        if (through !== undefined) acknowledged = max(acknowledged, through);
        queue.length = 0;
        queuedRows = 0;
        taken = 0;
        generation++;
        progressAt = performance.now();
        if (stream.isPaused()) stream.resume();
        confirm();
        onWake();
      };
      // While reading is paused (a full queue), the server's keepalives, and their requests for a reply,
      // wait unread: a status update on every tick then is what tells the WAL sender this client lives
      // (unanswered for `wal_sender_timeout`, it ends the connection). The tick also ends a hold that
      // lasted too long: the relay cannot publish (its sends fail, or hang on a broker that is away),
      // and the feedback would otherwise keep the slot, and every WAL record after its position, alive.
      const feedback = setInterval(() => {
        if (opts.rows && !idle() && performance.now() - progressAt > opts.rows.maxHoldMs) release();
        confirm(stream.isPaused());
      }, feedbackMs);
      const onXLogData = (chunk: Buffer) => {
        // Where this message's WAL starts (its walEnd is the server's WAL end, which may not be sent yet).
        received = max(received, chunk.readBigUInt64BE(1));
        if (!opts.rows) {
          // One id per transaction (its first insert), not per row.
          if (chunk[25] === PGOUTPUT_BEGIN) xid = chunk.readUInt32BE(42);
          else if (chunk[25] === PGOUTPUT_INSERT) {
            if (announced.at(-1) !== xid && announced.length < MAX_ANNOUNCED) announced.push(xid);
            onWake();
          }
          return;
        }
        // A transaction given up to the table: the rest of its rows are not even decoded.
        if (givenUp && chunk[25] === PGOUTPUT_INSERT) return;
        const message = decodePgoutput(chunk.subarray(25));
        if (message.kind === "begin") {
          xid = message.xid;
        } else if (message.kind === "relation") {
          relations.set(message.relationId, { ...message, role: relationRole(message) });
        } else if (message.kind === "insert") {
          const relation = relations.get(message.relationId);
          if (!relation) throw new Error("pgoutput: an insert before its relation");
          if (relation.role === "other") {
            report(relation, "is not the outbox: its inserts are skipped");
            return;
          }
          if (!inTransaction) {
            // The first rows to wait since nothing was held: the hold's clock starts (see `release`).
            if (queue.length === 0 && taken === 0) progressAt = performance.now();
            inTransaction = [];
          }
          if (relation.role === "unsure") {
            report(
              relation,
              "has the outbox's columns under another name (a partition? its publication needs publish_via_partition_root): the transactions that insert into it are read from the outbox table",
            );
            giveUp();
            return;
          }
          const row = outboxRowOf(relation.columns, message.values);
          const sentAt = PG_EPOCH_MS + Number(chunk.readBigInt64BE(17) / 1000n);
          inTransaction.push(row);
          ageAtReceipt.push(Math.max(0, (sentAt - row.createdAt.getTime()) / 1000));
          if (inTransaction.length > maxTransactionRows) {
            logger?.info(
              { xid, maxRows: maxTransactionRows },
              "a transaction with more outbox rows than the stream may hold: read from the table instead",
            );
            giveUp();
          }
        } else if (message.kind === "commit" && inTransaction && givenUp) {
          // Every row held is given up with it, so the caller reads the table (which has them all, in
          // position order) before it takes from the stream again. No row of it was taken.
          inTransaction = undefined;
          givenUp = false;
          release(message.endLsn);
        } else if (message.kind === "commit" && inTransaction) {
          queue.push({
            xid,
            rows: inTransaction,
            endLsn: message.endLsn,
            receivedAt: performance.now(),
            ageAtReceipt,
          });
          queuedRows += inTransaction.length;
          inTransaction = undefined;
          ageAtReceipt = [];
          // Past the bound, stop reading: the WAL sender waits on TCP; the feedback keeps it from timing out.
          if (queuedRows > maxQueued) stream.pause();
          onWake();
        }
      };
      try {
        await new Promise<void>((resolve, reject) => {
          stream.on("data", (chunk: Buffer) => {
            try {
              if (chunk[0] === XLOG_DATA) onXLogData(chunk);
              else if (chunk[0] === KEEPALIVE) {
                // A logical WAL sender's keepalive carries what it has sent so far.
                received = max(received, chunk.readBigUInt64BE(1));
                if (chunk[17]) confirm(true);
              }
            } catch (err) {
              // A message we cannot decode: this connection's rows cannot be trusted; the next starts
              // over from the table.
              stream.destroy(err as Error);
            }
          });
          stream.once("error", reject);
          stream.once("close", () => resolve());
          generation++;
          connected = true;
          // Rows committed while we were not listening announce nothing: look once.
          onWake();
        });
      } finally {
        clearInterval(feedback);
        connected = false;
        confirmNow = () => {};
        queue.length = 0;
        queuedRows = 0;
        taken = 0;
      }
    } finally {
      current = undefined;
      await sql.end({ timeout: 0 }).catch(() => {});
    }
  }

  const loop = (async () => {
    let retryMs = minRetryMs;
    while (!stopping.signal.aborted) {
      const started = performance.now();
      try {
        await session();
        if (!stopping.signal.aborted) onError(new Error("replication stream closed"));
      } catch (err) {
        if (!stopping.signal.aborted) onError(err as Error);
      }
      // A session that ran for a while earns a quick retry; repeated failures back off.
      retryMs = performance.now() - started > maxRetryMs ? minRetryMs : Math.min(retryMs * 2, maxRetryMs);
      await sleep(retryMs, stopping.signal);
    }
  })();

  return {
    get connected() {
      return connected;
    },
    get generation() {
      return generation;
    },
    get queuedRows() {
      return queuedRows;
    },
    takeAnnounced() {
      const taken = announced;
      announced = [];
      return taken;
    },
    take(maxRows, wanted) {
      if (!connected || queue.length === 0 || wanted !== generation) return undefined;
      const rows: PendingRow[] = [];
      const xids: number[] = [];
      let endLsn = 0n;
      const now = performance.now();
      while (queue.length > 0) {
        const next = queue[0] as QueuedTransaction;
        if (rows.length > 0 && rows.length + next.rows.length > maxRows) break;
        queue.shift();
        queuedRows -= next.rows.length;
        xids.push(next.xid);
        const waited = (now - next.receivedAt) / 1000;
        next.rows.forEach((row, i) =>
          rows.push({ ...row, ageSeconds: (next.ageAtReceipt[i] ?? 0) + waited }),
        );
        endLsn = next.endLsn;
      }
      taken++;
      const stream = current?.stream;
      if (stream?.isPaused() && queuedRows <= maxQueued) stream.resume();
      return { rows, xids, endLsn, generation };
    },
    acknowledge(batches) {
      if (!connected) return;
      const current = batches.filter((batch) => batch.generation === generation);
      if (current.length === 0) return;
      taken = Math.max(0, taken - current.length);
      for (const batch of current) acknowledged = max(acknowledged, batch.endLsn);
      progressAt = performance.now();
      confirmNow();
    },
    restart() {
      current?.stream?.destroy();
    },
    async stop() {
      stopping.abort();
      // Closing the connection ends the session, and with it the temporary slot; there is nothing to finish.
      await current?.sql.end({ timeout: 0 }).catch(() => {});
      await loop;
    },
  };
}

function lsnToBigInt(lsn: string): bigint {
  const [hi = "0", lo = "0"] = lsn.split("/");
  return (BigInt(`0x${hi}`) << 32n) | BigInt(`0x${lo}`);
}

const max = (a: bigint, b: bigint) => (a > b ? a : b);

/** 'r': written, flushed and applied up to `lsn`; lets the server drop the WAL before it. */
function standbyStatus(lsn: bigint): Buffer {
  const message = Buffer.alloc(34);
  message[0] = 0x72;
  message.writeBigUInt64BE(lsn, 1);
  message.writeBigUInt64BE(lsn, 9);
  message.writeBigUInt64BE(lsn, 17);
  message.writeBigInt64BE(BigInt(Date.now() - PG_EPOCH_MS) * 1000n, 25);
  message[33] = 0;
  return message;
}
