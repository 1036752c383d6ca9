import { describe, expect, it } from "vitest";
import { BACKLOG, createOutboxStore, MARK_PUBLISHED } from "../src/outbox-store.ts";
import { freshOutbox } from "./support.ts";

describe("marking rows published after an outage", () => {
  it("probes outbox_pkey per row, not the whole backlog, when the statistics date from an empty one", async () => {
    const { sql } = await freshOutbox();
    // The steady state: the statistics of an outbox whose rows are all published (null_frac 0 for
    // published_at); no autoanalyze comes to update them while the backlog grows.
    await sql`alter table outbox set (autovacuum_enabled = off)`;
    await sql`
      insert into outbox (aggregate_id, topic, event_type, schema_version, payload, published_at)
      select g::text, 'order.created', 'OrderCreated', '1', '{}', now() - interval '10 minutes'
      from generate_series(1, 100000) g`;
    await sql`analyze outbox`;
    // Kafka was away: a backlog, which the statistics do not know of.
    await sql`
      insert into outbox (aggregate_id, topic, event_type, schema_version, payload)
      select g::text, 'order.created', 'OrderCreated', '1', '{}' from generate_series(1, 10000) g`;
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
    await sql`
      insert into outbox (aggregate_id, topic, event_type, schema_version, payload)
      select g::text, 'order.created', 'OrderCreated', '1', '{}' from generate_series(1, 2000) g`;
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
    const { sql } = await freshOutbox();
    await sql`alter table outbox set (autovacuum_enabled = off)`;
    // An hour of publishing, then Kafka away: half the outbox waits, and the statistics know it.
    await sql`
      insert into outbox (aggregate_id, topic, event_type, schema_version, payload, published_at)
      select g::text, 'order.created', 'OrderCreated', '1', '{}', now() - interval '10 minutes'
      from generate_series(1, 20000) g`;
    await sql`
      insert into outbox (aggregate_id, topic, event_type, schema_version, payload, created_at)
      select g::text, 'order.created', 'OrderCreated', '1', '{}', now() - interval '1 minute' + g * interval '1 ms'
      from generate_series(1, 20000) g`;
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
