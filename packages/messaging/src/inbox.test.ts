import type { EventConsumer, KafkaClient } from "@saga/kafka";
import { createLogger } from "@saga/observability";
import { Registry } from "prom-client";
import { describe, expect, it } from "vitest";
import type { Database } from "./db.ts";
import { startInboxConsumer } from "./inbox.ts";
import { createMessagingMetrics } from "./metrics.ts";

describe("startInboxConsumer", () => {
  it("exports saga_dlq_events_total at 0 for each topic and reason from the start, so that the first dead letter is an increase", async () => {
    const registry = new Registry();
    const kafka = { createConsumer: async () => ({}) as EventConsumer } as unknown as KafkaClient;
    await startInboxConsumer({
      kafka,
      db: {} as Database,
      consumerGroup: "user-service",
      topicPrefix: "p.",
      topics: ["order.created", "order.canceled"],
      applyBatch: { read: async () => undefined, apply: async () => undefined },
      logger: createLogger("test", "silent"),
      metrics: createMessagingMetrics(registry),
    });
    const series = (await registry.getSingleMetric("saga_dlq_events_total")?.get())?.values ?? [];
    expect(series.map(({ labels, value }) => ({ ...labels, value }))).toEqual(
      ["order.created", "order.canceled"].flatMap((topic) =>
        ["poison", "retries exhausted"].map((reason) => ({ group: "user-service", topic, reason, value: 0 })),
      ),
    );
  });
});
