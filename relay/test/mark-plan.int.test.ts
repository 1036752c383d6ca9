import type { Sql } from "postgres";
import { describe, expect, it } from "vitest";
import { BACKLOG, createOutboxStore, DELETE_EXPIRED, MARK_PUBLISHED } from "../src/outbox-store.ts";
import { OUTBOX_PROBE } from "../src/service.ts";
import { freshOutbox } from "./support.ts";

/**
 * Writes `n` rows to the outbox, the g-th (g from 1 to n) published at `publishedAt` and created at
 * `createdAt`, SQL expressions of `g` (by default unpublished, created now).
 */
function insertRows(sql: Sql, n: number, at: { publishedAt?: string; createdAt?: string } = {}) {
  return sql.unsafe(
    `insert into outbox (aggregate_id, topic, event_type, schema_version, payload, published_at, created_at)
     select g::text, 'order.created', 'OrderCreated', '1', '{}', ${at.publishedAt ?? "null"}, ${at.createdAt ?? "now()"}
     from generate_series(1, $1) g`,
    [n],
  );
}

/** A fresh outbox that no autovacuum visits: its statistics are the ones the test makes. */
async function unvacuumedOutbox() {
  const outbox = await freshOutbox();
  await outbox.sql`alter table outbox set (autovacuum_enabled = off)`;
  return outbox;
}

describe("marking rows published after an outage", () => {
  it("probes outbox_pkey per row, not the whole backlog, when the statistics date from an empty one", async () => {
    // The steady state: the statistics of an outbox whose rows are all published (null_frac 0 for
    // published_at); no autoanalyze comes to update them while the backlog grows.
    const { sql } = await unvacuumedOutbox();
    await insertRows(sql, 100000, { publishedAt: "now() - interval '10 minutes'" });
    await sql`analyze outbox`;
    // Kafka was away: a backlog, which the statistics do not know of.
    await insertRows(sql, 10000);
    const unpublished = await sql<{ id: string }[]>`
      select id from outbox where published_at is null order by position limit 250`;
    const ids = unpublished.map((r) => r.id);
    const sinceAck = ids.map(() => 0.1);

    const plan = (rows: { "QUERY PLAN": string }[]) => rows.map((r) => r["QUERY PLAN"]).join("\n");
    // As the store plans it: the first executions of its prepared statement with these values, and the
    // generic plan PostgreSQL may keep after them.
    const custom = plan(
      await sql.unsafe(`explain (costs off) ${MARK_PUBLISHED}`, [
        sql.array(ids, 2950),
        sql.array(sinceAck, 701),
      ]),
    );
    const generic = plan(await sql.unsafe(`explain (generic_plan, costs off) ${MARK_PUBLISHED}`));
    for (const p of [custom, generic]) {
      expect(p).toMatch(/Index Scan using outbox_pkey on outbox o\n\s+Index Cond: \(id = acked\.id\)/);
      expect(p).not.toContain("outbox_unpublished_idx");
    }

    // The statement still leaves a row marked already as it was.
    const [published] = await sql<{ id: string; at: Date }[]>`
      select id, published_at as at from outbox where published_at is not null limit 1`;
    const store = createOutboxStore(sql);
    await store.markPublished([...ids, published?.id ?? ""], [...sinceAck, 0]);
    const [after] = await sql<{ at: Date; marked: number; unpublished: number }[]>`
      select (select published_at from outbox where id = ${published?.id ?? ""}) as at,
             (select count(*)::int from outbox where id = any(${sql.array(ids, 2950)}::uuid[])
                and published_at is not null) as marked,
             (select count(*)::int from outbox where published_at is null) as unpublished`;
    expect(after).toEqual({ at: published?.at, marked: 250, unpublished: 9750 });
  });
});

