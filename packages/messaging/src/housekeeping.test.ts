import type { KafkaClient, PartitionLag } from "@saga/kafka";
import { createLogger } from "@saga/observability";
import { Registry } from "prom-client";
import { describe, expect, it, vi } from "vitest";
import { every, startLagMonitor } from "./housekeeping.ts";
import { createMessagingMetrics } from "./metrics.ts";
import { metricValue } from "./testing/index.ts";

const logger = createLogger("test", "silent");

describe("every", () => {
  it("never runs two rounds at once, survives a failing round, and stop waits for the round in hand", async () => {
    vi.useFakeTimers();
    try {
      let running = 0;
      let maxRunning = 0;
      let rounds = 0;
      let release: () => void = () => {};
      const errors: unknown[] = [];
      const task = every(
        10,
        async () => {
          rounds++;
          running++;
          maxRunning = Math.max(maxRunning, running);
          if (rounds === 1) throw new Error("first round fails");
          await new Promise<void>((resolve) => {
            release = resolve;
          });
          running--;
        },
        (err) => {
          running--;
          errors.push(err);
        },
      );
      await vi.advanceTimersByTimeAsync(10);
      await vi.advanceTimersByTimeAsync(50);
      expect(errors).toHaveLength(1);
      expect(rounds).toBe(2);
      let stopped = false;
      const stopping = task.stop().then(() => {
        stopped = true;
      });
      await vi.advanceTimersByTimeAsync(0);
      expect(stopped).toBe(false);
      release();
      await stopping;
      expect(maxRunning).toBe(1);
      await vi.advanceTimersByTimeAsync(100);
      expect(rounds).toBe(2);
    } finally {
      vi.useRealTimers();
    }
  });
});

describe("startLagMonitor", () => {
  type LagReading = (group: string, topics: string[]) => Promise<PartitionLag[]>;
  /** A monitor of group g reading every 5 ms through `consumerLag`, and the registry it publishes to. */
  function monitorLag(consumerLag: LagReading, topics = ["order.created"]) {
    const registry = new Registry();
    const monitor = startLagMonitor({
      kafka: { consumerLag } as unknown as KafkaClient,
      consumerGroup: "g",
      topicPrefix: "p.",
      topics,
      metrics: createMessagingMetrics(registry),
      logger,
      intervalMs: 5,
    });
    return { registry, monitor };
  }

  it("publishes the lag per partition under the logical topic name", async () => {
    const consumerLag = vi.fn(async (_group: string, topics: string[]) =>
      topics.map((topic, i) => ({ topic, partition: i, committed: 0, end: 5 + i, lag: 5 + i })),
    );
    const { registry, monitor } = monitorLag(consumerLag, ["order.created", "order.canceled"]);
    await vi.waitFor(() => expect(consumerLag).toHaveBeenCalled());
    await monitor.stop();
    expect(consumerLag).toHaveBeenCalledWith(
      "g",
      ["p.order.created", "p.order.canceled"],
      expect.any(AbortSignal),
    );
    expect(await metricValue(registry, "saga_consumer_lag", { topic: "order.created", partition: "0" })).toBe(
      5,
    );
    expect(
      await metricValue(registry, "saga_consumer_lag", {
        topic: "order.canceled",
        partition: "1",
        group: "g",
      }),
    ).toBe(6);
  });

  it("drops the lag it published once a reading fails, so that an instance cut off from the broker does not hold the group's", async () => {
    let reachable = true;
    const { registry, monitor } = monitorLag(async (_group, topics) => {
      if (!reachable) throw new Error("the broker is unreachable");
      return topics.map((topic, i) => ({ topic, partition: i, committed: 0, end: 900, lag: 900 }));
    });
    const series = async () => (await registry.getSingleMetric("saga_consumer_lag")?.get())?.values ?? [];
    await vi.waitFor(async () => expect(await series()).toHaveLength(1));
    reachable = false;
    // Its last reading would stay for ever, and max by group would take it over the live instances'.
    await vi.waitFor(async () => expect(await series()).toEqual([]), { timeout: 5000 });
    await monitor.stop();
  });

  it("drops the lag of a partition that a later reading no longer has (a topic made again with fewer partitions)", async () => {
    let partitions = [0, 1];
    const { registry, monitor } = monitorLag(async (_group, topics) =>
      topics.flatMap((topic) =>
        partitions.map((partition) => ({ topic, partition, committed: 0, end: 900, lag: 900 })),
      ),
    );
    const published = async () =>
      ((await registry.getSingleMetric("saga_consumer_lag")?.get())?.values ?? []).map(
        (v) => v.labels.partition,
      );
    await vi.waitFor(async () => expect(await published()).toEqual(["0", "1"]));
    partitions = [0];
    // Partition 1's last reading would stay for good, and max by group would report it.
    await vi.waitFor(async () => expect(await published()).toEqual(["0"]), { timeout: 2000 });
    await monitor.stop();
  });
});
