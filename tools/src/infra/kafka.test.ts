import { type Consumer, type EachMessagePayload, Kafka, logLevel, type Producer } from "kafkajs";
import { afterEach, describe, expect, test } from "vitest";
import { freshTopics, kafkaBrokers, uniqueName } from "../test/harness.ts";
import { clusterId } from "./kafka.ts";

// Kafka 4 dropped the oldest protocol versions (KIP-896); these tests show that the
// versions kafkajs 2.2.4 negotiates are still served, for everything the system uses.
// https://cwiki.apache.org/confluence/display/KAFKA/KIP-896%3A+Remove+old+client+protocol+API+versions+in+Kafka+4.0
// In CI every package's suites share one broker, and it is slow while they start (creating one topic took
// 13–15 s there): the group joins below get three minutes, which asserts nothing about speed.
describe("the test broker with kafkajs 2.2.4", { timeout: 180_000 }, () => {
  const kafka = new Kafka({ clientId: "infra-test", brokers: kafkaBrokers(), logLevel: logLevel.NOTHING });
  const clients: (Producer | Consumer)[] = [];
  const track = <T extends Producer | Consumer>(client: T): T => {
    clients.push(client);
    return client;
  };
  afterEach(async () => {
    await Promise.all(clients.splice(0).map((c) => c.disconnect()));
  });

  /**
   * Reads `count` messages of `topic` from the start with a throwaway group. A broker that has just
   * started answers a new group's first requests with NOT_COORDINATOR or COORDINATOR_LOAD_IN_PROGRESS
   * while `__consumer_offsets` loads; kafkajs restarts the consumer after such a crash, and in CI that
   * restart once never read. So a read that has not finished within 30 s is tried again with a new group,
   * three times at most: what is asserted is what was read, not how often.
   */
  async function readAll(topic: string, count: number): Promise<EachMessagePayload["message"][]> {
    for (let attempt = 1; ; attempt++) {
      const consumer = track(kafka.consumer({ groupId: uniqueName("reader") }));
      const messages: EachMessagePayload["message"][] = [];
      const done = new Promise<void>((resolve, reject) => {
        consumer.on(consumer.events.CRASH, ({ payload }) => {
          if (!payload.restart) reject(payload.error);
        });
        void (async () => {
          await consumer.connect();
          await consumer.subscribe({ topic, fromBeginning: true });
          await consumer.run({
            eachMessage: async ({ message }) => {
              messages.push(message);
              if (messages.length === count) resolve();
            },
          });
        })().catch(reject);
      });
      let timer: NodeJS.Timeout | undefined;
      const late = new Promise<"late">((resolve) => {
        timer = setTimeout(() => resolve("late"), 30_000);
      });
      const outcome = await Promise.race([done, late]).finally(() => clearTimeout(timer));
      if (outcome !== "late") return messages;
      await consumer.disconnect();
      if (attempt === 3)
        throw new Error(`read ${messages.length} of ${count} messages of ${topic} in 3 tries`);
    }
  }

  test("freshTopics creates topics of its own with the partitions asked for", async () => {
    const topics = await freshTopics(["order.created", "order.created.dlq"], 4);

    expect(topics["order.created.dlq"]).toBe(`${topics["order.created"]}.dlq`);
    const admin = kafka.admin();
    await admin.connect();
    try {
      const { topics: metadata } = await admin.fetchTopicMetadata({ topics: Object.values(topics) });
      expect(metadata.map((t) => t.partitions.length)).toEqual([4, 4]);
    } finally {
      await admin.disconnect();
    }
  });

  test("a plain producer writes messages that a consumer reads back with key, value and headers", async () => {
    const { plain: topic } = await freshTopics(["plain"], 1);
    const producer = track(kafka.producer());
    await producer.connect();

    const [meta] = await producer.send({
      topic,
      acks: -1,
      messages: [
        { key: "order-1", value: '{"n":1}', headers: { "event-type": "test" } },
        { key: "order-1", value: '{"n":2}' },
      ],
    });

    expect(meta).toMatchObject({ topicName: topic, partition: 0, errorCode: 0, baseOffset: "0" });
    const read = await readAll(topic, 2);
    expect(read.map((m) => [m.key?.toString(), m.value?.toString(), m.offset])).toEqual([
      ["order-1", '{"n":1}', "0"],
      ["order-1", '{"n":2}', "1"],
    ]);
    expect(read[0]?.headers?.["event-type"]?.toString()).toBe("test");
  });

  test("an idempotent producer (acks=all, one request in flight) writes each message once, in order", async () => {
    const { idempotent: topic } = await freshTopics(["idempotent"], 1);
    const producer = track(kafka.producer({ idempotent: true, maxInFlightRequests: 1 }));
    await producer.connect();

    const offsets: string[] = [];
    for (let i = 0; i < 5; i++) {
      const [meta] = await producer.send({
        topic,
        acks: -1,
        messages: [{ key: "order-1", value: String(i) }],
      });
      offsets.push(meta?.baseOffset ?? "?");
    }

    expect(offsets).toEqual(["0", "1", "2", "3", "4"]);
    const read = await readAll(topic, 5);
    expect(read.map((m) => m.value?.toString())).toEqual(["0", "1", "2", "3", "4"]);
  });

  test("a consumer group joins, commits its offsets, and a new member resumes after the committed offset", async () => {
    const { group: topic } = await freshTopics(["group"], 1);
    const groupId = uniqueName("group");
    const producer = track(kafka.producer({ idempotent: true, maxInFlightRequests: 1 }));
    await producer.connect();
    const produce = (values: number[]) =>
      producer.send({ topic, acks: -1, messages: values.map((v) => ({ key: "k", value: String(v) })) });

    /** One member of the group: consumes `count` messages, committing each offset by hand. */
    async function member(count: number): Promise<string[]> {
      const consumer = track(kafka.consumer({ groupId }));
      let joined = false;
      consumer.on(consumer.events.GROUP_JOIN, () => (joined = true));
      await consumer.connect();
      await consumer.subscribe({ topic, fromBeginning: true });
      const values: string[] = [];
      await new Promise<void>((resolve) => {
        void consumer.run({
          autoCommit: false,
          eachMessage: async ({ partition, message }) => {
            values.push(message.value?.toString() ?? "");
            await consumer.commitOffsets([{ topic, partition, offset: String(Number(message.offset) + 1) }]);
            if (values.length === count) resolve();
          },
        });
      });
      expect(joined).toBe(true);
      await consumer.disconnect();
      return values;
    }

    await produce([1, 2, 3]);
    expect(await member(3)).toEqual(["1", "2", "3"]);

    const admin = kafka.admin();
    await admin.connect();
    try {
      const [committed] = await admin.fetchOffsets({ groupId, topics: [topic] });
      expect(committed?.partitions).toEqual([{ partition: 0, offset: "3", metadata: null }]);
    } finally {
      await admin.disconnect();
    }

    await produce([4, 5]);
    // fromBeginning applies only to a group without committed offsets: the rejoining group
    // starts at offset 3, so its first message is 4.
    expect(await member(2)).toEqual(["4", "5"]);
  });
});

describe("the broker's cluster id", () => {
  test("is 22 base64url characters and never begins with '-', which kafka-storage would take for an option", () => {
    const ids = Array.from({ length: 10_000 }, clusterId);
    for (const id of ids) expect(id).toMatch(/^[A-Za-z0-9_][A-Za-z0-9_-]{21}$/);
    expect(new Set(ids).size).toBe(ids.length);
  });
});
