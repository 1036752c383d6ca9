/**
 * The project's only door to Kafka. Everything else speaks in the types of port.ts, and each process picks
 * the library behind them with `KAFKA_CLIENT` (see README.md for the measurements behind the default).
 */
import { createKafkajsClient } from "./kafkajs.ts";
import { createPlatformaticClient } from "./platformatic.ts";
import type { KafkaClient, KafkaClientName, KafkaOptions } from "./port.ts";

export * from "./port.ts";
export { MAX_MESSAGE_BYTES, messageBytes } from "./sizes.ts";

/** The adapter used when a process does not say. */
export const DEFAULT_KAFKA_CLIENT: KafkaClientName = "platformatic";

/** Creates a client for one set of brokers, through the adapter named by `options.client`. */
export function createKafka(options: KafkaOptions): KafkaClient {
  const client = options.client ?? DEFAULT_KAFKA_CLIENT;
  return client === "kafkajs" ? createKafkajsClient(options) : createPlatformaticClient(options);
}
