import { hostname, userInfo } from "node:os";
import { envVars, parseEnv } from "@saga/messaging";
import { z } from "zod";

/** Who replays, for the record: the operator's account on this machine unless DLQ_OPERATOR says. */
const defaultOperator = () => `${userInfo().username}@${hostname()}`;

export const Env = z
  .object({
    /** The service databases whose dead letters to read and replay; give one or both. */
    USER_DB_URL: envVars.postgresUrl.optional(),
    ORDER_DB_URL: envVars.postgresUrl.optional(),
    DLQ_OPERATOR: z.string().trim().min(1).max(200).default(defaultOperator),
  })
  .refine((env) => env.USER_DB_URL || env.ORDER_DB_URL, {
    message: "set USER_DB_URL, ORDER_DB_URL or both",
    path: ["USER_DB_URL"],
  });
export type Env = z.infer<typeof Env>;

/** Parses the environment once; a bad or missing variable fails with its name. */
export const parseDlqEnv = (source: Record<string, string | undefined>): Env => parseEnv(Env, source);
