import { createLogger } from "@saga/observability";
import { afterEach, describe, expect, it, onTestFinished, vi } from "vitest";
import { parseRelayEnv } from "./env.ts";
import type { Backlog, OutboxStore } from "./outbox-store.ts";
import { createRelayService } from "./service.ts";

afterEach(() => {
  vi.useRealTimers();
});

// Nothing listens there: nothing connects unless the relay starts.
const env = parseRelayEnv({ ORDER_DB_URL: "postgres://127.0.0.1:1/order_db", KAFKA_BROKERS: "127.0.0.1:1" });

describe("the relay's metrics", () => {
  it("export saga_relay_errors_total at 0 for each stage of each outbox, so that the first error is an increase", async () => {
    const relay = createRelayService(env, { logger: createLogger("relay", "silent") });
    onTestFinished(() => relay.stop());
    const series = (await relay.metrics.registry.getSingleMetric("saga_relay_errors_total")?.get())?.values;
    expect(series?.map(({ labels, value }) => [labels.outbox, labels.stage, value])).toEqual(
      ["lock", "read", "visibility", "send", "mark", "cleanup", "wakeup", "backlog"].map((stage) => [
        "order",
        stage,
        0,
      ]),
    );
  });

  it("count the lag on from the last reading while the outbox cannot be read, instead of keeping it", async () => {
    let read = async (): Promise<Backlog> => ({ rows: 3, oldestAgeSeconds: 5 });
    const store = { backlog: () => read() } as unknown as OutboxStore;
    const relay = createRelayService(env, {
      logger: createLogger("relay", "silent"),
      createStore: () => store,
    });
    onTestFinished(() => relay.stop());
    const scrape = async (name: string) => {
      const metric = relay.metrics.registry.getSingleMetric(name);
      return (await metric?.get())?.values.find((v) => v.labels.outbox === "order")?.value;
    };
    vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout", "performance"] });

    expect(await scrape("saga_relay_outbox_lag_seconds")).toBe(5);
    read = async () => {
      throw new Error("connect ECONNREFUSED 127.0.0.1:1");
    };
    await vi.advanceTimersByTimeAsync(30_000);
    expect(await scrape("saga_relay_outbox_lag_seconds")).toBeCloseTo(35);
    await vi.advanceTimersByTimeAsync(30_000);
    expect(await scrape("saga_relay_outbox_lag_seconds")).toBeCloseTo(65);
    expect(await scrape("saga_relay_outbox_backlog")).toBe(3);

    read = async () => ({ rows: 0, oldestAgeSeconds: 0 });
    await vi.advanceTimersByTimeAsync(30_000);
    expect(await scrape("saga_relay_outbox_lag_seconds")).toBe(0);
  });
});

describe("the relay's Kafka security settings", () => {
  it("refuse to build a relay when they do not go together, naming the variables", () => {
    const plainInClear = parseRelayEnv({
      ORDER_DB_URL: "postgres://127.0.0.1:1/order_db",
      KAFKA_BROKERS: "127.0.0.1:1",
      KAFKA_SASL_MECHANISM: "PLAIN",
      KAFKA_SASL_USERNAME: "relay",
      KAFKA_SASL_PASSWORD: "relay-password",
    });
    expect(() => createRelayService(plainInClear, { logger: createLogger("relay", "silent") })).toThrow(
      /KAFKA_SASL_MECHANISM: plain sends the password in clear; set KAFKA_SSL=true/,
    );
  });
});
