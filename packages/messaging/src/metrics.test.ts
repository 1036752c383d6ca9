import { Registry } from "prom-client";
import { describe, expect, it } from "vitest";
import { createMessagingMetrics } from "./metrics.ts";

describe("saga_consumer_stuck_seconds", () => {
  it("has a series per stuck partition with its event's age, taken at each scrape, and none once it moved on", async () => {
    const registry = new Registry();
    const { stuck } = createMessagingMetrics(registry);
    const series = async () =>
      (await registry.getSingleMetric("saga_consumer_stuck_seconds")?.get())?.values ?? [];
    const partition = { group: "g", topic: "order.created", partition: "2" };
    expect(await series()).toEqual([]);

    stuck.retrying({ ...partition, failure: "transient" }, Date.now() - 60_000);
    // The same partition, now failing otherwise: still one series, labelled with the latest failure.
    stuck.retrying({ ...partition, failure: "unexpected" }, Date.now() - 60_000);
    stuck.retrying({ ...partition, partition: "3", failure: "transient" }, Date.now() - 5_000);
    const [first, second] = await series();
    expect(first).toMatchObject({ labels: { ...partition, failure: "unexpected" } });
    expect(first?.value).toBeGreaterThanOrEqual(60);
    expect(second).toMatchObject({ labels: { ...partition, partition: "3", failure: "transient" } });
    expect(second?.value).toBeLessThan(60);

    stuck.movedOn(partition);
    expect((await series()).map((s) => s.labels.partition)).toEqual(["3"]);
    stuck.movedOn({ ...partition, partition: "3" });
    expect(await series()).toEqual([]);
  });
});
