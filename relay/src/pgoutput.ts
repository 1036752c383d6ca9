import type { PendingRow } from "./outbox-store.ts";

/**
 * The few pgoutput messages (protocol version 1) the relay needs to publish outbox rows straight from the
 * replication stream: Begin (the transaction's id, to wait until it is visible before its rows are sent),
 * Relation (the columns of a table), Insert (a row in text form) and Commit (where the transaction ends,
 * the position to confirm once its rows are on Kafka). Everything else (Type, Origin, Truncate) is skipped.
 * https://www.postgresql.org/docs/current/protocol-logicalrep-message-formats.html
 */
export type PgoutputMessage =
  | { kind: "begin"; xid: number }
  | { kind: "relation"; relationId: number; namespace: string; name: string; columns: string[] }
  | { kind: "insert"; relationId: number; values: (string | null)[] }
  | { kind: "commit"; endLsn: bigint }
  | { kind: "other" };

/** Decodes one pgoutput message (the payload of an XLogData message). */
export function decodePgoutput(buf: Buffer): PgoutputMessage {
  const reader = new Reader(buf, 1);
  switch (buf[0]) {
    case 0x42:
      // 'B': final LSN, commit timestamp, xid (32 bits, without its epoch).
      reader.skip(16);
      return { kind: "begin", xid: reader.uint32() };
    case 0x52: {
      // 'R': relation id, namespace, name, replica identity, columns (flags, name, type oid, typmod).
      const relationId = reader.int32();
      const namespace = reader.cstring();
      const name = reader.cstring();
      reader.skip(1);
      const columns: string[] = [];
      for (let n = reader.int16(); n > 0; n--) {
        reader.skip(1);
        columns.push(reader.cstring());
        reader.skip(8);
      }
      return { kind: "relation", relationId, namespace, name, columns };
    }
    case 0x49: {
      // 'I': relation id, 'N', then the new tuple.
      const relationId = reader.int32();
      reader.skip(1);
      const values: (string | null)[] = [];
      for (let n = reader.int16(); n > 0; n--) {
        const kind = reader.byte();
        if (kind === 0x74) values.push(reader.text(reader.int32()));
        // 'n' null; 'u' an unchanged TOASTed value (only in updates, which the publication does not send).
        else if (kind === 0x6e || kind === 0x75) values.push(null);
        else throw new Error(`pgoutput: unexpected column kind ${kind} (binary mode is not requested)`);
      }
      return { kind: "insert", relationId, values };
    }
    case 0x43:
      // 'C': flags, commit LSN, end LSN, timestamp.
      reader.skip(9);
      return { kind: "commit", endLsn: reader.int64() };
    default:
      return { kind: "other" };
  }
}

/** An outbox row as the stream carries it: `ageSeconds` is filled in when it is taken for a send. */
export type StreamedRow = Omit<PendingRow, "ageSeconds">;

const REQUIRED = [
  "id",
  "position",
  "aggregate_id",
  "topic",
  "event_type",
  "schema_version",
  "payload",
  "headers",
  "created_at",
] as const;

/**
 * What the relay makes of a relation the stream describes. `outbox`: its inserts are the outbox's rows,
 * sent as they come. `other`: a table without every column the relay sends, so not the outbox nor one of
 * its partitions (a fork added it to the publication): its inserts are skipped. `unsure`: a table with
 * those columns under another name, as a partition of a partitioned outbox is published (unless the
 * publication has `publish_via_partition_root`) or a look-alike: its inserts may be outbox rows and may
 * not, so the transactions with one are read from the table instead, which holds exactly the outbox's rows.
 */
export function relationRole({ name, columns }: { name: string; columns: readonly string[] }) {
  if (name === "outbox") return "outbox";
  return REQUIRED.every((column) => columns.includes(column)) ? "unsure" : "other";
}

/**
 * Maps an Insert of the outbox to the row the relay sends, by the column names of its Relation message
 * (so a column added later changes nothing). Timestamps come in the WAL sender's text form, which the
 * stream's session fixes to ISO in UTC (`2026-12-01 12:34:56.123456+00`).
 */
export function outboxRowOf(columns: readonly string[], values: readonly (string | null)[]): StreamedRow {
  const value = (name: (typeof REQUIRED)[number]): string => {
    const v = values[columns.indexOf(name)];
    if (v === undefined || v === null) throw new Error(`pgoutput: outbox insert without ${name}`);
    return v;
  };
  const createdAt = new Date(value("created_at").replace(" ", "T").replace(/\+00$/, "Z"));
  if (Number.isNaN(createdAt.getTime()))
    throw new Error(`pgoutput: created_at ${value("created_at")} is not an ISO timestamp in UTC`);
  return {
    id: value("id"),
    position: value("position"),
    aggregateId: value("aggregate_id"),
    topic: value("topic"),
    eventType: value("event_type"),
    schemaVersion: value("schema_version"),
    payload: value("payload"),
    headers: JSON.parse(value("headers")) as Record<string, string>,
    createdAt,
  };
}

class Reader {
  private readonly buf: Buffer;
  private at: number;
  constructor(buf: Buffer, at: number) {
    this.buf = buf;
    this.at = at;
  }
  byte(): number {
    return this.buf.readUInt8(this.at++);
  }
  int16(): number {
    const v = this.buf.readInt16BE(this.at);
    this.at += 2;
    return v;
  }
  int32(): number {
    const v = this.buf.readInt32BE(this.at);
    this.at += 4;
    return v;
  }
  uint32(): number {
    const v = this.buf.readUInt32BE(this.at);
    this.at += 4;
    return v;
  }
  int64(): bigint {
    const v = this.buf.readBigUInt64BE(this.at);
    this.at += 8;
    return v;
  }
  skip(n: number): void {
    this.at += n;
  }
  cstring(): string {
    const end = this.buf.indexOf(0, this.at);
    if (end < 0) throw new Error("pgoutput: unterminated string");
    const s = this.buf.toString("utf8", this.at, end);
    this.at = end + 1;
    return s;
  }
  text(length: number): string {
    const s = this.buf.toString("utf8", this.at, this.at + length);
    this.at += length;
    return s;
  }
}
