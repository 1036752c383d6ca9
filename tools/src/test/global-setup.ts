import type { TestProject } from "vitest/node";
import { startInfra } from "../infra/index.ts";
import type {} from "./provided-context.ts";

/**
 * Vitest globalSetup: one PostgreSQL server and one Kafka broker for the whole run, reused
 * from POSTGRES_URL and KAFKA_BROKERS when `with-infra` (or CI) already provides them.
 */
export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const infra = await startInfra();
  project.provide("postgresUrl", infra.postgresUrl);
  project.provide("kafkaBrokers", infra.kafkaBrokers);
  return () => infra.stop();
}
