import { HEADERS, TOPICS } from "@saga/contracts";
import { MAX_MESSAGE_BYTES } from "@saga/kafka";
import { createLogger } from "@saga/observability";
import { describe, expect, it, onTestFinished } from "vitest";
import { createRelayService } from "../src/service.ts";
import {
  allPublished,
  backlog,
  eventually,
  expectEveryRowInOrder,
  freshOutbox,
  freshTopicPrefix,
  metricValue,
  orderWakeups,
  readAll,
  relayEnv,
  row,
  startRelayInProcess,
  writeRows,
} from "./support.ts";

const TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

describe("relay", () => {
  it("publishes the rows of one transaction in order, keyed by aggregate, with the envelope headers", async () => {
    const { url, sql } = await freshOutbox();
    const prefix = await freshTopicPrefix();
    const relay = startRelayInProcess(relayEnv(url, prefix));

    const a = crypto.randomUUID();
    const b = crypto.randomUUID();
    const written = await writeRows(sql, [
      row(a, 1, TOPICS.orderCreated, { [HEADERS.traceparent]: TRACEPARENT }),
      row(b, 1),
      row(a, 2, TOPICS.orderCanceled),
      row(b, 2),
      row(a, 3, TOPICS.orderCanceled),
      row(b, 3, TOPICS.orderCanceled, { "dlq-error": "kept as it is" }),
    ]);
    await allPublished(sql);

    const messages = await readAll(prefix);
    expect(expectEveryRowInOrder(written, messages, prefix)).toBe(0);
    const stored = await sql<{ id: string; created_at: Date; published_at: Date | null }[]>`
      select id, created_at, published_at from outbox order by position`;
    for (const m of messages) {
      const r = stored.find((s) => s.id === m.headers[HEADERS.eventId]);
      expect(r?.published_at, "marked published").toBeInstanceOf(Date);
      const payload = JSON.parse(m.value ?? "{}") as { orderId: string; seq: number };
      expect(m.key).toBe(payload.orderId);
      expect(m.headers[HEADERS.aggregateId]).toBe(payload.orderId);
      expect(m.headers[HEADERS.schemaVersion]).toBe("1");
      expect(m.headers[HEADERS.eventType]).toBe(
        m.topic.endsWith(TOPICS.orderCreated) ? "OrderCreated" : "OrderCanceled",
      );
      expect(m.headers[HEADERS.occurredAt]).toBe(r?.created_at.toISOString());
    }
    const first = messages.find((m) => m.headers[HEADERS.eventId] === written[0]?.id);
    expect(first?.topic).toBe(`${prefix}${TOPICS.orderCreated}`);
    expect(first?.headers[HEADERS.traceparent]).toBe(TRACEPARENT);
    expect(messages.find((m) => m.headers[HEADERS.eventId] === written[5]?.id)?.headers["dlq-error"]).toBe(
      "kept as it is",
    );

    const text = await (await relay.app.request("/metrics")).text();
    expect(metricValue(text, "saga_relay_rows_published_total", { outbox: "order" })).toBe(6);
    expect(metricValue(text, "saga_relay_active", { outbox: "order" })).toBe(1);
    expect(metricValue(text, "saga_relay_outbox_backlog", { outbox: "order" })).toBe(0);
    expect(metricValue(text, "saga_relay_outbox_lag_seconds", { outbox: "order" })).toBe(0);
    expect(metricValue(text, "saga_relay_commit_to_ack_seconds_count", { outbox: "order" })).toBe(6);
    expect(metricValue(text, "saga_relay_batch_size_sum", { outbox: "order" })).toBe(6);
    expect((await relay.app.request("/ready")).status).toBe(200);
  });

  it("tails the user and the order outbox side by side", async () => {
    const user = await freshOutbox("user");
    const order = await freshOutbox("order");
    const prefix = await freshTopicPrefix();
    const relay = startRelayInProcess(relayEnv(order.url, prefix, { USER_DB_URL: user.url }));
    const fromUser = await writeRows(user.sql, [row("order-1", 1, TOPICS.orderCanceled), row("order-2", 1)]);
    const fromOrder = await writeRows(order.sql, [row("order-1", 2), row("order-3", 1), row("order-1", 3)]);
    await Promise.all([allPublished(user.sql), allPublished(order.sql)]);
    // Two outboxes have no order between them; each keeps its own per key.
    const messages = await readAll(prefix);
    const ids = (rows: { id: string }[]) => new Set(rows.map((r) => r.id));
    expectEveryRowInOrder(
      fromUser,
      messages.filter((m) => ids(fromUser).has(m.headers[HEADERS.eventId] ?? "")),
      prefix,
    );
    expectEveryRowInOrder(
      fromOrder,
      messages.filter((m) => ids(fromOrder).has(m.headers[HEADERS.eventId] ?? "")),
      prefix,
    );
    expect(messages).toHaveLength(5);
    const text = await (await relay.app.request("/metrics")).text();
    for (const [outbox, n] of [
      ["user", 2],
      ["order", 3],
    ] as const) {
      expect(metricValue(text, "saga_relay_rows_published_total", { outbox })).toBe(n);
      expect(metricValue(text, "saga_relay_active", { outbox })).toBe(1);
    }
  });

  it("publishes rows of one key that together are more than Kafka takes in one request, in order", async () => {
    // Dead letters of one key, each within DEAD_LETTER_MAX_BYTES: one record batch of all of them was
    // refused at every attempt (MESSAGE_TOO_LARGE), and the outbox waited behind them.
    const { url, sql } = await freshOutbox();
    const prefix = await freshTopicPrefix();
    startRelayInProcess(relayEnv(url, prefix));
    const key = crypto.randomUUID();
    const rows = [1, 2, 3, 4, 5].map((seq) => ({ ...row(key, seq), payload: String(seq).repeat(300_000) }));
    const written = await writeRows(sql, [...rows, row(key, 6)]);
    await allPublished(sql);
    expect(expectEveryRowInOrder(written, await readAll(prefix), prefix)).toBe(0);
  });

  it("names a row larger than a Kafka message may be in an error log, and keeps the rows behind it", async () => {
    // No writer of ours makes one (dead letters are cut, replays refused); were one there, the broker
    // refuses it at every attempt, and publishing the rows behind it would break their key's order.
    const { url, sql } = await freshOutbox();
    const prefix = await freshTopicPrefix();
    const logged: string[] = [];
    const relay = createRelayService(relayEnv(url, prefix), {
      logger: createLogger("relay", "error", {
        destination: { write: (line: string) => void logged.push(line) },
      }),
    });
    relay.start();
    onTestFinished(() => relay.stop());
    const key = crypto.randomUUID();
    const [big] = await writeRows(sql, [{ ...row(key, 1), payload: "x".repeat(1_100_000) }]);
    await writeRows(sql, [row(key, 2)]);

    const line = await eventually("the error log naming the row", async () =>
      logged.map((l) => JSON.parse(l) as Record<string, unknown>).find((l) => l.row === big?.id),
    );
    expect(line).toMatchObject({
      msg: expect.stringMatching(/larger than a Kafka message may be/),
      bytes: expect.any(Number),
      maxBytes: MAX_MESSAGE_BYTES,
    });
    expect(await backlog(sql)).toBe(2);
  });

  it("is woken by the commit, not by its poll", async () => {
    const { url, sql } = await freshOutbox();
    const prefix = await freshTopicPrefix();
    const relay = startRelayInProcess(relayEnv(url, prefix, { RELAY_POLL_INTERVAL_MS: 600_000 }));
    // Until the stream is up the relay polls every 100 ms; creating the slot waits for every transaction
    // open on the server at that moment, which the other test files running alongside may hold a while.
    await eventually("the wake-up stream to be streaming", async () => {
      const [r] = await sql<{ n: number }[]>`
        select count(*)::int as n from pg_replication_slots s join pg_stat_replication r on r.pid = s.active_pid
        where s.database = current_database() and s.temporary and r.state = 'streaming'`;
      return r?.n === 1;
    });
    const wakeups = (source: "poll" | "replication") => orderWakeups(relay, source);
    // The relay sees the stream up a moment after the server does; until then it still polls every
    // 100 ms. Once no poll came for 300 ms it waits on the ten-minute one.
    let seen = -1;
    const polls = await eventually(
      "the relay to stop its fallback polling",
      async () => {
        const now = await wakeups("poll");
        const settled = now === seen;
        seen = now;
        return settled && now;
      },
      30_000,
      300,
    );
    const streamed = await wakeups("replication");

    // With a ten-minute poll, only a wake-up can explain a row published within seconds.
    for (let i = 1; i <= 3; i++) {
      await writeRows(sql, [row(crypto.randomUUID(), i)]);
      await allPublished(sql, 10_000);
    }
    // A row may be published by the round its predecessor's wake-up started, before its own commit's
    // message is counted: wait for the count rather than read it once.
    await eventually(
      "a wake-up from each commit",
      async () => (await wakeups("replication")) >= streamed + 3,
      10_000,
    );
    expect(await wakeups("replication")).toBeGreaterThanOrEqual(streamed + 3);
    expect(await wakeups("poll")).toBe(polls);
  });

  it("publishes a row whose lower position commits last, and keeps each aggregate's order", async () => {
    const { url, sql } = await freshOutbox();
    const prefix = await freshTopicPrefix();
    startRelayInProcess(relayEnv(url, prefix));
    const early = crypto.randomUUID();
    const late = crypto.randomUUID();

    // T1 takes its position first and commits last.
    let commitT1: () => void = () => {};
    let t1Inserted: (position: string) => void = () => {};
    const t1Position = new Promise<string>((resolve) => {
      t1Inserted = resolve;
    });
    const t1 = sql.begin(async (tx) => {
      await tx`select pg_advisory_xact_lock(hashtextextended(${late}, 0))`;
      const [r] = await tx<
        { position: string }[]
      >`insert into outbox ${tx(row(late, 1))} returning position::text as position`;
      t1Inserted(r?.position ?? "");
      await new Promise<void>((resolve) => {
        commitT1 = resolve;
      });
    });
    onTestFinished(() => commitT1());
    const t1At = await t1Position;
    const [t2Row] = await writeRows(sql, [row(early, 1), row(early, 2)]);
    expect(BigInt(t2Row?.position ?? 0)).toBeGreaterThan(BigInt(t1At));

    // T2's rows go out while T1's is invisible.
    await eventually("T2's rows to be published", async () => {
      const [r] = await sql<
        { n: number }[]
      >`select count(*)::int as n from outbox where aggregate_id = ${early} and published_at is not null`;
      return r?.n === 2;
    });
    expect(await backlog(sql)).toBe(0);

    // T1 commits behind the relay's back: a high-water mark would skip its row for good.
    commitT1();
    await t1;
    const t1More = await writeRows(sql, [row(late, 2)]);
    await allPublished(sql, 10_000);

    const messages = await readAll(prefix);
    const written = await sql<{ id: string; aggregateId: string; topic: string; position: string }[]>`
      select id, aggregate_id as "aggregateId", topic, position::text as position from outbox`;
    expect(written).toHaveLength(4);
    expect(t1More).toHaveLength(1);
    expectEveryRowInOrder(written, messages, prefix);
  });

  it("with a retention of 0, deletes each row once Kafka acknowledged it, each sent once and in order", async () => {
    const { url, sql } = await freshOutbox();
    const prefix = await freshTopicPrefix();
    const rowsLeft = async () => (await sql<{ n: number }[]>`select count(*)::int as n from outbox`)[0]?.n;
    // Committed before the relay starts: read from the table, in batches of 100.
    const written = await writeRows(
      sql,
      Array.from({ length: 1200 }, (_, i) =>
        row(`order-${i % 12}`, i, i % 3 ? TOPICS.orderCreated : TOPICS.orderCanceled),
      ),
    );
    const relay = startRelayInProcess(
      relayEnv(url, prefix, { OUTBOX_RETENTION_SECONDS: 0, RELAY_BATCH_SIZE: 100 }),
    );
    await eventually("the outbox to be empty", async () => (await rowsLeft()) === 0, 30_000);
    // Committed while it runs: woken by the commit (and in the CDC mode, sent from the stream).
    written.push(...(await writeRows(sql, [row("order-0", 1200), row("order-1", 1201)])));
    await eventually("the new rows to be deleted", async () => (await rowsLeft()) === 0, 10_000);

    expect(expectEveryRowInOrder(written, await readAll(prefix), prefix), "copies on Kafka").toBe(0);
    const text = await (await relay.app.request("/metrics")).text();
    expect(metricValue(text, "saga_relay_rows_published_total", { outbox: "order" })).toBe(1202);
    expect(metricValue(text, "saga_relay_outbox_backlog", { outbox: "order" })).toBe(0);
  });

  it("deletes published rows after the retention, in small batches", async () => {
    const { url, sql } = await freshOutbox();
    const prefix = await freshTopicPrefix();
    const relay = startRelayInProcess(
      relayEnv(url, prefix, { OUTBOX_RETENTION_SECONDS: 1, RELAY_CLEANUP_INTERVAL_MS: 200 }),
    );
    const rows = Array.from({ length: 1500 }, (_, i) => row(`agg-${i % 7}`, i));
    await writeRows(sql, rows);
    await allPublished(sql);
    await eventually(
      "the published rows to be deleted",
      async () => {
        const [r] = await sql<{ n: number }[]>`select count(*)::int as n from outbox`;
        return r?.n === 0;
      },
      15_000,
    );
    const text = await (await relay.app.request("/metrics")).text();
    expect(metricValue(text, "saga_relay_rows_deleted_total", { outbox: "order" })).toBe(1500);
    // Unpublished rows are never deleted, however old.
    await sql`insert into outbox ${sql({ ...row("old", 1), created_at: new Date(Date.now() - 86_400_000) })}`;
    await allPublished(sql);
  });
});
