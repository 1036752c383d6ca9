/** The processes that talk to PostgreSQL and Kafka, each over links of its own when proxied. */
export const LINKED_PROCESSES = ["user-1", "user-2", "order", "relay-1", "relay-2"] as const;
export const BACKENDS = ["postgres", "kafka"] as const;
export type LinkedProcess = (typeof LINKED_PROCESSES)[number];
export type Backend = (typeof BACKENDS)[number];
/** A process's connections to one backend: `user-1→postgres`. */
export type Link = `${LinkedProcess}→${Backend}`;
export const linkName = (process: LinkedProcess, backend: Backend): Link => `${process}→${backend}`;
