import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startFaultProxy } from "@saga/tools/fault-proxy";
import { freePort, startKafka } from "@saga/tools/infra";
import { kafkaBrokers } from "@saga/tools/test/harness";
import { describe, expect, it, onTestFinished } from "vitest";
import {
  allPublished,
  eventually,
  expectEveryRowInOrder,
  freshOutbox,
  freshTopicPrefix,
  metricValue,
  ownPostgresServer,
  type RelayProcess,
  readAll,
  relayEnv,
  row,
  spawnRelay,
  startRelayInProcess,
  type TestRow,
  writeRows,
} from "./support.ts";

// The CDC test creates replication slots, which wait for every transaction open on their server: on a
// server of this file's own, no other file's transactions (see ownPostgresServer).
const ownServerUrl = ownPostgresServer();

// The shortest the relay takes with the default statement bound (env.ts); the default is 30 s.
const SEND_STALL_MS = "15000";
// A stall, then a takeover and a publication: well within this on a quiet machine.
const TAKEOVER_MS = 90_000;
const timeout = 240_000;

const isActive = async (relay: RelayProcess) =>
  metricValue(await relay.metrics(), "saga_relay_active", { outbox: "order" }) === 1;

const sendErrors = async (relay: RelayProcess) =>
  metricValue(await relay.metrics(), "saga_relay_errors_total", { outbox: "order", stage: "send" }) ?? 0;

/**
 * A broker of the test's own with a listener behind a fault proxy: a client that bootstraps through the
 * proxy is sent back to it for every later connection (tools/src/infra's `proxiedListeners`, as the chaos
 * stack does), so cutting the proxy cuts that client off from Kafka, and nobody else.
 */
async function brokerWithProxiedListener() {
  const dir = await mkdtemp(join(tmpdir(), "relay-cut-off-"));
  const [port, controllerPort, listenerPort, proxyPort] = [
    await freePort(),
    await freePort(),
    await freePort(),
    await freePort(),
  ];
  const link = await startFaultProxy({ name: "a→kafka", port: proxyPort, targetPort: listenerPort });
  const broker = await startKafka({
    dataDir: join(dir, "kafka"),
    port,
    controllerPort,
    durable: false,
    proxiedListeners: [{ name: "CLIENT_A", port: listenerPort, advertisedPort: proxyPort }],
  });
  onTestFinished(async () => {
    await broker.stop();
    await link.close();
    await rm(dir, { recursive: true, force: true });
  });
  return { brokers: broker.brokers, link, viaLink: `127.0.0.1:${link.port}` };
}

/** Waits for `standby` to own the outbox and publish every row; says what each relay logged if not. */
async function standbyPublishesAll(
  sql: Parameters<typeof allPublished>[0],
  a: RelayProcess,
  b: RelayProcess,
) {
  try {
    await eventually("b to own the outbox", () => isActive(b), TAKEOVER_MS, 200);
    await allPublished(sql);
  } catch (err) {
    const tail = (r: RelayProcess) => r.output().split("\n").slice(-15).join("\n");
    throw new Error(`${(err as Error).message}\na logged:\n${tail(a)}\nb logged:\n${tail(b)}`, {
      cause: err,
    });
  }
}

