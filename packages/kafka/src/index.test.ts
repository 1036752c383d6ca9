import { type TracingChannelSubscribers, tracingChannel } from "node:diagnostics_channel";
import { mkdtemp, rm } from "node:fs/promises";
import { type AddressInfo, connect, createServer, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freePort, type KafkaServer, startKafka } from "@saga/tools/infra";
import { freshGroupId, freshTopics, kafkaBrokers } from "@saga/tools/test/harness";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import {
  type ConsumerOptions,
  createKafka,
  type DeadLetterCause,
  type EventConsumer,
  type IncomingMessage,
  KAFKA_CLIENTS,
  type KafkaClient,
  type KafkaClientName,
} from "./index.ts";

const cleanups: (() => Promise<void>)[] = [];
// The clients' warnings and errors, printed only when a test fails: what the library saw is the first
// thing to know about a failure that happened on another machine.
let clientLog: string[] = [];
const record =
  (level: string) =>
  (fields: object, message: string): void => {
    clientLog.push(`${new Date().toISOString()} ${level} ${message} ${JSON.stringify(fields).slice(0, 300)}`);
  };
const testLogger = { debug: () => {}, info: () => {}, warn: record("warn"), error: record("error") };
afterEach(async (ctx) => {
  while (cleanups.length) await cleanups.pop()?.();
  if (ctx.task.result?.state === "fail")
    console.error(`client log of the failed test:\n${clientLog.join("\n")}`);
  clientLog = [];
});

// The conformance suite: every adapter behind the port must pass all of it against the real broker.
let adapter: KafkaClientName = KAFKA_CLIENTS[0];

function client(brokers = kafkaBrokers()): KafkaClient {
  const kafka = createKafka({ brokers, clientId: "kafka-module-test", client: adapter, logger: testLogger });
  cleanups.push(() => kafka.close());
  return kafka;
}

