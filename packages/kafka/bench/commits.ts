/**
 * What committing offsets together saves (not a test): a consumer group reads a topic written at a steady
 * low rate, one message per send as the relay sends at low load, once with every batch's offset committed
 * at once (`commitIntervalMs` 0) and once coalesced (the default), alternating; it prints the broker's CPU
 * and this process's (the producer and the consumer) over each window.
 * `node ../../tools/src/with-infra.ts node bench/commits.ts [--seconds 20 --rate 200 --interval 0,200,0,200]`
 */
import { execFileSync } from "node:child_process";
import { parseArgs } from "node:util";
import { cpuSeconds } from "@saga/tools/process";
import { createKafka, DEFAULT_KAFKA_CLIENT } from "../src/index.ts";

const { values } = parseArgs({
  allowPositionals: true,
  options: {
    seconds: { type: "string", default: "20" },
    rate: { type: "string", default: "200" },
    interval: { type: "string", default: "0,200,0,200" },
  },
});
const SECONDS = Number(values.seconds);
const RATE = Number(values.rate);
const brokers = (process.env.KAFKA_BROKERS ?? "").split(",").filter(Boolean);
if (brokers.length === 0) throw new Error("KAFKA_BROKERS is not set: run it under tools/src/with-infra.ts");

// The broker's pid, from the process listening on its port.
const port = brokers[0]?.split(":")[1];
const listening = execFileSync("ss", ["-ltnpH", `sport = :${port}`], { encoding: "utf8" });
const brokerPid = Number(/pid=(\d+)/.exec(listening)?.[1]);
const brokerCpu = async () => (await cpuSeconds({ broker: brokerPid })).broker ?? 0;
const ownCpu = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
};

const topic = `commits-${Math.random().toString(36).slice(2)}`;
const kafka = createKafka({ brokers, clientId: "commits-bench", client: DEFAULT_KAFKA_CLIENT });
await kafka.createTopics([topic], 6);
const producer = await kafka.createProducer();

console.log(`${RATE} messages/s, one a send, ${SECONDS} s a window, ${DEFAULT_KAFKA_CLIENT}`);
console.log("| commitIntervalMs | broker cores | bench process cores | messages read |");
console.log("|---:|---:|---:|---:|");
let n = 0;
for (const interval of values.interval.split(",").map(Number)) {
  let seen = 0;
  const consumer = await kafka.createConsumer({
    groupId: `commits-bench-${interval}-${Date.now()}`,
    topics: [topic],
    fromBeginning: false,
    commitIntervalMs: interval,
    handle: async () => {
      seen++;
    },
    handleBatch: async (messages) => {
      seen += messages.length;
    },
    classify: () => "transient",
    deadLetter: async () => {},
  });
  await new Promise((r) => setTimeout(r, 3000));
  const b0 = await brokerCpu();
  const p0 = ownCpu();
  const start = performance.now();
  const end = start + SECONDS * 1000;
  for (let i = 0; performance.now() < end; i++) {
    await producer.send([{ topic, key: `k${n++ % 1000}`, value: "v", headers: { "event-id": String(n) } }]);
    const due = start + ((i + 1) * 1000) / RATE;
    const wait = due - performance.now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
  }
  const b = ((await brokerCpu()) - b0) / SECONDS;
  const p = (ownCpu() - p0) / SECONDS;
  console.log(`| ${interval} | ${b.toFixed(3)} | ${p.toFixed(3)} | ${seen} |`);
  await consumer.stop();
}
await producer.close();
await kafka.close();
