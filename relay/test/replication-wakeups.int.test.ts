import { describe, expect, it, onTestFinished } from "vitest";
import { startReplicationWakeups } from "../src/replication-wakeups.ts";
import { eventually, freshOutbox, row, writeRows } from "./support.ts";

describe("the replication stream", () => {
  it("stays connected while its queue is full and nothing is read, past the server's wal_sender_timeout", async () => {
    const { url, sql } = await freshOutbox();
    // A WAL sender that ends a connection silent for 1 s (the server's default is 60 s).
    const shortTimeout = new URL(url);
    shortTimeout.searchParams.set("wal_sender_timeout", "1000");
    const errors: Error[] = [];
    const wakeups = startReplicationWakeups({
      url: shortTimeout.toString(),
      holderName: "paused-stream",
      onWake: () => {},
      onError: (err) => errors.push(err),
      feedbackMs: 200,
      // Reading pauses past one queued row: a relay whose sends are stuck (Kafka away) takes nothing;
      // and the rows are not given up meanwhile (see the next test).
      rows: { maxQueuedRows: 1, maxHoldMs: 600_000 },
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
});
