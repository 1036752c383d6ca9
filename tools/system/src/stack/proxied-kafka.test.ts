import { randomBytes } from "node:crypto";
import { rm } from "node:fs/promises";
import { join } from "node:path";
import { createKafka } from "@saga/kafka";
import { startFaultProxy } from "@saga/tools/fault-proxy";
import { cacheDir, createTopics, freePort, startKafka } from "@saga/tools/infra";
import { afterEach, expect, it } from "vitest";

const cleanup: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const c of cleanup.splice(0).reverse()) await c().catch(() => {});
});

const message = (value: string) => ({ topic: "proxied", key: "k", value, headers: {} });

// What the chaos run relies on: a client that bootstraps through its proxy is told the proxy's address
// for the broker, so that every later connection (after a reset, a restart) goes through the proxy too.
it("sends a Kafka client that bootstraps through a proxied listener back through the proxy", async () => {
  const [port, controllerPort, listenerPort, proxyPort] = [
    await freePort(),
    await freePort(),
    await freePort(),
    await freePort(),
  ];
  const proxy = await startFaultProxy({ name: "test→kafka", port: proxyPort, targetPort: listenerPort });
  cleanup.push(() => proxy.close());
  const dataDir = join(cacheDir, "run", `proxied-kafka-${randomBytes(4).toString("hex")}`);
  const broker = await startKafka({
    dataDir,
    port,
    controllerPort,
    durable: false,
    proxiedListeners: [{ name: "CLIENT_TEST", port: listenerPort, advertisedPort: proxyPort }],
  });
  cleanup.push(async () => {
    await broker.stop();
    await rm(dataDir, { recursive: true, force: true });
    await rm(`${dataDir}.log`, { force: true });
  });
  await createTopics(broker.brokers, ["proxied"], 1);

  const viaProxy = createKafka({ brokers: [`127.0.0.1:${proxy.port}`], clientId: "proxied" });
  cleanup.push(() => viaProxy.close());
  const producer = await viaProxy.createProducer();
  cleanup.push(() => producer.close());
  await producer.send([message("before")]);
  expect(proxy.stats().connections).toBeGreaterThan(0);

  // Were the producer connected to the broker's own address, the blackhole would not hold it up.
  proxy.inject({ kind: "blackhole" });
  let sent = false;
  const sending = producer.send([message("during")]).then(() => {
    sent = true;
  });
  await new Promise((r) => setTimeout(r, 2000));
  expect(sent).toBe(false);
  proxy.heal();
  await sending;

  const direct = createKafka({ brokers: broker.brokers, clientId: "direct" });
  cleanup.push(() => direct.close());
  const messages = await direct.readToEnd(["proxied"]);
  expect(messages.map((m) => m.value)).toEqual(["before", "during"]);
});
