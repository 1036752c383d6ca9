import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createTestCertificates, freePort, type KafkaServer, startKafka } from "@saga/tools/infra";
import { freshGroupId } from "@saga/tools/test/harness";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import {
  createKafka,
  type IncomingMessage,
  KAFKA_CLIENTS,
  type KafkaClient,
  type KafkaClientName,
  type KafkaOptions,
  SASL_MECHANISMS,
} from "./index.ts";

// A broker of this file's own, with a listener that asks for TLS and SASL as a managed Kafka does
// (SASL_SSL), its certificate signed by a throwaway authority; the run's shared broker stays plaintext.
let broker: KafkaServer;
let dir: string;
let ca: string;
let otherCa: string;
const USER = { username: "saga", password: "saga-secret" };

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "kafka-secure-"));
  const certificates = await createTestCertificates(dir);
  ca = await readFile(certificates.caFile, "utf8");
  otherCa = await readFile(certificates.otherCaFile, "utf8");
  broker = await startKafka({
    dataDir: join(dir, "kafka"),
    port: await freePort(),
    controllerPort: await freePort(),
    durable: false,
    secureListener: {
      port: await freePort(),
      keyStoreFile: certificates.keyStoreFile,
      users: { [USER.username]: USER.password },
    },
  });
}, 120_000);

afterAll(async () => {
  await broker?.stop();
  await rm(dir, { recursive: true, force: true });
});

const cleanups: (() => Promise<void>)[] = [];
let clientLog: string[] = [];
const record =
  (level: string) =>
  (fields: object, message: string): void => {
    clientLog.push(`${level} ${message} ${JSON.stringify(fields).slice(0, 300)}`);
  };
const logger = { debug: () => {}, info: () => {}, warn: record("warn"), error: record("error") };
afterEach(async (ctx) => {
  while (cleanups.length) await cleanups.pop()?.();
  if (ctx.task.result?.state === "fail")
    console.error(`client log of the failed test:\n${clientLog.join("\n")}`);
  clientLog = [];
});

function secureClient(client: KafkaClientName, options: Partial<KafkaOptions> = {}): KafkaClient {
  const kafka = createKafka({
    brokers: broker.secureBrokers ?? [],
    clientId: "kafka-security-test",
    client,
    logger,
    tls: { ca },
    sasl: { mechanism: "scram-sha-512", ...USER },
    ...options,
  });
  cleanups.push(() => kafka.close());
  return kafka;
}

const freshTopic = () => `secure-${Math.random().toString(36).slice(2)}`;

describe.each(KAFKA_CLIENTS)("@saga/kafka through %s to a broker that asks for TLS and SASL", (client) => {
  it.each(SASL_MECHANISMS)("produces and reads back, signed in with %s", async (mechanism) => {
    const kafka = secureClient(client, { sasl: { mechanism, ...USER } });
    const topic = freshTopic();
    await kafka.createTopics([topic], 1);
    const producer = await kafka.createProducer();
    cleanups.push(() => producer.close());
    await producer.send([{ topic, key: "order-1", value: mechanism, headers: { "event-id": "e1" } }]);

    const read = await kafka.readToEnd([topic]);
    expect(read.map((m) => [m.key, m.value, m.headers["event-id"]])).toEqual([["order-1", mechanism, "e1"]]);
    await expect(kafka.ping()).resolves.toBeUndefined();
  });

  it("consumes as a member of a group and reports its lag", async () => {
    const kafka = secureClient(client);
    const topic = freshTopic();
    await kafka.createTopics([topic], 2);
    const producer = await kafka.createProducer();
    cleanups.push(() => producer.close());
    const groupId = freshGroupId();
    const seen: IncomingMessage[] = [];
    const consumer = await kafka.createConsumer({
      groupId,
      topics: [topic],
      handle: async (m) => {
        seen.push(m);
      },
      classify: () => "transient",
      deadLetter: async () => {},
    });
    cleanups.push(() => consumer.stop());
    await producer.send(
      Array.from({ length: 4 }, (_, i) => ({ topic, key: `k${i}`, value: `v${i}`, headers: {} })),
    );

    for (const deadline = Date.now() + 60_000; seen.length < 4 && Date.now() < deadline; )
      await new Promise((r) => setTimeout(r, 50));
    expect(seen.map((m) => m.value).sort()).toEqual(["v0", "v1", "v2", "v3"]);
    for (const deadline = Date.now() + 30_000; Date.now() < deadline; ) {
      const lags = await kafka.consumerLag(groupId, [topic]);
      if (lags.every((p) => p.lag === 0)) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(await kafka.consumerLag(groupId, [topic])).toEqual([
      expect.objectContaining({ topic, lag: 0 }),
      expect.objectContaining({ topic, lag: 0 }),
    ]);
  });

  it("with a wrong password, says the sign-in was refused: its probe, and its producer's and consumer's start", async () => {
    const kafka = secureClient(client, {
      sasl: { mechanism: "scram-sha-256", username: "saga", password: "wrong-password" },
    });

    // What /ready answers with.
    await expect(kafka.ping()).rejects.toThrow(/authentication failed/i);
    // Rejected, not retried for ever: a process is told at its start.
    await expect(kafka.createProducer()).rejects.toThrow(/authentication failed/i);
    await expect(
      kafka.createConsumer({
        groupId: freshGroupId(),
        topics: [freshTopic()],
        handle: async () => {},
        classify: () => "transient",
        deadLetter: async () => {},
      }),
    ).rejects.toThrow(/authentication failed/i);
    // The process's log says why too, and never what the password is.
    expect(clientLog.join("\n")).toMatch(/authentication failed/i);
    expect(clientLog.join("\n")).not.toContain("wrong-password");
  });

  it("with a password sent by PLAIN that is wrong, says so too", async () => {
    const kafka = secureClient(client, { sasl: { mechanism: "plain", username: "saga", password: "nope" } });

    await expect(kafka.ping()).rejects.toThrow(/authentication failed|invalid username or password/i);
  });

  it("refuses a broker whose certificate an authority it does not trust signed", async () => {
    const kafka = secureClient(client, { tls: { ca: otherCa } });

    await expect(kafka.ping()).rejects.toThrow(/certificate/);
  });

  it("refuses a broker whose certificate is signed by an authority the system does not know (no CA given)", async () => {
    const kafka = secureClient(client, { tls: {} });

    await expect(kafka.ping()).rejects.toThrow(/certificate/);
  });
});
