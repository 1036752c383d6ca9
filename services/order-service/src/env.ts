import { parseEnv, serviceEnvSchema } from "@saga/messaging";
import type { z } from "zod";

export const Env = serviceEnvSchema({ port: 8091, consumerGroup: "order-service" });
export type Env = z.infer<typeof Env>;

/** Parses the order-service's environment; a bad variable fails start-up with its name. */
export const parseOrderServiceEnv = (source: Record<string, string | undefined>): Env =>
  parseEnv(Env, source);
