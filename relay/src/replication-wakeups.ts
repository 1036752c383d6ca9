import { randomBytes } from "node:crypto";
import type { Duplex } from "node:stream";
import { sleep } from "@saga/runtime";
import postgres from "postgres";

/** The publication the migrations create: inserts into `outbox`, nothing else. */
export const OUTBOX_PUBLICATION = "outbox_relay";

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
};

export type ReplicationWakeups = {
  /** True while the stream is up; while it is not, the caller polls faster. */
  readonly connected: boolean;
  stop(): Promise<void>;
};

// Byte offsets in the replication protocol's CopyData messages.
// https://www.postgresql.org/docs/current/protocol-replication.html#PROTOCOL-REPLICATION-XLOGDATA
const XLOG_DATA = 0x77; // 'w': 1 + walStart(8) + walEnd(8) + sendTime(8) + pgoutput message
const KEEPALIVE = 0x6b; // 'k': 1 + walEnd(8) + sendTime(8) + replyRequested(1)
const PGOUTPUT_INSERT = 0x49; // 'I', https://www.postgresql.org/docs/current/protocol-logicalrep-message-formats.html
const PG_EPOCH_MS = Date.UTC(2000, 0, 1);

/**
 * Wakes the relay when a transaction that inserted outbox rows commits, by streaming the outbox
 * publication through a TEMPORARY logical replication slot (pgoutput). The stream carries no data we
 * rely on: rows are always read from the table, so a lost or late message costs latency, never a row.
 *
 * Why a temporary slot: it exists only while this session does, so a relay that is down (or on
 * standby) holds back no WAL at all; and every received position is confirmed at once, so a live one
 * holds back only what it has not read yet. Nothing runs on the writers' commit path (unlike NOTIFY,
 * whose commit-time lock serialises every notifying commit: see README.md for the numbers).
 */
export function startReplicationWakeups(opts: ReplicationWakeupsOptions): ReplicationWakeups {
  const { url, holderName, onWake, onError, minRetryMs = 500, maxRetryMs = 10_000, feedbackMs = 5000 } = opts;
  const stopping = new AbortController();
  let connected = false;
  let current: { sql: postgres.Sql; stream?: Duplex } | undefined;

  const slotName = `relay_${holderName
    .toLowerCase()
    .replace(/[^a-z0-9_]/g, "_")
    .slice(0, 40)}_${randomBytes(4).toString("hex")}`;

  /** Runs one replication session; resolves when it ends, rejects when it could not start. */
  async function session(): Promise<void> {
    // No statement_timeout here: START_REPLICATION is one statement that streams for as long as the
    // session lives. The stream is only a wake-up; a poll underneath covers it when it stalls.
    const sql = postgres(url, {
      max: 1,
      max_lifetime: null,
      idle_timeout: 0,
      connect_timeout: 5,
      fetch_types: false,
      onnotice: () => {},
      connection: { application_name: `${holderName}/wakeups`, replication: "database" },
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
      const confirm = (replyRequested = false) => {
        if (received === confirmed && !replyRequested) return;
        confirmed = received;
        stream.write(standbyStatus(received));
      };
      const feedback = setInterval(() => confirm(), feedbackMs);
      try {
        await new Promise<void>((resolve, reject) => {
          stream.on("data", (chunk: Buffer) => {
            if (chunk[0] === XLOG_DATA) {
              received = max(received, chunk.readBigUInt64BE(9));
              if (chunk[25] === PGOUTPUT_INSERT) onWake();
            } else if (chunk[0] === KEEPALIVE) {
              received = max(received, chunk.readBigUInt64BE(1));
              if (chunk[17]) confirm(true);
            }
          });
          stream.once("error", reject);
          stream.once("close", () => resolve());
          connected = true;
          // Rows committed while we were not listening announce nothing: look once.
          onWake();
        });
      } finally {
        clearInterval(feedback);
        connected = false;
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
