/** The warm-up before `/ready`: the hot path's connections and statements are ready before any request. */
import { connect } from "node:net";
import { fileURLToPath } from "node:url";
import { orders, outbox } from "@saga/db/order";
import { spawnService } from "@saga/messaging/testing";
import { createLogger } from "@saga/observability";
import { freePort } from "@saga/tools/infra";
import { kafkaBrokers, useFreshDatabase } from "@saga/tools/test/harness";
import { count } from "drizzle-orm";
import { afterAll, describe, expect, it, onTestFinished, vi } from "vitest";
import { createOrderService, type OrderService } from "../src/service.ts";
import { freshTopicPrefix, openDatabase, testEnv } from "./support.ts";

const databaseUrl = useFreshDatabase("order_warm_up");
let service: OrderService | undefined;

afterAll(async () => {
  await service?.stop();
});

describe("warm-up", () => {
  it("holds /ready until the warm-up is done: every pool connection open, the hot path run on each, nothing written", async () => {
    let release: () => void = () => {};
    const held = new Promise<void>((resolve) => {
      release = resolve;
    });
    service = await createOrderService(testEnv(databaseUrl(), await freshTopicPrefix()), {
      logger: createLogger("order-service", process.env.TEST_LOG_LEVEL ?? "error"),
      warmUp: () => held,
    });
    const { app, runtime } = service;
    const started = service.start();

    // The consumer joins and the pool warms, but readiness waits for the whole warm-up.
    await vi.waitFor(() => expect(runtime.isConsuming()).toBe(true), { timeout: 30_000, interval: 100 });
    await vi.waitFor(() => expect(runtime.db.pool.totalCount).toBe(runtime.db.pool.options.max), {
      timeout: 10_000,
      interval: 50,
    });
    const waiting = await app.request("/ready");
    expect(waiting.status).toBe(503);
    expect(await waiting.json()).toMatchObject({
      status: "DOWN",
      error: expect.stringMatching(/^warming up/),
    });

    release();
    await started;
    expect((await app.request("/ready")).status).toBe(200);
    // The HTTP path's warm-up went through the app (its reads found nothing, its orders were refused by
    // validation), counted on series of its own: the app's are its clients' alone.
    const served = await runtime.metrics.registry.getSingleMetricAsString("http_requests_total");
    expect(served).not.toMatch(/status="(400|404)"/);
    // Every statement ran in a transaction that was rolled back.
    const db = openDatabase(databaseUrl());
    try {
      expect((await db.db.select({ n: count() }).from(orders))[0]?.n).toBe(0);
      expect((await db.db.select({ n: count() }).from(outbox))[0]?.n).toBe(0);
      // Yet an outbox row was inserted on each connection (a sequence is not rolled back).
      const { rows } = await db.pool.query<{ last_value: string }>(
        "select last_value from outbox_position_seq",
      );
      expect(Number(rows[0]?.last_value)).toBeGreaterThanOrEqual(2 * (runtime.db.pool.options.max ?? 10));
    } finally {
      await db.close();
    }
  });

  it("refuses connections until the hot path is warm: a load balancer cannot send it traffic while it warms", async () => {
    const port = await freePort();
    const prefix = await freshTopicPrefix();
    const service = spawnService(fileURLToPath(new URL("..", import.meta.url)), {
      PORT: String(port),
      DATABASE_URL: databaseUrl(),
      KAFKA_BROKERS: kafkaBrokers().join(","),
      KAFKA_TOPIC_PREFIX: prefix,
      CONSUMER_GROUP: `${prefix}order-service`,
      INSTANCE_ID: "warm-up-test",
      LOG_LEVEL: "info",
    });
    onTestFinished(() => service.kill());
    const accepts = () =>
      new Promise<boolean>((resolve) => {
        const socket = connect({ port, host: "127.0.0.1" }, () => {
          socket.destroy();
          resolve(true);
        });
        socket.once("error", () => resolve(false));
      });
    let connectedAt = 0;
    await vi.waitFor(
      async () => {
        expect(await accepts()).toBe(true);
        connectedAt = Date.now();
      },
      { timeout: 60_000, interval: 10 },
    );
    const warm = await service.logLine((l) => l.msg === "hot path warm");
    expect(Date.parse(String(warm.time))).toBeLessThanOrEqual(connectedAt);
    await vi.waitFor(async () => expect((await fetch(`http://127.0.0.1:${port}/ready`)).status).toBe(200), {
      timeout: 30_000,
      interval: 100,
    });
    const { code } = await service.terminate();
    expect(code).toBe(0);
  });
});
