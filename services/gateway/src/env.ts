import { hostname } from "node:os";
import { envMillis, httpEnvVars, MAX_PREFER_WAIT_S, MAX_TIMER_MS, parseEnv } from "@saga/http";
import { z } from "zod";
import { DEFAULT_AUDIENCE, DEFAULT_ISSUER, DEV_AUTH_SECRET } from "./auth/tokens.ts";

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

/** A service's instances: origins, comma-separated. */
const origins = (service: string) =>
  z
    .string()
    .transform((s) =>
      s
        .split(",")
        .map((u) => u.trim())
        .filter(Boolean),
    )
    .pipe(z.array(origin).min(1, `must name at least one ${service} instance`));

const millis = envMillis();
const perSecond = z.coerce.number().positive();
const burst = z.coerce.number().int().min(1);

/** The gateway's admission defaults (HTTP settings), also read by the bench's edge, which follows them. */
export const GATEWAY_HTTP_DEFAULTS = {
  readInFlight: 64,
  writeInFlight: 64,
  queue: 64,
  warmUpMs: 30_000,
  warmUpQueueMs: 1000,
};

const Variables = z.object({
  PORT: z.coerce.number().int().min(0).max(65_535).default(8080),
  /** The API's address: loopback by default; a container or a host that serves others sets 0.0.0.0. */
  HOST: z.string().min(1).default("127.0.0.1"),
  /** `/metrics` for Prometheus, on a port of its own: never on the public one. */
  METRICS_PORT: z.coerce.number().int().min(0).max(65_535).default(9480),
  METRICS_HOST: z.string().min(1).default("127.0.0.1"),
  /** Bearer tokens are HS256, signed with this shared secret (at least 32 characters)… */
  AUTH_SECRET: z.string().min(32, "must be at least 32 characters").optional(),
  /** …or signed by an identity provider whose keys are at this JWKS URL. */
  AUTH_JWKS_URL: z.url({ protocol: /^https?$/ }).optional(),
  /** The algorithms accepted from the JWKS (asymmetric only; pinned, whatever a token's header says). */
  AUTH_ALGORITHMS: z
    .string()
    .default("RS256,ES256,EdDSA")
    .transform((s) =>
      s
        .split(",")
        .map((a) => a.trim())
        .filter(Boolean),
    )
    .pipe(
      z
        .array(
          z.enum(["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"]),
        )
        .min(1),
    ),
  AUTH_ISSUER: z.string().min(1).default(DEFAULT_ISSUER),
  AUTH_AUDIENCE: z.string().min(1).default(DEFAULT_AUDIENCE),
  /** Leeway for `exp` and `nbf` between our clock and the issuer's. */
  AUTH_CLOCK_SKEW_S: z.coerce.number().int().min(0).max(300).default(30),
  /**
   * The documented development switch: without AUTH_SECRET or AUTH_JWKS_URL the gateway then verifies
   * with the public development key, and without INTERNAL_SECRET it sends no credential. Never in
   * production: the gateway refuses to start without its secrets unless this is on, and warns when it is.
   */
  AUTH_DEV_MODE: z.stringbool().default(false),
  /** Sent to the services, which refuse their API without it (at least 32 characters). */
  INTERNAL_SECRET: z.string().min(32, "must be at least 32 characters").optional(),
  /** Token buckets on POST /orders and POST /users: per authenticated subject… */
  RATE_LIMIT_SUBJECT_PER_S: perSecond.default(10),
  RATE_LIMIT_SUBJECT_BURST: burst.default(20),
  /** …and per client address. */
  RATE_LIMIT_ADDRESS_PER_S: perSecond.default(50),
  RATE_LIMIT_ADDRESS_BURST: burst.default(100),
  /** The user-service instances, comma-separated; requests go round-robin over the healthy ones. */
  USER_SERVICE_URLS: origins("user-service"),
  /** The order-service instances, comma-separated, as the user-service's. */
  ORDER_SERVICE_URLS: origins("order-service").optional(),
  /**
   * The one order-service instance, as the gateway was given it before it took several: still read, so
   * that a deployment that sets it keeps working, and refused beside ORDER_SERVICE_URLS (`orderServiceUrls`).
   */
  ORDER_SERVICE_URL: origin.optional(),
  /**
   * Whole request to an upstream, retry included, until its response is read: past it, a 504. A read held
   * by `Prefer: wait=N` gets N s more on the same timer (`send`'s `holdMs`), so the sum must stay a timer's.
   */
  UPSTREAM_TIMEOUT_MS: envMillis({
    max: MAX_TIMER_MS - MAX_PREFER_WAIT_S * 1000,
    why: `a read held by Prefer: wait waits up to ${MAX_PREFER_WAIT_S * 1000} ms longer, on a Node.js timer`,
  }).default(5000),
  /** TCP connect; an instance that does not accept within it counts as down. */
  CONNECT_TIMEOUT_MS: millis.default(1000),
  HEALTH_INTERVAL_MS: millis.default(1000),
  /**
   * The checks' interval while an upstream carries no traffic and all its instances are in rotation:
   * a request to an instance that died meanwhile is refused its connection and sent to another.
   */
  HEALTH_NO_TRAFFIC_INTERVAL_MS: millis.default(10_000),
  /** A health check slower than this is a busy instance, not a failure… */
  HEALTH_TIMEOUT_MS: millis.default(2000),
  /** …unless its checks stay unanswered this long: then it accepts connections but is stuck. */
  HEALTH_STALLED_AFTER_MS: millis.default(10_000),
  HEALTH_PATH: z.string().startsWith("/").default("/health"),
  /** Checks answering non-2xx in a row that take an instance out of rotation (a refused connection does at once). */
  UNHEALTHY_THRESHOLD: z.coerce.number().int().positive().default(2),
  /** Responses in a row that are 5xx, not counting a shed 503 with Retry-After, that take an instance out. */
  CONSECUTIVE_5XX: z.coerce.number().int().positive().default(5),
  /**
   * How long an order-service's report that it would refuse new orders (its saga backlog at its bound,
   * on every answer) is believed: meanwhile POST /orders is refused here with 503 + Retry-After, without a
   * round trip. Past it with no newer answer, one order goes through and brings a fresh report.
   */
  UPSTREAM_HEADROOM_TTL_MS: millis.default(250),
  MAX_BODY_BYTES: z.coerce
    .number()
    .int()
    .positive()
    .default(64 * 1024),
  /**
   * The largest answer read from a service (each is read whole, to compose or check it): past it, a 502.
   * Far above the largest one the API makes, a page of 1,000 orders (about 170 KB).
   */
  UPSTREAM_MAX_RESPONSE_BYTES: z.coerce
    .number()
    .int()
    .positive()
    .default(4 * 1024 * 1024),
  /** Connections kept to each upstream instance for writes, and as many for reads: at least the lanes' bounds. */
  UPSTREAM_CONNECTIONS: z.coerce.number().int().positive().default(64),
  /** Connections kept to each upstream instance for requests held open by `Prefer: wait`, apart from the rest. */
  UPSTREAM_HELD_CONNECTIONS: z.coerce.number().int().positive().default(1024),
  INSTANCE_ID: z.string().min(1).default(hostname()),
  /**
   * The script of the reference page at /docs (Scalar's standalone bundle): a pinned version on the
   * jsDelivr CDN (pinned, so the page never changes under a deployed gateway), or a copy served from
   * your own origin where browsers cannot reach the CDN.
   */
  DOCS_SCRIPT_URL: z
    .url({ protocol: /^https?$/ })
    .or(z.string().startsWith("/"))
    .default("https://cdn.jsdelivr.net/npm/@scalar/api-reference@1.76.0/dist/browser/standalone.js"),
  // Per upstream: /users and /orders have lanes of their own, so one's flood cannot starve the other.
  // A lane's bound is the most it admits; adaptive, it moves below that with its upstream's latency.
  // After a start, as in the services: queued requests may wait up to 1 s for 30 s (bench/JOURNAL.md, sixth round).
  ...httpEnvVars(GATEWAY_HTTP_DEFAULTS),
  /** The lanes' bounds follow their upstream's latency (GradientLimit); off, they stay at their maximum. */
  ADMISSION_ADAPTIVE: z.stringbool().default(true),
  /** The least an adaptive lane admits at once, whatever the latency: what a service itself admits (8 + 16 queued). */
  ADMISSION_MIN_IN_FLIGHT: z.coerce.number().int().positive().default(24),
  /** Upstream latency up to this multiple of its long average is no sign of queueing. */
  ADMISSION_LATENCY_TOLERANCE: z.coerce.number().min(1).default(2),
  /** The responses that long average is taken over (an exponential average). */
  ADMISSION_LATENCY_BASELINE_SAMPLES: z.coerce.number().int().min(1).default(600),
  LOG_LEVEL: z.enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"]).default("info"),
});

