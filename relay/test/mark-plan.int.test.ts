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
    expect(generic).toMatch(/Hash (Right )?Anti Join/);
    expect(generic).not.toContain("<> ALL");

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
