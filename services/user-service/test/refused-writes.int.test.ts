/**
 * PostgreSQL answering but refusing to write: a full disk, a server read only after a failover or for a
 * switchover. An outage, not a bug: an event is retried until the server writes again and then applied,
 * never dead-lettered, and a request is answered 503 (nothing was applied), not 500.
 */
import { randomUUID } from "node:crypto";
import { HEADERS, TOPICS } from "@saga/contracts";
import { deadLetters, inbox, outbox, reservations, users } from "@saga/db/user";
import { eventMessage, metricValue } from "@saga/messaging/testing";
import { setDatabaseDefaults } from "@saga/tools/infra";
import { freshDatabase, useFreshDatabase } from "@saga/tools/test/harness";
import { eq } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it, onTestFinished, vi } from "vitest";
import {
  createUser,
  freshTopicPrefix,
  openDatabase,
  startConsumerHarness,
  startInProcess,
  testEnv,
} from "./support.ts";

const waitFor = <T>(check: () => Promise<T>) => vi.waitFor(check, { timeout: 20_000, interval: 50 });

describe("an event whose apply the database refuses (disk full)", () => {
  const databaseUrl = useFreshDatabase("user_refused_apply");
  // A small budget, so that an unexpected failure would be dead-lettered within a second or so.
  const RETRY_ATTEMPTS = 3;
  let harness: Awaited<ReturnType<typeof startConsumerHarness>>;

  beforeAll(async () => {
    harness = await startConsumerHarness(databaseUrl(), "user-refused-apply-test", {
      CONSUMER_RETRY_ATTEMPTS: RETRY_ATTEMPTS,
      CONSUMER_RETRY_BACKOFF_MS: 100,
      CONSUMER_RETRY_BACKOFF_MAX_MS: 400,
    });
  });

  afterAll(() => harness?.stop());

  it("is retried past the retry budget as an outage, and applied once the database writes again, not dead-lettered", async () => {
    const { db, prefix, producer, service } = harness;
    const userId = await createUser(service, 1000);
    // The ledger cannot grow, as on a full disk: every insert into it fails with 53100 disk_full. The
    // dead letter's tables (dead_letters, the outbox) still take rows, as when they have free space left.
    await db.pool.query(`
      create function refuse_ledger_rows() returns trigger language plpgsql as $$
      begin
        raise exception 'could not extend file: No space left on device' using errcode = '53100';
      end $$;
      create trigger no_space before insert on reservations
        for each row execute function refuse_ledger_rows();`);
    onTestFinished(async () => {
      await db.pool.query("drop trigger if exists no_space on reservations");
    });

    const o = { orderId: randomUUID(), userId, amount: 300 };
    const message = eventMessage(TOPICS.orderCreated, o, prefix);
    await producer.send([message]);
    const retries = (failure: string) =>
      metricValue(service.runtime.metrics.registry, "saga_consumer_retries_total", {
        topic: TOPICS.orderCreated,
        failure,
      });
    const letters = () => db.db.select().from(deadLetters).where(eq(deadLetters.messageKey, o.orderId));
    // Past the budget, unless it was dead-lettered meanwhile.
    await waitFor(async () => {
      const tried = (await retries("transient")) + (await retries("unexpected"));
      const dead = (await letters()).length;
      expect(tried >= RETRY_ATTEMPTS + 2 || dead > 0).toBe(true);
    });
    expect(await letters()).toEqual([]);
    // Counted as an outage (the database), not as a bug.
    expect(await retries("unexpected")).toBe(0);

    await db.pool.query("drop trigger no_space on reservations");
    const eventId = message.headers[HEADERS.eventId] as string;
    await waitFor(async () =>
      expect(await db.db.select().from(inbox).where(eq(inbox.eventId, eventId))).toHaveLength(1),
    );
    const [reserved] = await db.db.select().from(reservations).where(eq(reservations.orderId, o.orderId));
    expect(reserved).toMatchObject({ status: "RESERVED", amount: 300 });
    const [user] = await db.db.select().from(users).where(eq(users.id, userId));
    expect(user?.balance).toBe(700);
    const answers = await db.db
      .select({ topic: outbox.topic })
      .from(outbox)
      .where(eq(outbox.aggregateId, o.orderId));
    expect(answers).toEqual([{ topic: TOPICS.creditReserved }]);
    expect(await letters()).toEqual([]);
  });
});

describe("a write while the database is read only (a failover, a switchover)", () => {
  it("is answered 503 and writes nothing; once the database writes again, the next write succeeds on a new connection", async () => {
    const url = await freshDatabase("user_read_only");
    // One connection: given back to the pool after its write was refused, it would serve the next one too.
    const service = await startInProcess(testEnv(url, await freshTopicPrefix(), { DB_POOL_MAX: 1 }));
    onTestFinished(() => service.stop());
    const db = openDatabase(url);
    onTestFinished(() => db.close());
    // The sessions that connect from now on are read only, as on a primary demoted by a failover or made
    // read only for a switchover (ALTER DATABASE … SET default_transaction_read_only). The service's pool
    // has not connected yet.
    expect(service.runtime.db.pool.totalCount).toBe(0);
    await setDatabaseDefaults(url, { default_transaction_read_only: "on" });

    const post = (username: string) =>
      service.app.request("/users", {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ username, initialBalance: 100 }),
      });
    const refusedName = `u-${randomUUID()}`;
    const refused = await post(refusedName);
    expect(refused.status).toBe(503);
    expect(await refused.json()).toMatchObject({ error: "the database is unavailable; retry later" });
    expect(await db.db.select().from(users).where(eq(users.username, refusedName))).toEqual([]);

    // Writable again, as the new primary is to a new connection: the next write is applied at once.
    await setDatabaseDefaults(url, { default_transaction_read_only: "off" });
    const name = `u-${randomUUID()}`;
    const created = await post(name);
    expect(created.status).toBe(201);
    expect(await db.db.select().from(users).where(eq(users.username, name))).toHaveLength(1);
  });
});
