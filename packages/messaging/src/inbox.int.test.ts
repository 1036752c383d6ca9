import { randomUUID } from "node:crypto";
import { TOPICS } from "@saga/contracts";
import { createPgDatabase, migrateDatabase } from "@saga/db";
import type { IncomingMessage } from "@saga/kafka";
import { createLogger } from "@saga/observability";
import { freshDatabase } from "@saga/tools/test/harness";
import { Registry } from "prom-client";
import { describe, expect, it, onTestFinished, vi } from "vitest";
import { createInbox } from "./inbox.ts";
import { createMessagingMetrics } from "./metrics.ts";
import { eventMessage } from "./testing/index.ts";

describe("a dead letter of a message whose key is its order id in upper case", () => {
  it("waits for the batch that holds the order's lock, as every writer of the order's outbox rows does", async () => {
    const url = await freshDatabase("inbox_dead_letter");
    await migrateDatabase(url, "user");
    const db = createPgDatabase(url, {});
    onTestFinished(() => db.close());
    let holding = () => {};
    const held = new Promise<void>((resolve) => {
      holding = resolve;
    });
    let release = () => {};
    const released = new Promise<void>((resolve) => {
      release = resolve;
    });
    // Before the pool closes (the last registered runs first), whatever the test's end.
    onTestFinished(() => release());
    const inbox = createInbox({
      db,
      consumerGroup: "dead-letter-lock",
      topicPrefix: "",
      topics: [TOPICS.orderCreated],
      // A batch of the order's events, in its transaction: the claim took the order's lock.
      applyBatch: {
        read: async () => undefined,
        apply: async () => {
          holding();
          await released;
          return undefined;
        },
      },
      logger: createLogger("inbox-test", "silent"),
      metrics: createMessagingMetrics(new Registry()),
    });
    const orderId = randomUUID();
    const consumed = (key: string, offset: number): IncomingMessage => ({
      ...eventMessage(TOPICS.orderCreated, { orderId, userId: randomUUID(), amount: 5 }, ""),
      key,
      partition: 0,
      offset: String(offset),
      timestamp: Date.now(),
    });

    const batch = inbox.handle(consumed(orderId, 0));
    await held;
    // Another message of the order, sent by a producer that spells the key in upper case, given up on.
    let settled = false;
    const deadLetter = inbox
      .deadLetter(
        { ...consumed(orderId.toUpperCase(), 1), value: "{not json" },
        { reason: "poison", error: new Error("not json"), attempts: 1 },
      )
      .finally(() => {
        settled = true;
      });
    const waited = await vi.waitFor(
      async () => {
        if (settled) return false;
        const { rows } = await db.pool.query<{ n: number }>(
          `select count(*)::int as n from pg_locks
           where locktype = 'advisory' and not granted
             and database = (select oid from pg_database where datname = current_database())`,
        );
        expect(rows[0]?.n).toBe(1);
        return true;
      },
      { timeout: 20_000, interval: 20 },
    );
    expect(waited, "the dead letter waited for the batch's lock on the order").toBe(true);

    release();
    await batch;
    await deadLetter;
    const { rows } = await db.pool.query<{ aggregateId: string }>(
      `select aggregate_id as "aggregateId" from outbox where topic = $1`,
      [`${TOPICS.orderCreated}.dlq`],
    );
    // Its message keyed as the one it gives up on was.
    expect(rows).toEqual([{ aggregateId: orderId.toUpperCase() }]);
  });
});
