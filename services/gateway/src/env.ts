import { hostname } from "node:os";
import { httpEnvVars } from "@saga/http";
import { z } from "zod";

/** An upstream's origin: `http://host:port`, with no path, query or credentials. */
const origin = z
  .string()
  .trim()
  .refine((s) => {
    try {
      const url = new URL(s);
      return (
        (url.protocol === "http:" || url.protocol === "https:") &&
        !url.username &&
        (url.pathname === "/" || url.pathname === "") &&
        !url.search
      );
    } catch {
      return false;
    }
  }, "must be an http:// origin such as http://127.0.0.1:8081")
  .transform((s) => new URL(s).origin);

const millis = z.coerce.number().int().positive();

export const Env = z.object({
  PORT: z.coerce.number().int().min(0).max(65_535).default(8080),
  /** The user-service instances, comma-separated; requests go round-robin over the healthy ones. */
  USER_SERVICE_URLS: z
    .string()
    .transform((s) =>
      s
        .split(",")
        .map((u) => u.trim())
        .filter(Boolean),
    )
    .pipe(z.array(origin).min(1, "must name at least one user-service instance")),
  ORDER_SERVICE_URL: origin,
  /** Whole request to an upstream, retry included, until its response is read: past it, a 504. */
  UPSTREAM_TIMEOUT_MS: millis.default(5000),
  /** TCP connect; an instance that does not accept within it counts as down. */
  CONNECT_TIMEOUT_MS: millis.default(1000),
  HEALTH_INTERVAL_MS: millis.default(1000),
  /** A health check slower than this is a busy instance, not a failure… */
  HEALTH_TIMEOUT_MS: millis.default(2000),
  /** …unless its checks stay unanswered this long: then it accepts connections but is stuck. */
  HEALTH_STALLED_AFTER_MS: millis.default(10_000),
  HEALTH_PATH: z.string().startsWith("/").default("/health"),
  /** Checks answering non-2xx in a row that take an instance out of rotation (a refused connection does at once). */
  UNHEALTHY_THRESHOLD: z.coerce.number().int().positive().default(2),
  /** Responses in a row that are 5xx, not counting a shed 503 with Retry-After, that take an instance out. */
  CONSECUTIVE_5XX: z.coerce.number().int().positive().default(5),
  MAX_BODY_BYTES: z.coerce
    .number()
    .int()
    .positive()
    .default(64 * 1024),
  /** Connections kept to each upstream instance. */
  UPSTREAM_CONNECTIONS: z.coerce.number().int().positive().default(64),
  /** Connections kept to each upstream instance for requests held open by `Prefer: wait`, apart from the rest. */
  UPSTREAM_HELD_CONNECTIONS: z.coerce.number().int().positive().default(1024),
  INSTANCE_ID: z.string().min(1).default(hostname()),
  // Per upstream: /users and /orders have lanes of their own, so one's flood cannot starve the other.
  ...httpEnvVars({ readInFlight: 128, writeInFlight: 128, queue: 64 }),
  LOG_LEVEL: z.enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"]).default("info"),
});
export type Env = z.infer<typeof Env>;

/** Parses the gateway's environment once; a bad or missing variable fails start-up with its name. */
export function parseGatewayEnv(source: Record<string, string | undefined>): Env {
  const parsed = Env.safeParse(source);
  if (parsed.success) return parsed.data;
  const problems = parsed.error.issues.map((i) => `${i.path.join(".") || "(environment)"}: ${i.message}`);
  throw new Error(`invalid environment: ${problems.join("; ")}`);
}
