import { createPgDatabase, migrateDatabase } from "@saga/db";
import { freshDatabase } from "@saga/tools/test/harness";
import { sql } from "drizzle-orm";
import { describe, expect, it, onTestFinished } from "vitest";
import { EXPIRING, expiredBatch, PRUNE_BATCH, pruneExpired } from "./housekeeping.ts";

describe.each(["user", "order"] as const)("pruneExpired on the %s database", (service) => {
  it("deletes the inbox rows and idempotency keys past the retention, more than a batch of each, through an index", async () => {
    const url = await freshDatabase(`prune_${service}`);
    await migrateDatabase(url, service);
    const db = createPgDatabase(url, {});
    onTestFinished(() => db.close());
    const old = PRUNE_BATCH + 500;
    const kept = 2000;
    const write = (n: number, prefix: string, age: string) =>
      Promise.all([
        db.pool.query({
          text: `insert into inbox (consumer_group, event_id, topic, partition, "offset", processed_at)
                 select 'prune', $2 || i, 't', 0, i, now() - $3::interval from generate_series(1, $1::int) i`,
          values: [n, prefix, age],
        }),
        db.pool.query({
          text: `insert into idempotency_keys (subject, key, request_hash, status, body, created_at)
                 select 'prune', $2 || i, 'h', 201, '{}', now() - $3::interval from generate_series(1, $1::int) i`,
          values: [n, prefix, age],
        }),
      ]);
    await write(old, "old-", "2 hours");
    await write(kept, "new-", "30 minutes");

    expect(await pruneExpired(db.db, 1)).toBe(2 * old);
    for (const table of ["inbox", "idempotency_keys"]) {
      const { rows } = await db.pool.query({
        text: `select count(*)::int as n, count(*) filter (where ${table === "inbox" ? "event_id" : "key"} like 'new-%')::int as new from ${table}`,
      });
      expect(rows[0], table).toEqual({ n: kept, new: kept });
    }

    // The next round's batches, the ones that find nothing, as the planner plans them with the table's
    // statistics up to date: each reads an index, never the whole table.
    await db.pool.query({ text: "analyze inbox, idempotency_keys" });
    for (const expiring of EXPIRING) {
      const plan = (await db.db.execute(sql`explain ${expiredBatch(expiring, 1)}`)).rows
        .map((r) => r["QUERY PLAN"])
        .join("\n");
      expect(plan, plan).not.toMatch(/Seq Scan/);
      expect(plan, plan).toMatch(
        new RegExp(`Index (Only )?Scan using ${expiring[0]}_\\w+ on ${expiring[0]}\\b`),
      );
    }
    expect(await pruneExpired(db.db, 1)).toBe(0);
  });
});
