import { createLogger } from "@saga/observability";
import { setDatabaseDefaults } from "@saga/tools/infra";
import { describe, expect, it, onTestFinished } from "vitest";
import type { PendingRow } from "../src/outbox-store.ts";
import { startReplicationWakeups } from "../src/replication-wakeups.ts";
import { eventually, freshOutbox, row, writeRows } from "./support.ts";

/** A CDC stream on the test's outbox, stopped when it ends, with what it logged and its errors. */
function startStream(url: string, maxQueuedRows: number, onWake: () => void = () => {}) {
  const errors: Error[] = [];
  const logged: { level: number; msg: string; table?: string }[] = [];
  const logger = createLogger("relay", "info", {
    destination: { write: (line: string) => void logged.push(JSON.parse(line)) },
  });
  const wakeups = startReplicationWakeups({
    url,
    holderName: "bounded-stream",
    onWake,
    onError: (err) => errors.push(err),
    feedbackMs: 200,
    rows: { maxQueuedRows, maxHoldMs: 600_000 },
    logger,
  });
  onTestFinished(() => wakeups.stop());
  return { wakeups, errors, logged };
}

/** Takes what the stream holds of `generation`, up to 1,000 rows, once it holds some. */
function taken(stream: ReturnType<typeof startStream>, generation: number, what: string) {
  return eventually(
    what,
    async () => {
      // An error ended the connection: say which (the wait's cause).
      if (stream.errors[0]) throw stream.errors[0];
      return stream.wakeups.take(1000, generation);
    },
    10_000,
    50,
  );
}

