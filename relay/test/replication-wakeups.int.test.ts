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
      // Reading pauses past one queued row: a relay whose sends are stuck (Kafka away) takes nothing.
      rows: { maxQueuedRows: 1 },
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
});
