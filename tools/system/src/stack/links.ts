import { numberOption } from "@saga/tools/cli";

/** An order-service instance's process: `order` when it is the only one, `order-1`, `order-2`… of several. */
export type OrderProcess = "order" | `order-${number}`;

/**
 * The order-service processes of a system of `count` instances: `order` alone, as the bench and its
 * figures have always named it, or `order-1`…`order-N`, as the user-services are named.
 */
export function orderProcesses(count: number): OrderProcess[] {
  if (!Number.isInteger(count) || count < 1)
    throw new Error(`order-service instances: a whole number from 1, not ${count}`);
  return count === 1 ? ["order"] : Array.from({ length: count }, (_, i) => `order-${i + 1}` as const);
}

/** `--order-services` of `npm start` and the chaos run: a whole number from 1. */
export function orderServicesOption(raw: string | undefined): number {
  return numberOption("order-services", raw, { integer: true, min: 1 });
}

/** The processes that talk to PostgreSQL and Kafka, each over links of its own when proxied. */
export type LinkedProcess = "user-1" | "user-2" | OrderProcess | "relay-1" | "relay-2";

/** The linked processes of a system with `orderServices` order-service instances, in the order they start. */
export const linkedProcesses = (orderServices = 1): LinkedProcess[] => [
  "user-1",
  "user-2",
  ...orderProcesses(orderServices),
  "relay-1",
  "relay-2",
];

/** Those of a system with one order-service instance. */
export const LINKED_PROCESSES: readonly LinkedProcess[] = linkedProcesses(1);

export const BACKENDS = ["postgres", "kafka"] as const;
export type Backend = (typeof BACKENDS)[number];
/** A process's connections to one backend: `user-1→postgres`. */
export type Link = `${LinkedProcess}→${Backend}`;
export const linkName = (process: LinkedProcess, backend: Backend): Link => `${process}→${backend}`;
