import type { Topic } from "@saga/contracts";
import type { ConsumerOptions, EventConsumer, IncomingMessage, KafkaClient } from "@saga/kafka";
import { createLogger, type Logger } from "@saga/observability";
import { Registry } from "prom-client";
import { describe, expect, it } from "vitest";
import type { Database } from "./db.ts";
import { startInboxConsumer } from "./inbox.ts";
import { createMessagingMetrics } from "./metrics.ts";

describe("startInboxConsumer", () => {
  /**
   * Starts a user-service inbox consumer (prefix "p.") on a Kafka client that only records the options it
   * is given: what the inbox does with the adapter's callbacks, without a broker or a database.
   */
  async function started({
    topics = ["order.created"],
    registry = new Registry(),
    logger = createLogger("test", "silent"),
  }: {
    topics?: Topic[];
    registry?: Registry;
    logger?: Logger;
  } = {}) {
    let options: ConsumerOptions | undefined;
    const kafka = {
      createConsumer: async (given: ConsumerOptions) => {
        options = given;
        return {} as EventConsumer;
      },
    } as unknown as KafkaClient;
    await startInboxConsumer({
      kafka,
      db: {} as Database,
      consumerGroup: "user-service",
      topicPrefix: "p.",
      topics,
      applyBatch: { read: async () => undefined, apply: async () => undefined },
      logger,
      metrics: createMessagingMetrics(registry),
    });
    if (!options) throw new Error("no consumer was created");
    return { options, registry };
  }

  it("exports saga_dlq_events_total at 0 for each topic and reason from the start, so that the first dead letter is an increase", async () => {
    const { registry } = await started({ topics: ["order.created", "order.canceled"] });
    const series = (await registry.getSingleMetric("saga_dlq_events_total")?.get())?.values ?? [];
    expect(series.map(({ labels, value }) => ({ ...labels, value }))).toEqual(
      ["order.created", "order.canceled"].flatMap((topic) =>
        ["poison", "retries exhausted"].map((reason) => ({ group: "user-service", topic, reason, value: 0 })),
      ),
    );
  });

  it("names the trace and the order of a message it retries, and those of a batch that failed", async () => {
    const logged: Record<string, unknown>[] = [];
    const { options } = await started({
      logger: createLogger("user-service", "warn", {
        destination: { write: (line: string) => void logged.push(JSON.parse(line)) },
      }),
    });
    const message = (orderId: string, trace: string, offset: number): IncomingMessage => ({
      topic: "p.order.created",
      partition: 0,
      offset: String(offset),
      key: orderId,
      value: "{}",
      headers: { "aggregate-id": orderId, traceparent: `00-${trace}-00f067aa0ba902b7-01` },
      timestamp: Date.now(),
    });
    const a = message("0192d8a4-0000-7000-8000-00000000000a", "a".repeat(32), 7);
    const b = message("0192d8a4-0000-7000-8000-00000000000b", "b".repeat(32), 8);
    const refused = Object.assign(new Error("connect ECONNREFUSED"), { code: "ECONNREFUSED" });
    options.onBatchFailed?.([a, b], refused);
    options.onRetry?.(b, refused, { attempt: 1, kind: "transient" });
    expect(
      logged.map(({ msg, orderId, traceId, orderIds, traceIds }) => ({
        msg,
        orderId,
        traceId,
        orderIds,
        traceIds,
      })),
    ).toEqual([
      {
        msg: expect.stringMatching(/^a batch of events failed/),
        orderIds: [a.key, b.key],
        traceIds: ["a".repeat(32), "b".repeat(32)],
      },
      {
        msg: "event failed with a transient error; retrying",
        orderId: b.key,
        traceId: "b".repeat(32),
      },
    ]);
  });

  it("counts a batch that failed under its logical topic, as every other messaging metric", async () => {
    const { options, registry } = await started();
    const message: IncomingMessage = {
      topic: "p.order.created",
      partition: 0,
      offset: "0",
      key: null,
      value: null,
      headers: {},
      timestamp: Date.now(),
    };
    options.onBatchFailed?.([message], new Error("connection lost"));
    const series = (await registry.getSingleMetric("saga_inbox_batch_fallbacks_total")?.get())?.values ?? [];
    expect(series.map(({ labels, value }) => ({ ...labels, value }))).toEqual([
      { group: "user-service", topic: "order.created", value: 1 },
    ]);
  });

  it("counts the records a partition skipped, under its logical topic, from 0 at the start", async () => {
    const { options, registry } = await started({ topics: ["order.created", "order.canceled"] });
    const skipped = async () =>
      ((await registry.getSingleMetric("saga_consumer_skipped_records_total")?.get())?.values ?? []).map(
        ({ labels, value }) => ({ ...labels, value }),
      );
    expect(await skipped()).toEqual([
      { group: "user-service", topic: "order.created", value: 0 },
      { group: "user-service", topic: "order.canceled", value: 0 },
    ]);
    options.onSkipped?.({
      topic: "p.order.canceled",
      partition: 2,
      nextOffset: "3",
      firstRead: "7",
      skipped: 4,
    });
    expect(await skipped()).toEqual([
      { group: "user-service", topic: "order.created", value: 0 },
      { group: "user-service", topic: "order.canceled", value: 4 },
    ]);
  });
});
