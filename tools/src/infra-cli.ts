import { ALL_TOPICS } from "@saga/contracts";
import { defineCli } from "./cli.ts";
import { startLocalStack } from "./infra/index.ts";

const infraCli = defineCli({
  name: "infra",
  command: "npm run infra --",
  about:
    "PostgreSQL and Kafka with the system's databases and topics, data kept in .cache/data, until Ctrl-C,\n" +
    "which stops both cleanly. It prints their URLs.",
  options: {},
  notes: [
    "environment:",
    "  POSTGRES_PORT          PostgreSQL's port (default 5432)",
    "  KAFKA_PORT             Kafka's port (default 9092)",
    "  KAFKA_CONTROLLER_PORT  its controller's port (default KAFKA_PORT + 1)",
  ].join("\n"),
});

async function run(): Promise<void> {
  infraCli.parseOrExit(process.argv.slice(2));
  const kafkaPort = port("KAFKA_PORT", 9092);
  const stack = await startLocalStack({
    postgresPort: port("POSTGRES_PORT", 5432),
    kafkaPort,
    kafkaControllerPort: port("KAFKA_CONTROLLER_PORT", kafkaPort + 1),
    databases: ["user_db", "order_db"],
    topics: ALL_TOPICS,
    partitions: 6,
  });
  console.log(
    [
      `POSTGRES_URL=${stack.postgresUrl}`,
      ...Object.entries(stack.databaseUrls).map(([name, url]) => `${name.toUpperCase()}_URL=${url}`),
      `KAFKA_BROKERS=${stack.kafkaBrokers.join(",")}`,
      `topics: ${ALL_TOPICS.join(", ")}`,
      "Ctrl-C to stop",
    ].join("\n"),
  );
  const signal = await new Promise<NodeJS.Signals>((resolve) => {
    for (const s of ["SIGINT", "SIGTERM", "SIGHUP"] as const) process.once(s, resolve);
  });
  console.log(`${signal}: stopping`);
  await stack.stop();
}

function port(name: string, fallback: number): number {
  const value = process.env[name];
  if (value === undefined || value === "") return fallback;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1 || n > 65535)
    throw new Error(`${name} must be a port number, not ${JSON.stringify(value)}`);
  return n;
}

run().catch((err) => {
  console.error(err);
  process.exit(1);
});
