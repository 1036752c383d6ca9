/**
 * Idle cost of each Kafka client (not a test): a producer that sent once and a consumer group member on a
 * topic nobody writes to, for `--seconds` s each, one client after the other (`--client A,B,A`).
 * `node ../../tools/src/with-infra.ts node bench/idle.ts [-- --seconds 20 --client platformatic,kafkajs]`
 * Prints the process's CPU in cores over each window (the bench process holds nothing else).
 */
import { parseArgs } from "node:util";
import { createKafka, KAFKA_CLIENTS, type KafkaClientName } from "../src/index.ts";

const { values } = parseArgs({
  options: {
    seconds: { type: "string", default: "20" },
    client: { type: "string", default: KAFKA_CLIENTS.join(",") },
  },
});
const SECONDS = Number(values.seconds);
const brokers = (process.env.KAFKA_BROKERS ?? "").split(",").filter(Boolean);
if (brokers.length === 0) throw new Error("KAFKA_BROKERS is not set: run it under tools/src/with-infra.ts");

const topic = `idle-${Math.random().toString(36).slice(2)}`;
const setup = createKafka({ brokers, clientId: "idle-bench-setup", client: "platformatic" });
await setup.createTopics([topic], 6);
await setup.close();

console.log(`| client | idle producer + consumer (cores over ${SECONDS} s) |`);
console.log("|---|---:|");
for (const client of values.client.split(",") as KafkaClientName[]) {
  const kafka = createKafka({ brokers, clientId: `idle-bench-${client}`, client });
  const producer = await kafka.createProducer();
  await producer.send([{ topic, key: "k", value: "v", headers: { "event-id": "1" } }]);
  let seen = 0;
  const consumer = await kafka.createConsumer({
    groupId: `idle-bench-${client}-${Date.now()}`,
    topics: [topic],
    handle: async () => {
      seen++;
    },
    classify: () => "transient",
    deadLetter: async () => {},
  });
  while (seen === 0) await new Promise((r) => setTimeout(r, 100));
  // Past the group join and the first fetches.
  await new Promise((r) => setTimeout(r, 3000));
  const before = process.cpuUsage();
  await new Promise((r) => setTimeout(r, SECONDS * 1000));
  const cpu = process.cpuUsage(before);
  console.log(`| ${client} | ${((cpu.user + cpu.system) / 1e6 / SECONDS).toFixed(4)} |`);
  await consumer.stop();
  await producer.close();
  await kafka.close();
}
