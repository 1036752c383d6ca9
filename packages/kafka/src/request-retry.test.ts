import { type TracingChannelSubscribers, tracingChannel } from "node:diagnostics_channel";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startFaultProxy } from "@saga/tools/fault-proxy";
import { freePort, startKafka } from "@saga/tools/infra";
import { freshGroupId } from "@saga/tools/test/harness";
import { describe, expect, it, onTestFinished } from "vitest";
import { createKafka, type IncomingMessage } from "./index.ts";

// The platformatic adapter's requests to a broker that stays away: @platformatic/kafka 2.12.1 keeps every
// failed attempt's error until the request succeeds or gives up, so the adapter has it give up
// (`requestRetry`) and starts again itself.

// The clients' warnings, printed only when a test fails.
let clientLog: string[] = [];
const record =
  (level: string) =>
  (fields: object, message: string): void => {
    clientLog.push(`${new Date().toISOString()} ${level} ${message} ${JSON.stringify(fields).slice(0, 300)}`);
  };
const logger = { debug: () => {}, info: () => {}, warn: record("warn"), error: record("error") };
function printLogIfFailed() {
  onTestFinished((ctx) => {
    if (ctx.task.result?.state === "fail")
      console.error(`client log of the failed test:\n${clientLog.join("\n")}`);
    clientLog = [];
  });
}

/** Connections the library tried to open, from its diagnostics channel: one per attempt of a request. */
function connectionAttempts(): () => number {
  let attempts = 0;
  const ignore = () => {};
  const handlers: TracingChannelSubscribers<object> = {
    start: () => attempts++,
    end: ignore,
    asyncStart: ignore,
    asyncEnd: ignore,
    error: ignore,
  };
  const channel = tracingChannel<string, object>("plt:kafka:connections:connects");
  channel.subscribe(handlers);
  onTestFinished(() => channel.unsubscribe(handlers));
  return () => attempts;
}

async function waitFor(what: string, probe: () => boolean | Promise<boolean>, timeoutMs = 60_000) {
  const deadline = Date.now() + timeoutMs;
  while (!(await probe())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

const gc = (globalThis as { gc?: () => void }).gc;

describe("@saga/kafka through platformatic, while the broker stays away", () => {
  it("keeps no more memory however often it tries: each request gives its errors up with its retries", async () => {
    if (!gc) throw new Error("needs --expose-gc (vitest.config.ts's execArgv)");
    printLogIfFailed();
    const attempts = connectionAttempts();
    // Nothing listens there, and no wait between attempts: thousands of them in seconds.
    const kafka = createKafka({
      brokers: [`127.0.0.1:${await freePort()}`],
      clientId: "request-retry-test",
      client: "platformatic",
      logger,
      requestRetry: { maxAttempts: 15, backoffMs: 0, maxBackoffMs: 0 },
    });
    // A consumer joining its group, and a producer connecting again whenever its connect fails, as the
    // relay's does.
    const joining = kafka
      .createConsumer({
        groupId: freshGroupId(),
        topics: ["nowhere"],
        handle: async () => {},
        classify: () => "transient",
        deadLetter: async () => {},
      })
      .then(
        () => "joined",
        (err: unknown) => err,
      );
    let connecting = true;
    const producing = (async () => {
      while (connecting) {
        await kafka.createProducer().then(
          (producer) => producer.close(),
          () => {},
        );
      }
    })();
    onTestFinished(async () => {
      connecting = false;
      await kafka.close();
      await producing;
    });

    const heapAfter = async (n: number) => {
      await waitFor(`${n} connection attempts`, () => attempts() >= n);
      gc();
      return process.memoryUsage().heapUsed;
    };
    const before = await heapAfter(2_000);
    const after = await heapAfter(10_000);
    // Retried for ever, the library kept about 12.5 KB for each of these 8,000 attempts: about 100 MB.
    expect((after - before) / 1e6).toBeLessThan(20);

    // Still trying to join, until the client is closed.
    await kafka.close();
    expect(await joining).toBeInstanceOf(Error);
  }, 120_000);

  it("carries on once the broker is back, the producer sending and the consumer back in its group", async () => {
    printLogIfFailed();
    // A broker of this test's own, reached through a proxy that cuts every connection on command: its
    // clients are sent back to the proxy's address for every broker connection.
    const [port, controllerPort, listenerPort, proxyPort] = [
      await freePort(),
      await freePort(),
      await freePort(),
      await freePort(),
    ];
    const proxy = await startFaultProxy({ name: "test→kafka", port: proxyPort, targetPort: listenerPort });
    const dir = await mkdtemp(join(tmpdir(), "kafka-away-"));
    const broker = await startKafka({
      dataDir: join(dir, "kafka"),
      port,
      controllerPort,
      durable: false,
      proxiedListeners: [{ name: "CLIENT_TEST", port: listenerPort, advertisedPort: proxyPort }],
    });
    onTestFinished(async () => {
      await proxy.close();
      await broker.stop();
      await rm(dir, { recursive: true, force: true });
    });
    const direct = createKafka({ brokers: broker.brokers, clientId: "direct", client: "platformatic" });
    onTestFinished(() => direct.close());
    // Each request gives up within a second: the outage below outlasts it many times over.
    const kafka = createKafka({
      brokers: [`127.0.0.1:${proxy.port}`],
      clientId: "away",
      client: "platformatic",
      logger,
      requestRetry: { maxAttempts: 3, backoffMs: 100, maxBackoffMs: 200 },
    });
    onTestFinished(() => kafka.close());

    const events = `away-${Math.random().toString(36).slice(2)}`;
    await direct.createTopics([events], 2);
    const producer = await kafka.createProducer();
    onTestFinished(() => producer.close());
    const seen = new Set<string>();
    const groupId = freshGroupId();
    const consumer = await kafka.createConsumer({
      groupId,
      topics: [events],
      async handle(m: IncomingMessage) {
        seen.add(m.value ?? "");
      },
      classify: () => "transient",
      deadLetter: async () => {},
    });
    onTestFinished(() => consumer.stop());
    const batch = (from: number) =>
      Array.from({ length: 10 }, (_, i) => ({
        topic: events,
        key: `k${i % 4}`,
        value: `m${from + i}`,
        headers: {},
      }));
    await producer.send(batch(0));
    await waitFor("the first messages", () => seen.size === 10);

    proxy.inject({ kind: "reset" });
    // The send gives up, and so does the consumer's stream; past the session timeout (10 s) the group
    // has forgotten the member too.
    await expect(producer.send(batch(10))).rejects.toThrow();
    await waitFor("the consumer to lose its stream", () => !consumer.isRunning());
    await new Promise((r) => setTimeout(r, 12_000));
    proxy.heal();

    // The same producer sends again, and the consumer reads and commits as a member of its group.
    await producer.send(batch(10));
    await waitFor("the messages sent after the outage", () => seen.size === 20);
    await waitFor(
      "the group's offsets committed up to the end",
      async () => {
        const lags = await direct.consumerLag(groupId, [events]).catch(() => undefined);
        return lags !== undefined && lags.every((p) => p.lag === 0 && p.end > 0);
      },
      90_000,
    );
    expect(consumer.isRunning()).toBe(true);
  }, 180_000);
});