async function waitFor<T>(
  what: string,
  probe: () => T | undefined | Promise<T | undefined>,
  timeoutMs = 30_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe.each(KAFKA_CLIENTS)("@saga/kafka through %s", (name) => {
  beforeEach(() => {
    adapter = name;
  });

  it("sends keyed messages with headers and reads them back in order", async () => {
    const kafka = client();
    const { events } = await freshTopics(["events"]);
    const producer = await kafka.createProducer();
    cleanups.push(() => producer.close());
    await producer.send(
      Array.from({ length: 5 }, (_, i) => ({
        topic: events,
        key: "order-1",
        value: `v${i}`,
        headers: { "event-id": `e${i}` },
      })),
    );

    const read = await kafka.readToEnd([events]);
    expect(read.map((m) => [m.key, m.value, m.headers["event-id"]])).toEqual(
      Array.from({ length: 5 }, (_, i) => ["order-1", `v${i}`, `e${i}`]),
    );
    expect(new Set(read.map((m) => m.partition)).size).toBe(1);
  });

  it("sends messages of one key that together are more than the broker takes in one batch, in order", async () => {
    // Each is under the broker's message.max.bytes (1,048,588 by default); a partition's messages of one
    // request are one record batch, and two of them were refused (MESSAGE_TOO_LARGE) at every attempt.
    const kafka = client();
    const { events } = await freshTopics(["events"]);
    const producer = await kafka.createProducer();
    cleanups.push(() => producer.close());
    const values = ["a", "b", "c"].map((c) => c.repeat(600_000));
    await producer.send([
      ...values.map((value, i) => ({
        topic: events,
        key: "order-1",
        value,
        headers: { "event-id": `e${i}` },
      })),
      { topic: events, key: "order-1", value: "small", headers: { "event-id": "e3" } },
    ]);

    const read = await kafka.readToEnd([events]);
    expect(read.map((m) => [m.headers["event-id"], m.value])).toEqual([
      ...values.map((value, i) => [`e${i}`, value]),
      ["e3", "small"],
    ]);
  });

  it("commits a message only once it was handled or dead-lettered, and keeps the failure contract", async () => {
    const kafka = client();
    const { events } = await freshTopics(["events"], 1);
    const groupId = freshGroupId();
    const producer = await kafka.createProducer();
    cleanups.push(() => producer.close());
    await producer.send(
      ["ok-1", "flaky", "poison", "bug", "ok-2"].map((value) => ({
        topic: events,
        key: "k",
        value,
        headers: {},
      })),
    );

    const handled: string[] = [];
    const deadLettered: [string | null, DeadLetterCause][] = [];
    const retries: [string | null, number, string][] = [];
    const ended: (string | null)[] = [];
    // The group's committed offset each time a message failed: never past the failing message.
    const committedAtFailure: { value: string | null; offset: number; committed: number | undefined }[] = [];
    const failing = async (m: IncomingMessage, error: Error) => {
      const [p] = await kafka.consumerLag(groupId, [events]);
      committedAtFailure.push({ value: m.value, offset: Number(m.offset), committed: p?.committed });
      return error;
    };
    let flakyFailures = 0;
    let bugFailures = 0;
    const transient = Object.assign(new Error("transient"), { retriable: true });
    const poison = Object.assign(new Error("cannot decode"), { poison: true });
    const consumer: EventConsumer = await kafka.createConsumer({
      groupId,
      topics: [events],
      // Each commit sent at once, so that one made too early is seen by the next failure.
      commitIntervalMs: 0,
      async handle(m: IncomingMessage) {
        if (m.value === "flaky" && flakyFailures++ < 2) throw await failing(m, transient);
        if (m.value === "poison") throw await failing(m, poison);
        if (m.value === "bug") throw await failing(m, new TypeError(`x is undefined (${++bugFailures})`));
        handled.push(m.value ?? "");
      },
      classify: (err) => (err === transient ? "transient" : err === poison ? "poison" : "unexpected"),
      retry: { maxAttempts: 3, backoffMs: 10, maxBackoffMs: 20 },
      async deadLetter(m, cause) {
        deadLettered.push([m.value, cause]);
      },
      onRetry: (m, _err, { attempt, kind }) => retries.push([m.value, attempt, kind]),
      onRetriesEnded: (m) => ended.push(m.value),
    });
    cleanups.push(() => consumer.stop());

    await waitFor("all five messages", () => (handled.length + deadLettered.length === 5 ? true : undefined));
    expect(handled).toEqual(["ok-1", "flaky", "ok-2"]);
    expect(deadLettered).toEqual([
      ["poison", { reason: "poison", error: poison, attempts: 1 }],
      [
        "bug",
        {
          reason: "retries exhausted",
          error: expect.objectContaining({ message: "x is undefined (3)" }),
          attempts: 3,
        },
      ],
    ]);
    expect(retries).toEqual([
      ["flaky", 1, "transient"],
      ["flaky", 2, "transient"],
      ["bug", 1, "unexpected"],
      ["bug", 2, "unexpected"],
    ]);
    expect(ended).toEqual(["flaky", "bug"]);
    expect(committedAtFailure.map((f) => f.value)).toEqual(["flaky", "flaky", "poison", "bug", "bug", "bug"]);
    expect(committedAtFailure.filter((f) => f.committed === undefined || f.committed > f.offset)).toEqual([]);
    const lag = await waitFor("the committed offset", async () => {
      const [p] = await kafka.consumerLag(groupId, [events]);
      return p?.committed === 5 ? p : undefined;
    });
    expect(lag).toEqual({ topic: events, partition: 0, committed: 5, end: 5, lag: 0 });
  });

  it("resumes a group from its committed offset after a restart", async () => {
    const kafka = client();
    const { events } = await freshTopics(["events"], 1);
    const groupId = freshGroupId();
    const producer = await kafka.createProducer();
    cleanups.push(() => producer.close());
    const seen: string[] = [];
    const options = {
      groupId,
      topics: [events],
      handle: async (m: IncomingMessage) => {
        seen.push(m.value ?? "");
      },
      classify: () => "transient" as const,
      deadLetter: async () => {},
    };

    await producer.send([{ topic: events, key: "k", value: "first", headers: {} }]);
    const first = await kafka.createConsumer(options);
    await waitFor("first", () => (seen.includes("first") ? true : undefined));
    await first.stop();

    await producer.send([{ topic: events, key: "k", value: "second", headers: {} }]);
    const second = await kafka.createConsumer(options);
    cleanups.push(() => second.stop());
    await waitFor("second", () => (seen.includes("second") ? true : undefined));
    expect(seen).toEqual(["first", "second"]);
  });
  it("stops after the message in hand, not the rest of what it fetched, and the next member goes on from there", async () => {
    const kafka = client();
    const { events } = await freshTopics(["events"], 1);
    const groupId = freshGroupId();
    const producer = await kafka.createProducer();
    cleanups.push(() => producer.close());
    const values = Array.from({ length: 20 }, (_, i) => `m${i}`);
    // Sent before the consumer starts, so its first fetch holds them all.
    await producer.send(values.map((value) => ({ topic: events, key: "k", value, headers: {} })));

    let release = () => {};
    const released = new Promise<void>((resolve) => (release = resolve));
    const byFirst: string[] = [];
    const first = await kafka.createConsumer({
      groupId,
      topics: [events],
      // One message a chunk: the fetched batch is twenty of them.
      maxBatchSize: 1,
      async handle(m) {
        byFirst.push(m.value ?? "");
        await released;
      },
      classify: () => "transient" as const,
      deadLetter: async () => {},
    });
    cleanups.push(() => first.stop());
    await waitFor("the first message in hand", () => (byFirst.length > 0 ? true : undefined));
    const stopped = first.stop();
    release();
    await stopped;
    expect(byFirst).toEqual(["m0"]);

    const bySecond: string[] = [];
    const second = await kafka.createConsumer({
      groupId,
      topics: [events],
      async handle(m) {
        bySecond.push(m.value ?? "");
      },
      classify: () => "transient" as const,
      deadLetter: async () => {},
    });
    cleanups.push(() => second.stop());
    await waitFor("the rest", () => (bySecond.length === values.length - 1 ? true : undefined));
    expect(bySecond).toEqual(values.slice(1));
  });

  it("hands consecutive messages over as batches, and one by one when a batch fails", async () => {
    const kafka = client();
    const { events } = await freshTopics(["events"], 1);
    const producer = await kafka.createProducer();
    cleanups.push(() => producer.close());
    const values = Array.from({ length: 10 }, (_, i) => (i === 6 ? "poison" : `m${i}`));
    // Sent before the consumer starts, so its first fetch holds them all.
    await producer.send(values.map((value) => ({ topic: events, key: "k", value, headers: {} })));

    const batches: string[][] = [];
    const failedBatches: string[][] = [];
    const singles: string[] = [];
    const deadLettered: string[] = [];
    const consumer = await kafka.createConsumer({
      groupId: freshGroupId(),
      topics: [events],
      maxBatchSize: 4,
      async handleBatch(ms) {
        const batch = ms.map((m) => m.value ?? "");
        if (batch.includes("poison")) throw new Error("cannot apply");
        batches.push(batch);
      },
      onBatchFailed: (ms) => failedBatches.push(ms.map((m) => m.value ?? "")),
      async handle(m) {
        if (m.value === "poison") throw new Error("cannot apply");
        singles.push(m.value ?? "");
      },
      classify: () => "poison" as const,
      async deadLetter(m) {
        deadLettered.push(m.value ?? "");
      },
    });
    cleanups.push(() => consumer.stop());

    await waitFor("all ten messages", () =>
      batches.flat().length + singles.length + deadLettered.length === 10 ? true : undefined,
    );
    expect(batches).toEqual([
      ["m0", "m1", "m2", "m3"],
      ["m8", "m9"],
    ]);
    expect(failedBatches).toEqual([["m4", "m5", "poison", "m7"]]);
    expect(singles).toEqual(["m4", "m5", "m7"]);
    expect(deadLettered).toEqual(["poison"]);
  });

  it("keeps each partition in order in batches of several partitions, and a failing message holds up its own partition only", async () => {
    const kafka = client();
    const { events } = await freshTopics(["events"], 3);
    const producer = await kafka.createProducer();
    cleanups.push(() => producer.close());
    const keys = Array.from({ length: 9 }, (_, i) => `key-${i}`);
    // Sent before the consumer starts, so its first fetch holds every partition's messages.
    await producer.send(
      keys.flatMap((key) =>
        [0, 1, 2, 3].map((n) => ({
          topic: events,
          key,
          value: key === "key-0" && n === 1 ? "stuck" : `${key}/${n}`,
          headers: {},
        })),
      ),
    );

    let released = false;
    let stuckAttempts = 0;
    const applied: IncomingMessage[] = [];
    const handed: IncomingMessage[][] = [];
    const canApply = (m: IncomingMessage) => m.value !== "stuck" || released;
    const consumer = await kafka.createConsumer({
      groupId: freshGroupId(),
      topics: [events],
      // All or nothing, as a transaction would be.
      async handleBatch(ms) {
        handed.push(ms);
        if (!ms.every(canApply)) throw new Error("cannot apply yet");
        applied.push(...ms);
      },
      async handle(m) {
        if (!canApply(m)) {
          stuckAttempts++;
          throw new Error("cannot apply yet");
        }
        applied.push(m);
      },
      classify: () => "unexpected" as const,
      retry: { maxAttempts: 1000, backoffMs: 50, maxBackoffMs: 50 },
      deadLetter: async () => {},
    });
    cleanups.push(() => consumer.stop());

    // While "stuck" keeps failing, every other partition's messages are applied; its own wait behind it.
    const partitionOf = new Map((await kafka.readToEnd([events])).map((m) => [m.key, m.partition]));
    const stuckPartition = partitionOf.get("key-0");
    const elsewhere = keys.filter((key) => partitionOf.get(key) !== stuckPartition);
    expect(elsewhere.length).toBeGreaterThan(0);
    await waitFor("the other partitions, while the stuck message is retried", () =>
      stuckAttempts >= 3 && elsewhere.every((key) => applied.filter((m) => m.key === key).length === 4)
        ? true
        : undefined,
    );
    expect(applied.filter((m) => m.partition === stuckPartition).map((m) => m.value)).toEqual(["key-0/0"]);

    // A message that arrives on another partition once the batch has fallen back is applied too: the
    // partitions of the failed batch do not wait for its slowest. (Not kafkajs: it fetches a broker's
    // partitions again only once every batch of its last fetch is done.)
    const lateKey = elsewhere[0] as string;
    if (name === "platformatic") {
      await producer.send([{ topic: events, key: lateKey, value: `${lateKey}/4`, headers: {} }]);
      await waitFor("a message sent to another partition while the stuck one is retried", () =>
        applied.some((m) => m.value === `${lateKey}/4`) ? true : undefined,
      );
      expect(applied.filter((m) => m.partition === stuckPartition).map((m) => m.value)).toEqual(["key-0/0"]);
    }

    released = true;
    const sent = (key: string) =>
      [0, 1, 2, 3, 4]
        .filter((n) => n < 4 || (key === lateKey && name === "platformatic"))
        .map((n) => (key === "key-0" && n === 1 ? "stuck" : `${key}/${n}`));
    await waitFor("every message", () => (applied.length === keys.flatMap(sent).length ? true : undefined));
    for (const key of keys)
      expect(applied.filter((m) => m.key === key).map((m) => m.value)).toEqual(sent(key));
    // kafkajs hands over one partition at a time; the platformatic adapter whatever is queued.
    if (name === "platformatic")
      expect(handed.some((b) => new Set(b.map((m) => m.partition)).size > 1)).toBe(true);
  });

  it("never commits a partition past a message that keeps failing, though the message shared its batch with other partitions", async () => {
    const kafka = client();
    const { events } = await freshTopics(["events"], 3);
    const groupId = freshGroupId();
    const producer = await kafka.createProducer();
    cleanups.push(() => producer.close());
    const keys = Array.from({ length: 9 }, (_, i) => `key-${i}`);
    // Sent before the consumer starts, so its first fetch holds every partition's messages: the platformatic
    // adapter hands them over in batches of several partitions.
    await producer.send(
      keys.flatMap((key) =>
        [0, 1, 2, 3].map((n) => ({
          topic: events,
          key,
          value: key === "key-0" && n === 1 ? "stuck" : `${key}/${n}`,
          headers: {},
        })),
      ),
    );
    const stuck = (await kafka.readToEnd([events])).find((m) => m.value === "stuck");
    if (!stuck) throw new Error("the stuck message was not written");

    let released = false;
    let stuckAttempts = 0;
    const handed: IncomingMessage[][] = [];
    const canApply = (m: IncomingMessage) => m.value !== "stuck" || released;
    const consumer = await kafka.createConsumer({
      groupId,
      topics: [events],
      commitIntervalMs: 0,
      // All or nothing, as a transaction would be: a batch that fails leaves no effect to commit.
      async handleBatch(ms) {
        handed.push(ms);
        if (!ms.every(canApply)) throw new Error("cannot apply yet");
      },
      async handle(m) {
        if (!canApply(m)) {
          stuckAttempts++;
          throw new Error("cannot apply yet");
        }
      },
      classify: () => "unexpected" as const,
      retry: { maxAttempts: 1000, backoffMs: 50, maxBackoffMs: 50 },
      deadLetter: async () => {},
    });
    cleanups.push(() => consumer.stop());

    // While "stuck" keeps failing, the other partitions are committed to their end, and its own partition
    // never past it, in any of the commits seen meanwhile.
    const highest = new Map<number, number>();
    await waitFor("the other partitions' commits, while the stuck message is retried", async () => {
      const lags = await kafka.consumerLag(groupId, [events]);
      for (const p of lags) highest.set(p.partition, Math.max(highest.get(p.partition) ?? 0, p.committed));
      return stuckAttempts >= 5 && lags.every((p) => p.partition === stuck.partition || p.lag === 0)
        ? true
        : undefined;
    });
    expect(highest.get(stuck.partition)).toBeLessThanOrEqual(Number(stuck.offset));
    // kafkajs hands over one partition at a time; the platformatic adapter gave "stuck" in a batch with others.
    if (name === "platformatic")
      expect(
        handed.some((b) => b.some((m) => m.value === "stuck") && new Set(b.map((m) => m.partition)).size > 1),
      ).toBe(true);

    released = true;
    await waitFor("every partition committed to its end", async () => {
      const lags = await kafka.consumerLag(groupId, [events]);
      return lags.every((p) => p.lag === 0) ? true : undefined;
    });
  });

  it("puts a key on the partition the Java client picks, and keeps the order of each key", async () => {
    const kafka = client();
    const { events } = await freshTopics(["events"], 6);
    const producer = await kafka.createProducer();
    cleanups.push(() => producer.close());
    // murmur2 of these keys, from Kafka's own UtilsTest; the Java client's partition is
    // (murmur2 & 0x7fffffff) % partitions.
    const murmur2: Record<string, number> = {
      "21": -973932308,
      foobar: -790332482,
      "a-little-bit-long-string": -985981536,
      "a-little-bit-longer-string": -1486304829,
      lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8: -58897971,
      abc: 479470107,
    };
    const keys = Object.keys(murmur2);
    // Interleaved keys in one send, and a second send after it: per key, the order of the sends.
    const round = (r: number) =>
      keys.flatMap((key) => [0, 1].map((i) => ({ topic: events, key, value: `${r}-${i}`, headers: {} })));
    await producer.send(round(0));
    await producer.send(round(1));

    const read = await kafka.readToEnd([events]);
    expect(read).toHaveLength(keys.length * 4);
    for (const key of keys) {
      const ofKey = read.filter((m) => m.key === key);
      expect(ofKey.map((m) => m.value)).toEqual(["0-0", "0-1", "1-0", "1-1"]);
      expect(new Set(ofKey.map((m) => m.partition))).toEqual(
        new Set([((murmur2[key] ?? 0) & 0x7fffffff) % 6]),
      );
    }
  });

  it("redelivers a message whose handler never succeeded to the next member of the group", async () => {
    const kafka = client();
    const { events } = await freshTopics(["events"], 1);
    const groupId = freshGroupId();
    const producer = await kafka.createProducer();
    cleanups.push(() => producer.close());
    await producer.send(
      ["ok", "stuck", "after"].map((value) => ({ topic: events, key: "k", value, headers: {} })),
    );

    let attempts = 0;
    const first = await kafka.createConsumer({
      groupId,
      topics: [events],
      async handle(m) {
        if (m.value === "stuck") {
          attempts++;
          throw Object.assign(new Error("database down"), { retriable: true });
        }
      },
      classify: () => "transient" as const,
      deadLetter: async () => {},
    });
    await waitFor("a retried failure", () => (attempts >= 2 ? true : undefined));
    // However long the handler keeps failing, the committed offset never passes the failing message.
    const [lag] = await kafka.consumerLag(groupId, [events]);
    expect(lag?.committed).toBeLessThanOrEqual(1);
    expect(lag?.end).toBe(3);
    await first.stop();

    const seen: string[] = [];
    const second = await kafka.createConsumer({
      groupId,
      topics: [events],
      async handle(m) {
        seen.push(m.value ?? "");
      },
      classify: () => "transient" as const,
      deadLetter: async () => {},
    });
    cleanups.push(() => second.stop());
    await waitFor("the redelivered messages", () => (seen.includes("after") ? true : undefined));
    // "ok" comes again too when the first member had not committed it yet (it commits per chunk).
    expect(seen.slice(-2)).toEqual(["stuck", "after"]);
    expect(seen.length).toBeLessThanOrEqual(3);
    await waitFor("the final commit", async () => {
      const [p] = await kafka.consumerLag(groupId, [events]);
      return p?.committed === 3 ? true : undefined;
    });
  });

  it("creates topics once, answers pings, and reports the lag of a group that committed nothing", async () => {
    const kafka = client();
    const prefix = `test-admin-${Math.random().toString(36).slice(2)}`;
    const names = [`${prefix}.a`, `${prefix}.b`];
    await kafka.createTopics(names, 4);
    await kafka.createTopics(names, 4);
    await kafka.ping();
    const producer = await kafka.createProducer();
    cleanups.push(() => producer.close());
    await producer.send([{ topic: names[0] ?? "", key: "k", value: "v", headers: {} }]);
    const groupId = freshGroupId();
    // A group that committed nothing has everything still to read.
    // kafkajs answers a listOffsets on a topic this young with NOT_LEADER now and then: ask until it answers.
    const before = await waitFor("a lag probe", () =>
      kafka.consumerLag(groupId, names).catch(() => undefined),
    );
    expect(before).toHaveLength(8);
    expect(before.filter((p) => p.lag > 0)).toEqual([
      { topic: names[0], partition: expect.any(Number), committed: 0, end: 1, lag: 1 },
    ]);
    const consumer = await kafka.createConsumer({
      groupId,
      topics: names,
      handle: async () => {},
      classify: () => "transient" as const,
      deadLetter: async () => {},
    });
    cleanups.push(() => consumer.stop());
    const lags = await waitFor("the commit", async () => {
      const all = await kafka.consumerLag(groupId, names);
      return all.some((p) => p.committed === 1) ? all : undefined;
    });
    expect(lags.filter((p) => p.lag > 0)).toEqual([]);
    expect(lags.reduce((n, p) => n + p.end, 0)).toBe(1);
    expect(consumer.isRunning()).toBe(true);
  });

  it("keeps producing and rejoins its group after the broker restarts", async () => {
    // A broker of this test's own: restarting the run's broker would break every other test.
    const dir = await mkdtemp(join(tmpdir(), "kafka-restart-"));
    const ports = { port: await freePort(), controllerPort: await freePort() };
    const start = () => startKafka({ dataDir: join(dir, "kafka"), ...ports, durable: true });
    let broker: KafkaServer | undefined = await start();
    cleanups.push(async () => {
      await broker?.stop();
      await rm(dir, { recursive: true, force: true });
    });
    const kafka = client(broker.brokers);
    const events = `restart-${Math.random().toString(36).slice(2)}`;
    await kafka.createTopics([events], 2);
    const producer = await kafka.createProducer();
    cleanups.push(() => producer.close());
    const seen: string[] = [];
    const consumer = await kafka.createConsumer({
      groupId: freshGroupId(),
      topics: [events],
      async handle(m) {
        seen.push(m.value ?? "");
      },
      classify: () => "transient" as const,
      deadLetter: async () => {},
    });
    cleanups.push(() => consumer.stop());
    const batch = (from: number) =>
      Array.from({ length: 20 }, (_, i) => ({
        topic: events,
        key: `k${i % 4}`,
        value: `m${from + i}`,
        headers: {},
      }));
    await producer.send(batch(0));
    await waitFor("the first messages", () => (seen.length >= 20 ? true : undefined));

    await broker.stop();
    broker = undefined;
    await new Promise((r) => setTimeout(r, 2000));
    broker = await start();

    // The same producer and consumer carry on by themselves.
    await producer.send(batch(20));
    await waitFor("the messages after the restart", () => (seen.length >= 40 ? true : undefined), 90_000);
    expect(consumer.isRunning()).toBe(true);
    // Each message once (nothing was committed late enough to be read twice here) and per key in order.
    const read = await kafka.readToEnd([events]);
    expect(read.map((m) => m.value).sort()).toEqual(Array.from({ length: 40 }, (_, i) => `m${i}`).sort());
    for (let k = 0; k < 4; k++) {
      const values = read.filter((m) => m.key === `k${k}`).map((m) => Number(m.value?.slice(1)));
      expect(values).toEqual([...values].sort((a, b) => a - b));
    }
    expect(new Set(seen)).toEqual(new Set(read.map((m) => m.value)));
  }, 180_000);
});

describe("@saga/kafka through kafkajs, after an error kafkajs does not restart from", () => {
  it("rejoins by itself, and stops trying once stopped", async () => {
    // kafkajs consults restartOnFailure only after errors it deems retriable, and leaves the consumer
    // stopped for good after any other. A session timeout above the broker's
    // group.max.session.timeout.ms (30 min) makes every join fail with such an error (INVALID_SESSION_TIMEOUT).
    const rejoins: unknown[] = [];
    const ignore = () => {};
    const logger = {
      debug: ignore,
      info: ignore,
      error: ignore,
      warn: (fields: unknown, message?: string) => {
        if (message?.includes("rejoining")) rejoins.push(fields);
      },
    };
    const kafka = createKafka({
      brokers: kafkaBrokers(),
      clientId: "kafka-fatal-test",
      client: "kafkajs",
      logger,
    });
    cleanups.push(() => kafka.close());
    const { events } = await freshTopics(["events"]);
    const consumer = await kafka.createConsumer({
      groupId: freshGroupId(),
      topics: [events],
      sessionTimeout: 31 * 60_000,
      handle: async () => {},
      classify: () => "transient" as const,
      deadLetter: async () => {},
    });
    await waitFor("a second attempt to rejoin", () => (rejoins.length >= 2 ? true : undefined));
    expect(consumer.isRunning()).toBe(false);
    await consumer.stop();
    const attempts = rejoins.length;
    await new Promise((r) => setTimeout(r, 1500));
    expect(rejoins.length).toBe(attempts);
  });
});

describe("@saga/kafka through kafkajs, a batch longer than the session timeout", () => {
  // kafkajs 2.x sends heartbeats only when asked to, and by itself only between fetches. (The platformatic
  // library heartbeats in the background.)
  it("keeps its member in the group: no other member gets its partitions while it applies the batch", async () => {
    adapter = "kafkajs";
    const kafka = client();
    const { events } = await freshTopics(["events"], 2);
    const producer = await kafka.createProducer();
    cleanups.push(() => producer.close());
    // One message on each partition: "21" on 0 and "abc" on 1 ((murmur2 & 0x7fffffff) % 2).
    const send = (n: number) =>
      producer.send(["21", "abc"].map((key) => ({ topic: events, key, value: `${key}/${n}`, headers: {} })));
    // The broker's least (group.min.session.timeout.ms), so that a batch outlasts it soon.
    const sessionTimeout = 6000;
    const options = {
      groupId: freshGroupId(),
      topics: [events],
      sessionTimeout,
      commitIntervalMs: 0,
      classify: () => "transient" as const,
      deadLetter: async () => {},
    };
    await send(0);

    // The first member's first message takes longer than the session timeout: a transaction that waits
    // for its statement timeout (10 s by default, as long as the services' session timeout), say.
    let inLongBatch = false;
    let firstMessages = 0;
    const first = await kafka.createConsumer({
      ...options,
      async handle() {
        if (firstMessages++ > 0) return;
        inLongBatch = true;
        await new Promise((r) => setTimeout(r, sessionTimeout + 3000));
        inLongBatch = false;
      },
    });
    cleanups.push(() => first.stop());
    await waitFor("the first member's long batch", () => (inLongBatch ? true : undefined));

    // A second member joins meanwhile; it gets a partition once the rebalance is done.
    const bySecond: { value: string | null; duringLongBatch: boolean }[] = [];
    const second = await kafka.createConsumer({
      ...options,
      async handle(m) {
        bySecond.push({ value: m.value, duringLongBatch: inLongBatch });
      },
    });
    cleanups.push(() => second.stop());
    for (let n = 1; bySecond.length === 0; n++) {
      if (n > 60) throw new Error("the second member applied nothing");
      await send(n);
      await new Promise((r) => setTimeout(r, 500));
    }
    expect(bySecond.filter((m) => m.duringLongBatch)).toEqual([]);
  });
});

describe("@saga/kafka through platformatic, creating a topic", () => {
  // A single broker cannot tell a topic of replication factor 1 from one of its default (also 1), so this
  // reads what the adapter asks the library for, from its diagnostics channel
  // (https://github.com/platformatic/kafka/blob/main/docs/diagnostic.md): the request, not the broker.
  it("asks for the broker's default replication factor, not 1", async () => {
    adapter = "platformatic";
    const asked: { topics: string[]; partitions?: number; replicas?: number }[] = [];
    type Context = { operation: string; options: (typeof asked)[number] };
    const ignore = () => {};
    const handlers: TracingChannelSubscribers<Context> = {
      start({ operation, options }) {
        if (operation === "createTopics") asked.push(options);
      },
      end: ignore,
      asyncStart: ignore,
      asyncEnd: ignore,
      error: ignore,
    };
    const channel = tracingChannel<string, Context>("plt:kafka:admin:topics");
    channel.subscribe(handlers);
    cleanups.push(async () => channel.unsubscribe(handlers));

    const topic = `test-replicas-${Math.random().toString(36).slice(2)}`;
    await client().createTopics([topic], 2);
    expect(asked).toEqual([{ topics: [topic], partitions: 2 }]);
  });
});

describe("@saga/kafka through platformatic, a broker named by its IPv6 address", () => {
  // KAFKA_BROKERS takes `[address]:port` for this client (kafkajs cannot read it): the test's broker,
  // reached through a forwarder on ::1.
  it("bootstraps from [::1]:port", async () => {
    adapter = "platformatic";
    const [host = "", port = ""] = (kafkaBrokers()[0] ?? "").split(":");
    let accepted = 0;
    const sockets = new Set<Socket>();
    const forwarder = createServer((socket) => {
      accepted++;
      const upstream = connect(Number(port), host);
      for (const s of [socket, upstream]) {
        sockets.add(s);
        s.on("error", () => {});
        s.on("close", () => sockets.delete(s));
      }
      socket.pipe(upstream).pipe(socket);
    });
    await new Promise<void>((resolve) => forwarder.listen(0, "::1", resolve));
    cleanups.push(async () => {
      for (const s of sockets) s.destroy();
      await new Promise((resolve) => forwarder.close(resolve));
    });
    const { port: ipv6Port } = forwarder.address() as AddressInfo;
    await client([`[::1]:${ipv6Port}`]).ping();
    expect(accepted).toBeGreaterThan(0);
  });
});

describe("@saga/kafka through platformatic, with a linger", () => {
  /** A lingering consumer in a group of its own on a fresh topic, recording each batch it is handed. */
  async function lingeringConsumer(
    partitions: number,
    options: Pick<ConsumerOptions, "lingerMs" | "maxBatchSize">,
  ) {
    adapter = "platformatic";
    const kafka = client();
    const { events } = await freshTopics(["events"], partitions);
    const producer = await kafka.createProducer();
    cleanups.push(() => producer.close());

    const handed: IncomingMessage[][] = [];
    const consumer = await kafka.createConsumer({
      groupId: freshGroupId(),
      // From the beginning of its fresh topic: from the end, the client looks the end up only after it
      // says it runs, and a message sent meanwhile would be skipped.
      topics: [events],
      ...options,
      async handleBatch(ms) {
        handed.push(ms);
      },
      handle: async (m) => {
        handed.push([m]);
      },
      classify: () => "poison" as const,
      deadLetter: async () => {},
    });
    cleanups.push(() => consumer.stop());
    await waitFor("the consumer in its group", () => (consumer.isRunning() ? true : undefined));
    return { events, producer, handed };
  }

  it("gathers messages that arrive one at a time under load into shared batches, in order", async () => {
    const { events, producer, handed } = await lingeringConsumer(2, { lingerMs: 250 });

    // Each message in a request of its own, so each comes in a fetch of its own: only the linger lets
    // them share a batch once the consumer has seen them arrive faster than one per 500 ms.
    const count = 40;
    for (let i = 0; i < count; i++) {
      await producer.send([{ topic: events, key: `key-${i % 4}`, value: `${i}`, headers: {} }]);
      await new Promise((r) => setTimeout(r, 20));
    }
    await waitFor("every message", () => (handed.flat().length === count ? true : undefined));

    expect(Math.max(...handed.map((b) => b.length))).toBeGreaterThanOrEqual(3);
    expect(handed.length).toBeLessThan(count / 2);
    for (const key of ["key-0", "key-1", "key-2", "key-3"]) {
      const values = handed
        .flat()
        .filter((m) => m.key === key)
        .map((m) => Number(m.value));
      expect(values).toEqual([...values].sort((a, b) => a - b));
      expect(values).toHaveLength(count / 4);
    }
  });

  it("starts a full batch at once instead of waiting out the linger", async () => {
    // Longer than the test waits: only a full batch ends it (a consumer lingers from its first message).
    const { events, producer, handed } = await lingeringConsumer(1, { lingerMs: 120_000, maxBatchSize: 5 });

    // One request, so one fetch brings all ten: two full batches.
    await producer.send(
      Array.from({ length: 10 }, (_, i) => ({ topic: events, key: "key", value: `${i}`, headers: {} })),
    );
    await waitFor("every message", () => (handed.flat().length === 10 ? true : undefined));
    expect(handed.flat().map((m) => Number(m.value))).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    expect(handed.map((b) => b.length)).toEqual([5, 5]);
  });
});

describe("@saga/kafka through platformatic, in a rebalance", () => {
  // Not kafkajs: it rejoins only between batches, so while a batch is applied its member is still in the
  // generation it was fetched in, whose commits the broker refuses once the group has moved on. This
  // library rejoins in the background, while a chunk of the partition the member loses is being applied.
  it("neither applies nor commits a partition it has lost, so the partition's committed offset never goes back", async () => {
    adapter = "platformatic";
    const kafka = client();
    const { events } = await freshTopics(["events"], 2);
    const groupId = freshGroupId();
    const producer = await kafka.createProducer();
    cleanups.push(() => producer.close());
    // One key on each partition: "21" on 0 and "abc" on 1 ((murmur2 & 0x7fffffff) % 2).
    const send = (from: number) =>
      producer.send(
        ["21", "abc"].flatMap((key) =>
          [0, 1, 2, 3, 4].map((n) => ({ topic: events, key, value: `${key}/${from + n}`, headers: {} })),
        ),
      );
    const committed = async (partition: number) =>
      (await kafka.consumerLag(groupId, [events]))[partition]?.committed;
    const options = {
      groupId,
      topics: [events],
      commitIntervalMs: 0,
      classify: () => "transient" as const,
      deadLetter: async () => {},
    };
    await send(0);

    // The first member's handler hangs (a database that does not answer) until released.
    let release = () => {};
    const released = new Promise<void>((resolve) => (release = resolve));
    const byFirst: IncomingMessage[] = [];
    const first = await kafka.createConsumer({
      ...options,
      async handle(m) {
        byFirst.push(m);
        await released;
      },
    });
    cleanups.push(() => first.stop());
    await waitFor("the first member applying both partitions", () =>
      new Set(byFirst.map((m) => m.partition)).size === 2 ? true : undefined,
    );

    // A second member joins and takes one of them, applies it to its end and commits.
    const bySecond: IncomingMessage[] = [];
    const second = await kafka.createConsumer({
      ...options,
      async handle(m) {
        bySecond.push(m);
      },
    });
    cleanups.push(() => second.stop());
    const lost = (await waitFor("the second member's first message", () => bySecond[0])).partition;
    const kept = 1 - lost;
    await send(5);
    await waitFor("the second member's commit", async () =>
      (await committed(lost)) === 10 ? true : undefined,
    );

    // The first member's handler returns: it goes on with the partition it kept only.
    release();
    await waitFor("the first member's commit of the partition it kept", async () =>
      (await committed(kept)) === 10 ? true : undefined,
    );
    expect(await committed(lost)).toBe(10);
    expect(byFirst.filter((m) => m.partition === lost).map((m) => m.offset)).toEqual(["0"]);
    expect(bySecond.filter((m) => m.partition === lost).map((m) => m.offset)).toEqual(
      Array.from({ length: 10 }, (_, i) => `${i}`),
    );
  });
});

// Not kafkajs: it fetches a broker's partitions again only once every batch of its last fetch is done,
// so a partition stuck on a message holds up the messages fetched later for every partition of its broker.
describe("@saga/kafka through platformatic, a partition stuck on a message", () => {
  it("holds up its own partition only, however many messages queue behind it, and reads those it dropped again once it moves on", async () => {
    adapter = "platformatic";
    const kafka = client();
    const { events } = await freshTopics(["events"], 2);
    const producer = await kafka.createProducer();
    cleanups.push(() => producer.close());
    // "21" is on partition 0 and "abc" on 1 ((murmur2 & 0x7fffffff) % 2).
    await producer.send([{ topic: events, key: "21", value: "stuck", headers: {} }]);

    // "stuck" fails (a database that is down, for this partition's rows) until released.
    let released = false;
    let retries = 0;
    const applied: IncomingMessage[] = [];
    const canApply = (m: IncomingMessage) => m.value !== "stuck" || released;
    const consumer = await kafka.createConsumer({
      groupId: freshGroupId(),
      topics: [events],
      async handleBatch(ms) {
        if (!ms.every(canApply)) throw new Error("cannot apply yet");
        applied.push(...ms);
      },
      async handle(m) {
        if (!canApply(m)) throw new Error("cannot apply yet");
        applied.push(m);
      },
      classify: () => "transient" as const,
      retry: { maxAttempts: 10, backoffMs: 50, maxBackoffMs: 50 },
      onRetry: () => retries++,
      deadLetter: async () => {},
    });
    cleanups.push(() => consumer.stop());
    await waitFor("the stuck message retried", () => (retries >= 3 ? true : undefined));

    // More messages queue behind it than the consumer buffers in all (1,024).
    const behind = Array.from({ length: 1100 }, (_, i) => `21/${i}`);
    await producer.send(behind.map((value) => ({ topic: events, key: "21", value, headers: {} })));
    // Time for the consumer to fetch them before the message of the other partition is written.
    await new Promise((r) => setTimeout(r, 1000));
    await producer.send([{ topic: events, key: "abc", value: "late", headers: {} }]);
    await waitFor("the other partition's message, while the stuck one is retried", () =>
      applied.some((m) => m.value === "late") ? true : undefined,
    );
    expect(applied.filter((m) => m.key === "21")).toEqual([]);

    released = true;
    const ofStuckKey = () => [...new Set(applied.filter((m) => m.key === "21").map((m) => m.value))];
    await waitFor("every message of the stuck partition", () =>
      ofStuckKey().length === behind.length + 1 ? true : undefined,
    );
    // Each once at least (a message is read again when its commit was not in yet), in order.
    expect(ofStuckKey()).toEqual(["stuck", ...behind]);
  });

  it("reads the partition that dropped messages again only once no other partition's message is in flight: a message being retried meanwhile is dead-lettered once", async () => {
    adapter = "platformatic";
    const kafka = client();
    const { events } = await freshTopics(["events"], 2);
    const producer = await kafka.createProducer();
    cleanups.push(() => producer.close());
    // "21" is on partition 0 and "abc" on 1 ((murmur2 & 0x7fffffff) % 2).
    await producer.send([{ topic: events, key: "21", value: "stuckA", headers: {} }]);

    // "stuckA" fails (transient) until released; "stuckB" always fails as a bug: dead-lettered once its
    // attempts are spent, about 4.5 s after its first.
    const maxAttempts = 6;
    let released = false;
    const attempts = new Map<string, number>();
    const applied: IncomingMessage[] = [];
    const deadLettered: string[] = [];
    const consumer = await kafka.createConsumer({
      groupId: freshGroupId(),
      topics: [events],
      maxBatchSize: 1,
      async handle(m) {
        const value = m.value ?? "";
        attempts.set(value, (attempts.get(value) ?? 0) + 1);
        if (value === "stuckA" && !released) throw new Error("transient: cannot apply yet");
        if (value === "stuckB") throw new Error("a bug");
        applied.push(m);
      },
      classify: (err) => ((err as Error).message.startsWith("transient") ? "transient" : "unexpected"),
      retry: { maxAttempts, backoffMs: 500, maxBackoffMs: 1000 },
      deadLetter: async (m) => {
        deadLettered.push(m.value ?? "");
      },
    });
    cleanups.push(() => consumer.stop());
    await waitFor("stuckA retried", () => ((attempts.get("stuckA") ?? 0) >= 2 ? true : undefined));

    // More messages queue behind it than the consumer buffers for such partitions (1,024): it drops the
    // rest, to read them again once it has applied what it queued.
    const behindA = Array.from({ length: 1100 }, (_, i) => `21/${i}`);
    await producer.send(behindA.map((value) => ({ topic: events, key: "21", value, headers: {} })));
    // Time for the consumer to fetch them.
    await new Promise((r) => setTimeout(r, 1000));
    const behindB = Array.from({ length: 5 }, (_, i) => `abc/${i}`);
    await producer.send(
      ["stuckB", ...behindB].map((value) => ({ topic: events, key: "abc", value, headers: {} })),
    );
    // stuckA moves on while stuckB is retried: its partition is then due to be read again.
    await waitFor("stuckB retried", () => ((attempts.get("stuckB") ?? 0) >= 2 ? true : undefined));
    released = true;

    const values = (key: string) => applied.filter((m) => m.key === key).map((m) => m.value);
    await waitFor("every message of both partitions", () =>
      values("21").length >= behindA.length + 1 && values("abc").length >= behindB.length ? true : undefined,
    );
    // Its partition's next messages come after stuckB: read again from before it, stuckB would have
    // been retried and dead-lettered a second time by now.
    expect({ attempts: attempts.get("stuckB"), deadLettered }).toEqual({
      attempts: maxAttempts,
      deadLettered: ["stuckB"],
    });
    // Every other message once, in order.
    expect(values("21")).toEqual(["stuckA", ...behindA]);
    expect(values("abc")).toEqual(behindB);
  });
});

describe.each(KAFKA_CLIENTS)("@saga/kafka through %s, a message retried across a rebalance", (name) => {
  it("is not dead-lettered by a member whose partition the rebalance gave another: the new owner applies it", async () => {
    adapter = name;
    const kafka = client();
    const { events } = await freshTopics(["events"], 2);
    const groupId = freshGroupId();
    const producer = await kafka.createProducer();
    cleanups.push(() => producer.close());
    // One message on each partition: "21" on 0 and "abc" on 1 ((murmur2 & 0x7fffffff) % 2).
    await producer.send(["21", "abc"].map((key) => ({ topic: events, key, value: key, headers: {} })));
    const options = {
      groupId,
      topics: [events],
      commitIntervalMs: 0,
      classify: () => "unexpected" as const,
      // Twenty seconds of retries before a dead letter: far longer than the second member takes to join.
      retry: { maxAttempts: 400, backoffMs: 50, maxBackoffMs: 50 },
    };

    // The first member fails every message (a bug of its own, say) and retries it.
    const tried = new Set<number>();
    const deadLettered: IncomingMessage[] = [];
    const first = await kafka.createConsumer({
      ...options,
      async handle(m) {
        tried.add(m.partition);
        throw new Error("cannot apply");
      },
      deadLetter: async (m) => {
        deadLettered.push(m);
      },
    });
    cleanups.push(() => first.stop());
    await waitFor("the first member retrying both partitions", () => (tried.size === 2 ? true : undefined));

    // A second member, whose handler works, joins and takes one of the partitions.
    const bySecond: IncomingMessage[] = [];
    const second = await kafka.createConsumer({
      ...options,
      async handle(m) {
        bySecond.push(m);
      },
      deadLetter: async () => {},
    });
    cleanups.push(() => second.stop());
    const taken = await waitFor(
      "the second member applying the message of the partition it took",
      () => bySecond[0],
    );
    expect(taken.offset).toBe("0");
    expect(deadLettered.filter((m) => m.partition === taken.partition)).toEqual([]);
  });
});
