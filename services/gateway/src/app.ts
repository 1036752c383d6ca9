import { API_ROUTES, honoPath } from "@saga/contracts";
import {
  AppError,
  type BaseAppOptions,
  createBaseApp,
  matchesRoute,
  methodNotAllowed,
  requestLane,
} from "@saga/http";
import type { Logger, Metrics } from "@saga/observability";
import { authenticate } from "./auth/authenticate.ts";
import { authorize } from "./auth/authorize.ts";
import type { AuthMetrics } from "./auth/metrics.ts";
import type { Principal } from "./auth/principal.ts";
import { type BucketSettings, rateLimit } from "./auth/rate-limit.ts";
import { answeredByUpstream, CredentialRefusedError } from "./forward.ts";
import { DOCS_PATHS, registerDocsRoutes } from "./routes/docs.ts";
import { registerProxyRoutes } from "./routes/proxy.ts";
import { registerUserOrdersRoute } from "./routes/user-orders.ts";
import type { Upstream } from "./upstream.ts";

/** The gateway's routes by path and method: the API as its document declares it, and the docs. */
const ROUTES = [
  ...API_ROUTES.map((route) => ({ path: honoPath(route.path), methods: [route.method.toUpperCase()] })),
  ...DOCS_PATHS.map((path) => ({ path, methods: ["GET"] })),
];

/**
 * The reads the order-service holds for `Prefer: wait=N`: an order's. Only these are long polls, in the
 * lanes and over the upstream's held connections; any other read with a Prefer is answered at once.
 */
const HELD_READS = matchesRoute("/orders/:id");

export type AppDeps = {
  logger: Logger;
  metrics: Metrics;
  users: Upstream;
  orders: Upstream;
  /** Per request to an upstream; past it, a 504. */
  timeoutMs: number;
  maxBodyBytes: number;
  admission?: BaseAppOptions["admission"];
  /** Where /docs loads Scalar's script from (DOCS_SCRIPT_URL). */
  docsScriptUrl: string;
  auth: {
    /** Verifies a bearer token (createTokenVerifier). */
    verify: (token: string) => Promise<Principal>;
    metrics: AuthMetrics;
    /** Token buckets of POST /orders and POST /users. */
    rateLimits: { subject: BucketSettings; address: BucketSettings };
  };
};

/** The gateway's HTTP API; no port is opened here, and `/metrics` is not on it (see gateway.ts). */
export function createApp({
  logger,
  metrics,
  users,
  orders,
  timeoutMs,
  maxBodyBytes,
  admission,
  docsScriptUrl,
  auth,
}: AppDeps) {
  const app = createBaseApp({
    logger,
    metrics,
    maxBodyBytes,
    // Lanes per upstream (`orders:write`): a flood of orders cannot starve the users, nor the reverse.
    admission: admission && {
      ...admission,
      laneOf: (c) => {
        // The document and its page are built once and cost nothing: outside any lane, like /health.
        if (DOCS_PATHS.includes(c.req.path)) return undefined;
        const lane = requestLane(c, HELD_READS);
        const upstream = c.req.path.split("/")[1];
        return lane && { kind: lane.kind, key: `${upstream === "orders" ? "orders" : "users"}:${lane.kind}` };
      },
      // The upstream's answers, and the failures of asking it (502, 504); not the gateway's own 4xx (a
      // request without a token, a rate limit), which took none of the upstream's time.
      sampled: (c) => answeredByUpstream(c) || c.res.status >= 500,
    },
    exposeMetrics: false,
    // Every answer names the request's trace: a client that sent no traceparent learns the one it started.
    traceResponse: true,
    // Logged (with the upstream's address) as it becomes a 502: every request fails so until it is fixed.
    mapError: (err) =>
      err instanceof CredentialRefusedError
        ? new AppError("BAD_GATEWAY", "an upstream service refused the gateway's credential", { cause: err })
        : undefined,
    // Ready while every upstream has an instance in rotation: without one, every request would fail. The
    // health checks carry the internal credential, so that a gateway whose INTERNAL_SECRET is not the
    // services' says so here rather than in a 502 to every request.
    ready: async () => {
      const down = [users, orders]
        .filter((u) => u.healthyCount() === 0)
        .map((u) =>
          u.refusesCredential()
            ? `${u.name} refused the gateway's internal credential (INTERNAL_SECRET differs from the services')`
            : `no healthy instance of ${u.name}`,
        );
      if (down.length > 0) throw new Error(down.join("; "));
    },
  });
  // A known path asked with a method it does not answer: 405 with Allow, before a token is asked for
  // (the answer says nothing about any resource) and before the proxy, which forwards any method.
  app.use(methodNotAllowed(ROUTES));
  // Public and cheap: the OpenAPI document and its interactive reference, no token.
  registerDocsRoutes(app, { scriptUrl: docsScriptUrl });
  // A new order while the order-service reports no headroom for one: refused before its token is verified
  // and its body parsed (bodyLimit has read its bytes), as the admission lanes refuse (the answer says
  // nothing of any resource).
  app.on("POST", "/orders", async function refuseWithoutHeadroom(_c, next) {
    const refused = orders.refuseNewWork();
    if (refused) throw refused;
    await next();
  });
  // Every API route: a valid bearer token, then the rate limits of the writes, then who may do what.
  const authenticated = authenticate({
    verify: auth.verify,
    metrics: auth.metrics,
    onUnavailable: (err) => logger.warn({ err }, "token keys unavailable"),
  });
  for (const path of ["/users/*", "/orders/*"]) app.use(path, authenticated);
  for (const path of ["/users", "/orders"])
    app.on("POST", path, rateLimit({ ...auth.rateLimits, metrics: auth.metrics }));
  for (const path of ["/users/*", "/orders/*"]) app.use(path, authorize());

  // Before the /users proxy routes, which would take this path too.
  registerUserOrdersRoute(app, { users, orders, timeoutMs });
  registerProxyRoutes(app, { prefix: "/users", upstream: users, timeoutMs });
  registerProxyRoutes(app, {
    prefix: "/orders",
    upstream: orders,
    timeoutMs,
    heldReads: HELD_READS,
    // A new order: refused here while the order-service reports its saga backlog at its bound.
    needsHeadroom: (method, path) => method === "POST" && path === "/orders",
  });
  return app;
}