/**
 * The gateway's settings, from its environment variables. The order-service's instances are
 * ORDER_SERVICE_URLS, or ORDER_SERVICE_URL, its one-instance alias; both at once are refused rather than
 * merged: a deployment that moved to the list and left the old variable behind would otherwise send orders
 * to an instance it meant to drop.
 */
export const Env = Variables.transform(({ ORDER_SERVICE_URLS, ORDER_SERVICE_URL, ...env }, ctx) => {
  const urls = ORDER_SERVICE_URLS ?? (ORDER_SERVICE_URL === undefined ? undefined : [ORDER_SERVICE_URL]);
  const problem =
    ORDER_SERVICE_URLS && ORDER_SERVICE_URL
      ? "give ORDER_SERVICE_URLS or ORDER_SERVICE_URL (its one-instance alias), not both"
      : !urls
        ? "required: the order-service instances, comma-separated (or ORDER_SERVICE_URL for one)"
        : undefined;
  if (problem || !urls) {
    ctx.addIssue({ code: "custom", path: ["ORDER_SERVICE_URLS"], message: problem, input: undefined });
    return z.NEVER;
  }
  return { ...env, ORDER_SERVICE_URLS: urls };
});
export type Env = z.infer<typeof Env>;

/**
 * How the gateway verifies tokens and what it sends to the services, from its environment. Refuses a
 * production configuration without secrets; in development mode, says what is insecure.
 */
