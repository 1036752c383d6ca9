import { freshGroupId, freshTopics, kafkaBrokers } from "@saga/tools/test/harness";
import { afterEach, describe, expect, it } from "vitest";
import { createKafka, type EventConsumer, type IncomingMessage, type KafkaClient } from "./index.ts";

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()?.();
});

function client(): KafkaClient {
  const kafka = createKafka({ brokers: kafkaBrokers(), clientId: "kafka-module-test" });
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

describe("@saga/kafka", () => {
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

  it("commits a message only after it was handled, retries retriable failures, dead-letters the rest", async () => {
    const kafka = client();
    const { events } = await freshTopics(["events"], 1);
    const groupId = freshGroupId();
    const producer = await kafka.createProducer();
    cleanups.push(() => producer.close());
    await producer.send(
      ["ok-1", "flaky", "poison", "ok-2"].map((value) => ({ topic: events, key: "k", value, headers: {} })),
    );

    const handled: string[] = [];
    const deadLettered: string[] = [];
    let flakyFailures = 0;
    const transient = Object.assign(new Error("transient"), { retriable: true });
    const consumer: EventConsumer = await kafka.createConsumer({
      groupId,
      topics: [events],
      async handle(m: IncomingMessage) {
        if (m.value === "flaky" && flakyFailures++ < 2) throw transient;
        if (m.value === "poison") throw new Error("cannot apply");
        handled.push(m.value ?? "");
      },
      isRetriable: (err) => (err as { retriable?: boolean }).retriable === true,
      async deadLetter(m) {
        deadLettered.push(m.value ?? "");
      },
    });
    cleanups.push(() => consumer.stop());

    await waitFor("all four messages", () => (handled.length + deadLettered.length === 4 ? true : undefined));
    expect(handled).toEqual(["ok-1", "flaky", "ok-2"]);
    expect(deadLettered).toEqual(["poison"]);
    expect(flakyFailures).toBe(3);
    const lag = await waitFor("the committed offset", async () => {
      const [p] = await kafka.consumerLag(groupId, [events]);
      return p?.committed === 4 ? p : undefined;
    });
    expect(lag).toEqual({ topic: events, partition: 0, committed: 4, end: 4, lag: 0 });
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
      isRetriable: () => true,
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
      isRetriable: () => false,
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
});