describe("an owner cut off from Kafka, not from PostgreSQL", () => {
  for (const mode of ["table", "cdc"] as const) {
    it(`gives the outbox up to a standby that reaches Kafka, which publishes what waits, in order (${mode})`, {
      timeout,
    }, async () => {
      const kafka = await brokerWithProxiedListener();
      const { url, sql } = await freshOutbox("order", ownServerUrl());
      const prefix = await freshTopicPrefix(kafka.brokers);
      const env = {
        ORDER_DB_URL: url,
        KAFKA_TOPIC_PREFIX: prefix,
        RELAY_MODE: mode,
        RELAY_SEND_STALL_MS: SEND_STALL_MS,
      };
      const a = spawnRelay({ ...env, RELAY_ID: "a", KAFKA_BROKERS: kafka.viaLink });
      await eventually("a to own the outbox", () => isActive(a), 30_000, 100);
      const b = spawnRelay({ ...env, RELAY_ID: "b", KAFKA_BROKERS: kafka.brokers.join(",") });
      await b.port;
      const written: TestRow[] = await writeRows(sql, [row("order-1", 1), row("order-2", 2)]);
      await allPublished(sql, 60_000);
      expect(await isActive(a), "a published the first rows").toBe(true);
      const errorsBefore = await sendErrors(a);

      // a's sends now neither resolve nor fail: the Kafka client retries them for ever, while a's lock
      // session is healthy and keeps the lock.
      kafka.link.inject({ kind: "blackhole" });
      for (let seq = 3; seq < 9; seq++)
        written.push(...(await writeRows(sql, [row(`order-${seq % 3}`, seq)])));

      await standbyPublishesAll(sql, a, b);
      expect(kafka.link.fault(), "a is still cut off").toEqual({ kind: "blackhole" });
      expect(await isActive(a), "a stands by").toBe(false);
      expect(await sendErrors(a), "a's stall counted").toBeGreaterThan(errorsBefore);
      expect(a.output()).toMatch(/"msg":"no send acknowledged by Kafka/);

      // Once its link is back, what a had in flight may land too: copies after the first ones.
      kafka.link.heal();
      written.push(...(await writeRows(sql, [row("order-1", 9)])));
      await allPublished(sql);
      expect(await isActive(b), "b keeps the outbox").toBe(true);
      expectEveryRowInOrder(written, await readAll(prefix, kafka.brokers), prefix);
    });
  }

  it("that never reached Kafka (a bootstrap that does not answer) hands the outbox on to one that does", {
    timeout,
  }, async () => {
    // a's only broker address answers nothing: its producer's connect waits for ever.
    const link = await startFaultProxy({
      name: "a→kafka",
      targetPort: Number(kafkaBrokers()[0]?.split(":")[1]),
    });
    onTestFinished(() => link.close());
    link.inject({ kind: "blackhole" });
    const { url, sql } = await freshOutbox("order", ownServerUrl());
    const prefix = await freshTopicPrefix();
    const env = { ORDER_DB_URL: url, KAFKA_TOPIC_PREFIX: prefix, RELAY_SEND_STALL_MS: SEND_STALL_MS };
    const a = spawnRelay({ ...env, RELAY_ID: "a", KAFKA_BROKERS: `127.0.0.1:${link.port}` });
    await eventually("a to own the outbox", () => isActive(a), 30_000, 100);
    const b = spawnRelay({ ...env, RELAY_ID: "b", KAFKA_BROKERS: kafkaBrokers().join(",") });
    await b.port;
    const written = await writeRows(sql, [row("order-1", 1), row("order-2", 2), row("order-1", 3)]);

    await standbyPublishesAll(sql, a, b);
    expect(await isActive(a), "a stands by").toBe(false);
    expect(await sendErrors(a), "a's stall counted").toBeGreaterThan(0);
    expect(a.output()).toMatch(/"msg":"no send acknowledged by Kafka/);
    expectEveryRowInOrder(written, await readAll(prefix), prefix);
  });
});

describe("an owner on a slow link to Kafka", () => {
  it("is not stalled while Kafka acknowledges each request of a batch sent in several, however long the whole batch takes (cdc)", {
    timeout,
  }, async () => {
    const kafka = await brokerWithProxiedListener();
    const { url, sql } = await freshOutbox("order", ownServerUrl());
    const prefix = await freshTopicPrefix(kafka.brokers);
    const batchSize = 10;
    const relay = startRelayInProcess(
      relayEnv(url, prefix, {
        KAFKA_BROKERS: [kafka.viaLink],
        RELAY_MODE: "cdc",
        RELAY_BATCH_SIZE: batchSize,
        RELAY_POLL_INTERVAL_MS: 600_000,
        // No bound on one statement, so that the stall may be this short (env.ts).
        DB_STATEMENT_TIMEOUT_MS: 0,
        RELAY_SEND_STALL_MS: 2000,
      }),
    );
    const metric = async (name: string, labels: Record<string, string> = {}) =>
      metricValue(await (await relay.app.request("/metrics")).text(), name, { outbox: "order", ...labels });
    await eventually("the relay to stream", async () => (await metric("saga_relay_streaming")) === 1, 60_000);
    const aggregates = ["order-1", "order-2", "order-3", "order-4", "order-5"];
    // Connected, with the topic's metadata, before the link slows down.
    const written = await writeRows(
      sql,
      aggregates.map((aggregate) => row(aggregate, 0)),
    );
    await allPublished(sql);

    // 700 ms a request; 5 × RELAY_BATCH_SIZE rows in one transaction (the most the stream holds of one)
    // are one batch, sent in 5 requests: 3.5 s in all, longer than the stall.
    kafka.link.inject({ kind: "latency", ms: 350 });
    const bulk = Array.from({ length: 5 * batchSize }, (_, i) => row(aggregates[i % 5] ?? "", i + 1));
    written.push(...(await writeRows(sql, bulk)));
    await allPublished(sql, 60_000);

    expect(await metric("saga_relay_errors_total", { stage: "send" }), "send errors").toBe(0);
    expect(await metric("saga_relay_active"), "still the owner").toBe(1);
    expect(
      await metric("saga_relay_batch_size_bucket", { le: String(batchSize) }),
      "a batch larger than RELAY_BATCH_SIZE was sent",
    ).toBeLessThan((await metric("saga_relay_batch_size_count")) ?? 0);
    kafka.link.heal();
    expect(expectEveryRowInOrder(written, await readAll(prefix, kafka.brokers), prefix), "copies").toBe(0);
  });
});