export function resolveSecrets(env: Env): {
  verifier: { secret: string; jwksUrl?: undefined } | { jwksUrl: string; secret?: undefined };
  internalSecret: string | undefined;
  warnings: string[];
} {
  if (env.AUTH_SECRET !== undefined && env.AUTH_JWKS_URL !== undefined) {
    throw new Error("invalid environment: AUTH_SECRET and AUTH_JWKS_URL: give one, not both");
  }
  const missing = [
    env.AUTH_SECRET === undefined && env.AUTH_JWKS_URL === undefined ? "AUTH_SECRET or AUTH_JWKS_URL" : "",
    env.INTERNAL_SECRET === undefined ? "INTERNAL_SECRET" : "",
  ].filter(Boolean);
  if (missing.length > 0 && !env.AUTH_DEV_MODE) {
    throw new Error(
      `invalid environment: ${missing.join(", ")}: required; set AUTH_DEV_MODE=true only for a local development run`,
    );
  }
  const warnings: string[] = [];
  if (env.AUTH_SECRET === undefined && env.AUTH_JWKS_URL === undefined)
    warnings.push("AUTH_DEV_MODE: tokens are verified with the public development key; anyone can mint one");
  if (env.INTERNAL_SECRET === undefined)
    warnings.push("AUTH_DEV_MODE: no INTERNAL_SECRET; services that require one will refuse the gateway");
  const verifier = env.AUTH_JWKS_URL
    ? { jwksUrl: env.AUTH_JWKS_URL }
    : { secret: env.AUTH_SECRET ?? DEV_AUTH_SECRET };
  return { verifier, internalSecret: env.INTERNAL_SECRET, warnings };
}

/**
 * Parses the gateway's environment once; a bad or missing variable fails start-up with its name, and an
 * empty one is unset (`parseEnv`).
 */
export function parseGatewayEnv(source: Record<string, string | undefined>): Env {
  return parseEnv(Env, source);
}
