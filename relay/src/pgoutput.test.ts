import { describe, expect, it } from "vitest";
import { decodePgoutput, outboxRowOf, relationRole } from "./pgoutput.ts";

// Messages built byte for byte as the protocol documents them (version 1):
// https://www.postgresql.org/docs/current/protocol-logicalrep-message-formats.html
const cstring = (s: string) => Buffer.concat([Buffer.from(s), Buffer.from([0])]);
const int16 = (n: number) => Buffer.from([n >> 8, n & 0xff]);
const int32 = (n: number) => {
  const b = Buffer.alloc(4);
  b.writeInt32BE(n);
  return b;
};
const int64 = (n: bigint) => {
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(n);
  return b;
};

const COLUMNS = [
  "id",
  "position",
  "aggregate_id",
  "topic",
  "event_type",
  "schema_version",
  "payload",
  "headers",
  "created_at",
  "published_at",
];

function relation(): Buffer {
  return Buffer.concat([
    Buffer.from("R"),
    int32(16_384),
    cstring("public"),
    cstring("outbox"),
    Buffer.from("d"),
    int16(COLUMNS.length),
    ...COLUMNS.map((c) =>
      Buffer.concat([Buffer.from([c === "id" ? 1 : 0]), cstring(c), int32(25), int32(-1)]),
    ),
  ]);
}

function insert(values: (string | null)[]): Buffer {
  return Buffer.concat([
    Buffer.from("I"),
    int32(16_384),
    Buffer.from("N"),
    int16(values.length),
    ...values.map((v) =>
      v === null
        ? Buffer.from("n")
        : Buffer.concat([Buffer.from("t"), int32(Buffer.byteLength(v)), Buffer.from(v)]),
    ),
  ]);
}

describe("decodePgoutput", () => {
  it("reads a transaction's id, a relation's columns, an insert's values and a commit's end position", () => {
    const rel = decodePgoutput(relation());
    expect(rel).toEqual({
      kind: "relation",
      relationId: 16_384,
      namespace: "public",
      name: "outbox",
      columns: COLUMNS,
    });

    const values = [
      "6f1d3c1e-0b7e-4b8e-9a55-2c1f4a3b5d6e",
      "42",
      "order-1",
      "order.created",
      "OrderCreated",
      "1",
      '{"orderId":"order-1","note":"é ✓"}',
      '{"traceparent": "00-abc-01", "n": 1}',
      "2026-12-01 12:34:56.123456+00",
      null,
    ];
    const ins = decodePgoutput(insert(values));
    expect(ins).toEqual({ kind: "insert", relationId: 16_384, values });
    if (ins.kind !== "insert" || rel.kind !== "relation") throw new Error("unreachable");
    expect(outboxRowOf(rel.columns, ins.values)).toEqual({
      id: values[0],
      position: "42",
      aggregateId: "order-1",
      topic: "order.created",
      eventType: "OrderCreated",
      schemaVersion: "1",
      payload: values[6],
      headers: { traceparent: "00-abc-01", n: 1 },
      createdAt: new Date("2026-12-01T12:34:56.123Z"),
    });

    const commit = Buffer.concat([
      Buffer.from("C"),
      Buffer.from([0]),
      int64(0x1_0000_0010n),
      int64(0x1_0000_0040n),
      int64(0n),
    ]);
    expect(decodePgoutput(commit)).toEqual({ kind: "commit", endLsn: 0x1_0000_0040n });
    const begin = Buffer.concat([Buffer.from("B"), int64(0x1_0000_0040n), int64(0n), int32(-2)]);
    // An xid is unsigned: 2^32 - 2 here, not -2.
    expect(decodePgoutput(begin)).toEqual({ kind: "begin", xid: 0xffff_fffe });
    expect(decodePgoutput(Buffer.from("Y"))).toEqual({ kind: "other" });
  });

  it("refuses a row it cannot publish rather than send it wrong", () => {
    const columns = COLUMNS.slice(0, -1);
    const row = ["id", "1", "a", "t", "E", "1", "{}", "{}", "2026-12-01 12:34:56+00"];
    expect(outboxRowOf(columns, row).createdAt).toEqual(new Date("2026-12-01T12:34:56Z"));
    expect(() =>
      outboxRowOf(
        columns,
        row.map((v, i) => (i === 2 ? null : v)),
      ),
    ).toThrow(/aggregate_id/);
    expect(() =>
      outboxRowOf(
        columns,
        row.map((v, i) => (i === 8 ? "12/01/2026 12:34:56 CET" : v)),
      ),
    ).toThrow(/created_at/);
  });

  it("takes only the outbox's inserts as outbox rows, and skips only tables that cannot hold them", () => {
    expect(relationRole({ name: "outbox", columns: COLUMNS })).toBe("outbox");
    // A partition of a partitioned outbox is published under its own name, its columns maybe in another order.
    expect(relationRole({ name: "outbox_2026_12", columns: [...COLUMNS].reverse() })).toBe("unsure");
    expect(relationRole({ name: "audit", columns: ["id", "note", "created_at"] })).toBe("other");
  });
});
