import { parseEnv, serviceEnvSchema } from "@saga/messaging";
import type { z } from "zod";

export const Env = serviceEnvSchema({ port: 8081, consumerGroup: "user-service" });
export type Env = z.infer<typeof Env>;

/** Parses the user-service's environment; a bad variable fails start-up with its name. */
export const parseUserServiceEnv = (source: Record<string, string | undefined>): Env => parseEnv(Env, source);