describe("the replication stream", () => {
  it("stays connected while its queue is full and nothing is read, past the server's wal_sender_timeout", async () => {
    const { url, sql } = await freshOutbox();
    // A WAL sender that ends a connection silent for 1 s (the server's default is 60 s): a database's
    // settings hold for the logical replication sessions connected to it too.
    await setDatabaseDefaults(url, { wal_sender_timeout: "1000" });
    const errors: Error[] = [];
    const wakeups = startReplicationWakeups({
      url,
      holderName: "paused-stream",
      onWake: () => {},
      onError: (err) => errors.push(err),
      feedbackMs: 200,
      // Reading pauses past one queued row (half the bound): a relay whose sends are stuck (Kafka away)
      // takes nothing; and the rows are not given up meanwhile (see the next test).
      rows: { maxQueuedRows: 2, maxHoldMs: 600_000 },
    });
    onTestFinished(() => wakeups.stop());
    await eventually("the stream", async () => wakeups.connected, 20_000, 50);
    const { generation } = wakeups;
    for (let i = 1; i <= 3; i++) await writeRows(sql, [row("order-1", i)]);
    await eventually("the queue full", async () => wakeups.queuedRows >= 2, 10_000, 50);

    await new Promise((r) => setTimeout(r, 3000));
    expect(errors, "the connection ended").toEqual([]);
    expect(wakeups.generation, "no new connection").toBe(generation);
    expect(wakeups.connected).toBe(true);
  });

  it("gives up rows held past maxHoldMs without an acknowledgement, so that its slot moves on, on the same connection", async () => {
    const { url, sql } = await freshOutbox();
    const errors: Error[] = [];
    const wakeups = startReplicationWakeups({
      url,
      holderName: "held-stream",
      onWake: () => {},
      onError: (err) => errors.push(err),
      feedbackMs: 200,
      rows: { maxQueuedRows: 1000, maxHoldMs: 500 },
    });
    onTestFinished(() => wakeups.stop());
    await eventually("the stream", async () => wakeups.connected, 20_000, 50);
    const { generation } = wakeups;
    const confirmed = async () => {
      const [slot] = await sql<{ lsn: string }[]>`
        select confirmed_flush_lsn::text as lsn from pg_replication_slots where database = current_database()`;
      return slot?.lsn;
    };
    const startedAt = await confirmed();

    // A relay whose send hangs on a broker that is away: it took a batch and never acknowledges it.
    await writeRows(sql, [row("order-1", 1)]);
    await eventually("the first row", async () => wakeups.queuedRows === 1, 10_000, 50);
    expect(wakeups.take(10, generation)?.rows).toHaveLength(1);
    const [{ lsn } = { lsn: "" }] = await sql<{ lsn: string }[]>`select pg_current_wal_lsn()::text as lsn`;
    await writeRows(sql, [row("order-1", 2)]);

    // Held, the slot would keep every WAL record after its starting point until the batch's acknowledgement.
    await eventually("the slot to move past the WAL written while the batch was held", async () => {
      const [r] = await sql<{ past: boolean }[]>`
        select bool_and(confirmed_flush_lsn >= ${lsn}::pg_lsn) as past from pg_replication_slots
        where database = current_database()`;
      return r?.past === true;
    });
    expect(startedAt, "the slot's position before").not.toBe(await confirmed());
    expect(wakeups.generation, "a new starting point: the caller reads the table").toBeGreaterThan(
      generation,
    );
    expect(wakeups.take(10, generation), "the given-up generation's rows").toBeUndefined();
    expect(errors, "the connection ended").toEqual([]);
    expect(wakeups.connected).toBe(true);
  });

  it("holds at most maxQueuedRows rows: a larger transaction is given up to the table at its commit, on the same connection", async () => {
    const { url, sql } = await freshOutbox();
    // Every commit wakes the caller, which then finds what the stream holds.
    let mostHeld = 0;
    const stream = startStream(url, 100, () => {
      mostHeld = Math.max(mostHeld, stream.wakeups.queuedRows);
    });
    const { wakeups, errors, logged } = stream;
    await eventually("the stream", async () => wakeups.connected, 20_000, 50);
    const { generation } = wakeups;

    await writeRows(sql, [row("order-0", 1)]);
    await eventually("the first row", async () => wakeups.queuedRows === 1, 10_000, 50);
    // A bulk insert: one transaction of 1,000 rows, ten times what the stream may hold.
    const bulk = Array.from({ length: 1000 }, (_, i) => row(`order-${i % 10}`, i + 2));
    await writeRows(sql, bulk);
    const [after] = await writeRows(sql, [row("order-1", 1002)]);
    await eventually(
      "the bulk transaction to be received",
      async () => wakeups.generation > generation || mostHeld > 100,
      10_000,
      50,
    );

    expect(mostHeld, "rows held in memory").toBeLessThanOrEqual(100);
    // Given up, with the row before it: the caller reads the table (which has them all) for a new
    // starting point, and takes from the stream what came after.
    expect(wakeups.generation, "a new starting point").toBe(generation + 1);
    expect(wakeups.take(1000, generation), "the given-up generation's rows").toBeUndefined();
    const batch = await taken(stream, wakeups.generation, "the row after the bulk transaction");
    expect(batch.rows.map((r) => r.id)).toEqual([after?.id]);
    expect(logged.map((l) => l.msg)).toContain(
      "a transaction with more outbox rows than the stream may hold: read from the table instead",
    );
    expect(errors, "the connection ended").toEqual([]);
    expect(wakeups.connected).toBe(true);
  });

  it("decodes each insert with its own table's columns, and skips a table of the publication that is not the outbox", async () => {
    const { url, sql } = await freshOutbox();
    // A fork's table in the relay's publication: its own columns, some named as the outbox's.
    await sql`create table audit (note text, id bigint, created_at timestamptz not null default now())`;
    await sql`alter publication outbox_relay add table audit`;
    const stream = startStream(url, 1000);
    const { wakeups, errors, logged } = stream;
    await eventually("the stream", async () => wakeups.connected, 20_000, 50);
    const { generation } = wakeups;

    const written = await sql.begin(async (tx) => {
      await tx`insert into audit (note, id) values ('first', 1)`;
      const [a] = await tx<{ id: string }[]>`insert into outbox ${tx(row("order-1", 1))} returning id`;
      await tx`insert into audit (note, id) values ('second', 2)`;
      const [b] = await tx<{ id: string }[]>`insert into outbox ${tx(row("order-1", 2))} returning id`;
      return [a?.id, b?.id];
    });
    // On the same connection: each table's Relation message was sent once, before its first insert.
    const [third] = await writeRows(sql, [row("order-1", 3)]);
    await sql`insert into audit (note, id) values ('third', 3)`;

    const rows: PendingRow[] = [];
    while (rows.length < 3) rows.push(...(await taken(stream, generation, "the outbox rows")).rows);
    expect(rows.map((r) => r.id)).toEqual([...written, third?.id]);
    expect(rows.map((r) => JSON.parse(r.payload).seq)).toEqual([1, 2, 3]);
    expect(rows.map((r) => r.aggregateId)).toEqual(["order-1", "order-1", "order-1"]);
    expect(logged.filter((l) => l.table === "public.audit").map((l) => l.msg)).toEqual([
      "public.audit, in the publication, is not the outbox: its inserts are skipped",
    ]);
    expect(errors, "the connection ended").toEqual([]);
    expect(wakeups.generation, "no new starting point").toBe(generation);
  });

  it("reads from the table a transaction that inserted into a table with the outbox's columns under another name", async () => {
    const { url, sql } = await freshOutbox();
    // As a partition of a partitioned outbox is published (without publish_via_partition_root): under
    // its own name, with the outbox's columns, maybe in another order.
    await sql`create table outbox_2026 (payload text, headers jsonb, created_at timestamptz not null default now(),
      id uuid, position bigint, aggregate_id text, topic text, event_type text, schema_version text)`;
    await sql`alter publication outbox_relay add table outbox_2026`;
    const stream = startStream(url, 1000);
    const { wakeups, errors, logged } = stream;
    await eventually("the stream", async () => wakeups.connected, 20_000, 50);
    const { generation } = wakeups;

    await sql.begin(async (tx) => {
      await tx`insert into outbox ${tx(row("order-1", 1))}`;
      await tx`insert into outbox_2026 ${tx({ ...row("order-1", 2), position: 2 })}`;
    });
    const [after] = await writeRows(sql, [row("order-1", 3)]);

    await eventually(
      "the transaction to be received",
      async () => wakeups.generation > generation || wakeups.queuedRows >= 2,
      10_000,
      50,
    );
    expect(
      wakeups.take(1000, generation)?.rows.map((r) => r.aggregateId),
      "its rows handed out as the outbox's",
    ).toBeUndefined();
    expect(wakeups.generation, "a new starting point").toBe(generation + 1);
    const batch = await taken(stream, generation + 1, "the row after, from the new starting point");
    expect(batch.rows.map((r) => r.id)).toEqual([after?.id]);
    expect(logged.filter((l) => l.table === "public.outbox_2026")).toHaveLength(1);
    expect(errors, "the connection ended").toEqual([]);
  });
});