describe("reading the backlog while rows await their mark", () => {
  it("hashes the rows on Kafka instead of comparing each backlog row with each of them", async () => {
    const { sql } = await freshOutbox();
    await insertRows(sql, 2000);
    await sql`analyze outbox`;
    const onKafka = await sql<{ id: string }[]>`
      select id from outbox where published_at is null order by position limit 250`;

    // The plan PostgreSQL may keep for the prepared statement after its first executions.
    const generic = (await sql.unsafe(`explain (generic_plan, costs off) ${BACKLOG}`))
      .map((r) => r["QUERY PLAN"])
      .join("\n");
    expect(generic).toMatch(/NOT \(ANY \(id = \(hashed SubPlan \d+\)/);
    expect(generic).not.toContain("<> ALL");
    expect(generic).not.toContain("Nested Loop");

    const store = createOutboxStore(sql);
    expect(
      (
        await store.backlog(
          undefined,
          onKafka.map((r) => r.id),
        )
      ).rows,
    ).toBe(1750);
    expect((await store.backlog()).rows).toBe(2000);
  });
});

describe("reading the backlog of an outage", () => {
  // The backlog is read at every scrape, within 2 s: a count of every unpublished row read them all (2,000,000
  // rows behind: a parallel seq scan of the whole outbox, about 1 s), and past a few million it never
  // finished, so the gauges froze while the relay drained.
  it("counts no further than its cap, and reads both figures through outbox_unpublished_idx", async () => {
    const { sql } = await unvacuumedOutbox();
    // An hour of publishing, then Kafka away: half the outbox waits, and the statistics know it.
    await insertRows(sql, 20000, { publishedAt: "now() - interval '10 minutes'" });
    await insertRows(sql, 20000, { createdAt: "now() - interval '1 minute' + g * interval '1 ms'" });
    await sql`analyze outbox`;
    const onKafka = await sql<{ id: string }[]>`
      select id from outbox where published_at is null order by position limit 250`;
    const ids = onKafka.map((r) => r.id);

    const store = createOutboxStore(sql, { backlogCap: 1000 });
    const capped = await store.backlog(undefined, ids);
    expect(capped.rows).toBe(1000);
    // The oldest row not on Kafka: the 251st written, a minute less 251 ms old.
    expect(capped.oldestAgeSeconds).toBeGreaterThan(59);
    expect(capped.oldestAgeSeconds).toBeLessThan(120);
    await sql`update outbox set published_at = now() where position in (
      select position from outbox where published_at is null order by position offset 500)`;
    expect((await store.backlog(undefined, ids)).rows).toBe(250);
    expect((await store.backlog()).rows).toBe(500);

    const plan = (rows: { "QUERY PLAN": string }[]) => rows.map((r) => r["QUERY PLAN"]).join("\n");
    const readsTheIndex = (p: string) => {
      expect(p).not.toMatch(/Seq Scan on outbox/);
      // Once for the count, once for the oldest row, each as far as its limit.
      expect(p.match(/Limit\n\s+->  Index Scan using outbox_unpublished_idx/g), p).toHaveLength(2);
    };
    // The generic plan, which the store's sessions keep, and a custom one with a cap of 1,000.
    readsTheIndex(plan(await sql.unsafe(`explain (generic_plan, costs off) ${BACKLOG}`)));
    readsTheIndex(plan(await sql.unsafe(`explain (costs off) ${BACKLOG}`, [sql.array(ids, 2950), 1000])));
  });
});

describe("deleting the rows past the retention", () => {
  it("finds them by ctid, whatever plan the session keeps, not by a join over the whole outbox", async () => {
    const { sql } = await unvacuumedOutbox();
    // Published rows: 36,000 past an hour's retention (published 2 to 1.5 hours ago), 14,000 within it (50
    // to 27 minutes ago); and a backlog.
    await insertRows(sql, 50000, {
      publishedAt: `case when g <= 36000 then now() - interval '2 hours' + g * interval '50 ms'
                         else now() - interval '50 minutes' + (g - 36000) * interval '100 ms' end`,
    });
    await insertRows(sql, 1000);
    await sql`analyze outbox`;

    // The generic plan: the relay's sessions keep plan_cache_mode auto, which chooses it once it looks no
    // dearer than the custom plans; the services' force it (db/src/pg-client.ts).
    const plan = await sql.begin(async (tx) => {
      await tx`set local plan_cache_mode = force_generic_plan`;
      await tx.unsafe(`prepare delete_expired(float8, int8) as ${DELETE_EXPIRED}`);
      const rows = await tx.unsafe(`explain (costs off) execute delete_expired(3600, 1000)`);
      await tx`deallocate delete_expired`;
      return rows.map((r) => r["QUERY PLAN"]).join("\n");
    });
    expect(plan).toMatch(/Tid Scan on outbox\n\s+TID Cond: \(ctid = ANY/);
    expect(plan).toContain("Index Scan using outbox_published_at_idx");
    expect(plan).not.toMatch(/Seq Scan|Join/);

    // The oldest first, a batch at a time, and only the published rows older than the retention.
    const store = createOutboxStore(sql);
    const before = await sql<{ at: Date }[]>`
      select published_at as at from outbox where published_at is not null order by published_at limit 1 offset 20000`;
    expect(await store.deleteExpired(3600, 20000)).toBe(20000);
    const [oldest] = await sql<{ at: Date }[]>`select min(published_at) as at from outbox`;
    expect(oldest?.at).toEqual(before[0]?.at);
    let deleted = 0;
    for (let n = 20000; n === 20000; deleted += n) n = await store.deleteExpired(3600, 20000);
    const [left] = await sql<{ expired: number; kept: number; unpublished: number }[]>`
      select count(*) filter (where published_at < now() - interval '1 hour')::int as expired,
             count(*) filter (where published_at >= now() - interval '1 hour')::int as kept,
             count(*) filter (where published_at is null)::int as unpublished
      from outbox`;
    expect(deleted).toBe(16000);
    expect(left).toEqual({ expired: 0, kept: 14000, unpublished: 1000 });
  });
});

describe("the readiness probe on an outbox a drain emptied", () => {
  it("reads none of its pages, and still fails where the outbox cannot be read", async () => {
    const { sql } = await unvacuumedOutbox();
    // A backlog published and deleted (OUTBOX_RETENTION_SECONDS=0), before any vacuum: its pages are
    // still there, every row in them dead.
    await insertRows(sql, 20000);
    await sql`delete from outbox`;

    const plan = (
      await sql.unsafe(`explain (analyze, buffers, costs off, timing off, summary off) ${OUTBOX_PROBE}`)
    )
      .map((r) => r["QUERY PLAN"])
      .join("\n");
    // What the statement read when it ran, not what its planning did.
    const run = plan.split("\nPlanning:")[0];
    expect(run).toContain("Seq Scan on outbox (never executed)");
    expect(run).not.toContain("Buffers");
    expect(await sql.unsafe(OUTBOX_PROBE)).toHaveLength(0);

    // A role that may not read the outbox, and a database without one.
    await expect(
      sql.begin(async (tx) => {
        await tx`create role relay_probe_test`;
        await tx`set local role relay_probe_test`;
        await tx.unsafe(OUTBOX_PROBE);
      }),
    ).rejects.toThrow(/permission denied for table outbox/);
    await sql`drop table outbox`;
    await expect(sql.unsafe(OUTBOX_PROBE)).rejects.toThrow(/relation "outbox" does not exist/);
  });
});
