import { randomBytes } from "node:crypto";
import { INTERNAL_CREDENTIAL_HEADER } from "@saga/contracts";
import { headLength, httpSettings } from "@saga/http";
import { createLogger, createMetrics, type Logger, metricsHandler } from "@saga/observability";
import { Hono } from "hono";
import { createApp } from "./app.ts";
import { createTokenVerifier } from "./auth/authenticate.ts";
import { createAuthMetrics } from "./auth/metrics.ts";
import { mintToken } from "./auth/tokens.ts";
import { type Env, resolveSecrets } from "./env.ts";
import { createGatewayMetrics } from "./metrics.ts";
import { createUpstream } from "./upstream.ts";

export { DEV_AUTH_SECRET, mintToken } from "./auth/tokens.ts";
export { type Env, GATEWAY_HTTP_DEFAULTS, parseGatewayEnv } from "./env.ts";

export type GatewayOptions = {
  /** Where it logs; a JSON logger on stdout at `LOG_LEVEL` by default (tests read its lines). */
  logger?: Logger;
};

/**
 * The gateway's parts, wired from its environment: the app, the internal app that serves `/metrics`,
 * and the upstreams whose health checks `start()` begins and `stop()` ends. Throws without its
 * secrets unless AUTH_DEV_MODE is on, and logs what development mode leaves open.
 */
export function createGateway(env: Env, options: GatewayOptions = {}) {
  const logger = options.logger ?? createLogger("gateway", env.LOG_LEVEL);
  const secrets = resolveSecrets(env);
  for (const warning of secrets.warnings) logger.warn(`${warning}; never in production`);
  const metrics = createMetrics("gateway", env.INSTANCE_ID);
  const gatewayMetrics = createGatewayMetrics(metrics.registry);
  const common = {
    connectTimeoutMs: env.CONNECT_TIMEOUT_MS,
    connections: env.UPSTREAM_CONNECTIONS,
    heldConnections: env.UPSTREAM_HELD_CONNECTIONS,
    healthPath: env.HEALTH_PATH,
    healthIntervalMs: env.HEALTH_INTERVAL_MS,
    healthNoTrafficIntervalMs: env.HEALTH_NO_TRAFFIC_INTERVAL_MS,
    healthTimeoutMs: env.HEALTH_TIMEOUT_MS,
    stalledAfterMs: env.HEALTH_STALLED_AFTER_MS,
    unhealthyThreshold: env.UNHEALTHY_THRESHOLD,
    consecutive5xx: env.CONSECUTIVE_5XX,
    headroomTtlMs: env.UPSTREAM_HEADROOM_TTL_MS,
    retryAfterS: env.RETRY_AFTER_S,
    maxResponseBytes: env.UPSTREAM_MAX_RESPONSE_BYTES,
    metrics: gatewayMetrics,
    logger,
    headers: (secrets.internalSecret
      ? { [INTERNAL_CREDENTIAL_HEADER]: secrets.internalSecret }
      : {}) as Record<string, string>,
  };
  const verify = createTokenVerifier({
    ...secrets.verifier,
    algorithms: env.AUTH_ALGORITHMS,
    issuer: env.AUTH_ISSUER,
    audience: env.AUTH_AUDIENCE,
    clockSkewSeconds: env.AUTH_CLOCK_SKEW_S,
  });
  const users = createUpstream({ name: "user-service", origins: env.USER_SERVICE_URLS, ...common });
  const orders = createUpstream({ name: "order-service", origins: env.ORDER_SERVICE_URLS, ...common });
  const app = createApp({
    logger,
    metrics,
    users,
    orders,
    timeoutMs: env.UPSTREAM_TIMEOUT_MS,
    maxBodyBytes: env.MAX_BODY_BYTES,
    admission: {
      ...httpSettings(env).admission,
      ...(env.ADMISSION_ADAPTIVE && {
        adaptive: {
          minLimit: env.ADMISSION_MIN_IN_FLIGHT,
          tolerance: env.ADMISSION_LATENCY_TOLERANCE,
          baselineSamples: env.ADMISSION_LATENCY_BASELINE_SAMPLES,
        },
      }),
    },
    docsScriptUrl: env.DOCS_SCRIPT_URL,
    auth: {
      verify,
      metrics: createAuthMetrics(metrics.registry),
      rateLimits: {
        subject: { perSecond: env.RATE_LIMIT_SUBJECT_PER_S, burst: env.RATE_LIMIT_SUBJECT_BURST },
        address: { perSecond: env.RATE_LIMIT_ADDRESS_PER_S, burst: env.RATE_LIMIT_ADDRESS_BURST },
      },
    },
  });
  // Prometheus' scrape, on the internal address only.
  const metricsApp = new Hono().use(headLength).get("/metrics", metricsHandler({ metrics }));
  return {
    app,
    metricsApp,
    logger,
    metrics,
    users,
    orders,
    /** Checks every instance once, then keeps checking in the background. */
    start: async () => {
      // A first verification warms jose and WebCrypto up (milliseconds, once) before any client's.
      const warmUp = mintToken({ secret: randomBytes(32).toString("hex"), subject: "warm-up" });
      await Promise.all([users.start(), orders.start(), warmUp.then(verify).catch(() => {})]);
    },
    /**
     * Shutting down (`serveUntilSignal`'s `draining`): held reads are answered now, and requests still
     * waiting for an upstream when `deadline` aborts are answered then (`Upstream.drain`).
     */
    draining: (deadline: AbortSignal) => {
      users.drain(deadline);
      orders.drain(deadline);
    },
    stop: async () => {
      await Promise.all([users.close(), orders.close()]);
    },
  };
}

export type Gateway = ReturnType<typeof createGateway>;
