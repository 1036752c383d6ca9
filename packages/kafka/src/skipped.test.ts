import { Admin } from "@platformatic/kafka";
import { freshGroupId, freshTopics, kafkaBrokers } from "@saga/tools/test/harness";
import { describe, expect, it, onTestFinished } from "vitest";
import { type ConsumerOptions, createKafka, type IncomingMessage, type SkippedRecords } from "./index.ts";

// A group further behind than its topic keeps records: on OFFSET_OUT_OF_RANGE @platformatic/kafka goes on
// from the partition's first record without a word. The adapter says which offsets it never read.

async function waitFor<T>(what: string, probe: () => T | undefined, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

function setUp() {
  const errors: { fields: Record<string, unknown>; message: string }[] = [];
  const ignore = () => {};
  const kafka = createKafka({
    brokers: kafkaBrokers(),
    clientId: "skipped-test",
    client: "platformatic",
    logger: {
      debug: ignore,
      info: ignore,
      warn: ignore,
      error: (fields, message) => errors.push({ fields: fields as Record<string, unknown>, message }),
    },
  });
  onTestFinished(() => kafka.close());
  const admin = new Admin({ clientId: "skipped-test-admin", bootstrapBrokers: kafkaBrokers() });
  onTestFinished(() => admin.close());
  /** Deletes the partition's records before `offset`, as retention deletes its oldest segments. */
  const deleteBefore = (topic: string, offset: bigint) =>
    admin.deleteRecords({ topics: [{ name: topic, partitions: [{ partition: 0, offset }] }] });
  return { kafka, errors, deleteBefore };
}

function consumerOptions(
  groupId: string,
  topic: string,
  read: string[],
  skipped: SkippedRecords[],
): ConsumerOptions {
  return {
    groupId,
    topics: [topic],
    commitIntervalMs: 0,
    async handle(m: IncomingMessage) {
      read.push(m.value ?? "");
    },
    classify: () => "transient",
    deadLetter: async () => {},
    onSkipped: (gap) => skipped.push(gap),
  };
}

describe("records deleted before the group read them (platformatic)", () => {
  it("are reported once, with the offsets skipped, and the group reads what remains", async () => {
    const { kafka, errors, deleteBefore } = setUp();
    const { events } = await freshTopics(["events"], 1);
    const groupId = freshGroupId();
    const producer = await kafka.createProducer();
    onTestFinished(() => producer.close());
    const send = (values: string[]) =>
      producer.send(values.map((value) => ({ topic: events, key: "k", value, headers: {} })));

    // The group reads and commits offsets 0-2, then stops (a service down).
    await send(["v0", "v1", "v2"]);
    const read: string[] = [];
    const skipped: SkippedRecords[] = [];
    const first = await kafka.createConsumer(consumerOptions(groupId, events, read, skipped));
    await waitFor("the first three read", () => (read.length === 3 ? true : undefined));
    await first.stop();
    expect((await kafka.consumerLag(groupId, [events]))[0]?.committed).toBe(3);

    // Meanwhile 3-9 arrive, and 3-6 are deleted before anyone read them.
    await send(["v3", "v4", "v5", "v6", "v7", "v8", "v9"]);
    await deleteBefore(events, 7n);

    const second = await kafka.createConsumer(consumerOptions(groupId, events, read, skipped));
    onTestFinished(() => second.stop());
    await waitFor("the rest read", () => (read.length === 6 ? true : undefined));
    expect(read).toEqual(["v0", "v1", "v2", "v7", "v8", "v9"]);
    const gap = { topic: events, partition: 0, nextOffset: "3", firstRead: "7", skipped: 4 };
    expect(skipped).toEqual([gap]);
    const reported = errors.filter((e) => e.message.includes("deleted before"));
    expect(reported).toEqual([
      {
        fields: { groupId, ...gap },
        message: "kafka: records deleted before the group read them were skipped",
      },
    ]);
  });

  it("are no gap for a new group, which starts from the first record there is", async () => {
    const { kafka, errors, deleteBefore } = setUp();
    const { events } = await freshTopics(["events"], 1);
    const producer = await kafka.createProducer();
    onTestFinished(() => producer.close());
    await producer.send(
      ["v0", "v1", "v2", "v3"].map((value) => ({ topic: events, key: "k", value, headers: {} })),
    );
    await deleteBefore(events, 2n);

    const read: string[] = [];
    const skipped: SkippedRecords[] = [];
    const consumer = await kafka.createConsumer(consumerOptions(freshGroupId(), events, read, skipped));
    onTestFinished(() => consumer.stop());
    await waitFor("what remains read", () => (read.length === 2 ? true : undefined));
    expect(read).toEqual(["v2", "v3"]);
    expect(skipped).toEqual([]);
    expect(errors).toEqual([]);
  });
});
