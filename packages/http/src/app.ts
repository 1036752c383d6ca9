import { randomUUID } from "node:crypto";
import type { IncomingMessage, ServerResponse } from "node:http";
import { INTERNAL_CREDENTIAL_HEADER, REQUEST_ID_HEADER } from "@saga/contracts";
import { httpMetrics, type Logger, type Metrics, metricsHandler } from "@saga/observability";
import { Hono, type MiddlewareHandler } from "hono";
import { HTTPException } from "hono/http-exception";
import {
  type Admission,
  type AdmissionOptions,
  admission,
  type LaneRequest,
  OVERLOADED_MESSAGE,
  SHED_HEADER,
} from "./admission.ts";
import { bodyLimit } from "./body-limit.ts";
import { AppError } from "./errors.ts";
import { carriesCredential, internalCredential } from "./internal-credential.ts";
import { allowedMethods, methodNotAllowedResponse, registeredRoutes } from "./methods.ts";

export type AppEnv = { Variables: { requestId: string } };

export type BaseAppOptions = {
  logger: Logger;
  metrics: Metrics;
  /** Largest request body accepted, in bytes. */
  maxBodyBytes?: number;
  /** Admission control (`httpSettings(env).admission`); without it every request is admitted. */
  admission?: Omit<AdmissionOptions, "metrics">;
  /** Resolves when the process can serve: its database and Kafka answer. */
  ready: () => Promise<void>;
  /**
   * Turns a known kind of unexpected failure into an expected one, such as a lost database connection
   * into a 503; undefined leaves it a 500.
   */
  mapError?: (err: Error) => AppError | undefined;
  /**
   * The gateway's internal credential: when given, every request but `/health`, `/ready` and `/metrics`
   * must carry it (401 otherwise). A service run without one (development mode) answers anyone.
   */
  internalSecret?: string | undefined;
  /** Serve `/metrics` on this app (default); the gateway serves it on an internal port instead. */
  exposeMetrics?: boolean;
};

/**
 * A Hono app with what every process shares: request ids, the body limit, HTTP metrics, `/health`,
 * `/ready`, `/metrics`, the internal credential when given, and one error handler that answers `{"error": …}` and never leaks internals.
 */
export function createBaseApp({
  logger,
  metrics,
  ready,
  mapError,
  maxBodyBytes = 64 * 1024,
  admission: admissionOptions,
  internalSecret,
  exposeMetrics = true,
}: BaseAppOptions) {
  const app = new Hono<AppEnv>();
  app.use(requestIdMiddleware);
  app.use(httpMetrics({ metrics }));
  if (internalSecret !== undefined) app.use(internalCredential({ secret: internalSecret }));
  if (admissionOptions) {
    const lanes = admission({ ...admissionOptions, metrics });
    // Before the body is read: a shed request costs no more than its head.
    app.use(lanes.middleware);
    refusers.set(app, refuser(lanes, { ...admissionOptions, metrics, internalSecret }));
  }
  // A rejected body up to 16 times the limit (at least 1 MiB) is read and dropped to keep the connection.
  app.use(bodyLimit({ maxBytes: maxBodyBytes, drainBytes: Math.max(maxBodyBytes * 16, 1024 * 1024) }));

  app.get("/health", (c) => c.json({ status: "UP" }));
  app.get("/ready", async (c) => {
    try {
      await ready();
      return c.json({ status: "UP" });
    } catch (err) {
      logger.warn({ err }, "not ready");
      return c.json({ status: "DOWN", error: (err as Error).message }, 503);
    }
  });
  if (exposeMetrics) app.get("/metrics", metricsHandler({ metrics }));

  // A path that a route serves with other methods is a 405 with `Allow`, not a 404. Computed from the
  // routes registered when the first request misses: every route is registered before serving.
  let routes: ReturnType<typeof registeredRoutes> | undefined;
  app.notFound((c) => {
    routes ??= registeredRoutes(app.routes);
    const allowed = allowedMethods(routes, c.req.path);
    if (allowed) return methodNotAllowedResponse(c, allowed);
    return c.json(
      { error: `no route for ${c.req.method} ${c.req.path}`, requestId: c.get("requestId") },
      404,
    );
  });
  app.onError((thrown, c) => {
    const id = c.get("requestId");
    const err = thrown instanceof AppError ? thrown : (mapError?.(thrown) ?? thrown);
    if (err instanceof AppError) {
      if (err !== thrown)
        logger.warn({ err: thrown, requestId: id, method: c.req.method, path: c.req.path }, err.message);
      if (err.retryAfterS !== undefined) c.header("retry-after", String(err.retryAfterS));
      return c.json({ error: err.message, requestId: id }, err.status);
    }
    if (err instanceof HTTPException) return c.json({ error: err.message, requestId: id }, err.status);
    logger.error({ err, requestId: id, method: c.req.method, path: c.req.path }, "unhandled error");
    return c.json({ error: "internal error", requestId: id }, 500);
  });
  return app;
}

/** A client's request id when it is a sane one (as Hono's `requestId` middleware judges it), a new one otherwise. */
const requestIdOf = (given: string | undefined) =>
  given && given.length <= 128 && !/[^\w\-=]/.test(given) ? given : randomUUID();

const requestIdMiddleware: MiddlewareHandler<AppEnv> = async function requestId(c, next) {
  const id = requestIdOf(c.req.header(REQUEST_ID_HEADER));
  c.set("requestId", id);
  c.header(REQUEST_ID_HEADER, id);
  await next();
};

type Refuser = (req: IncomingMessage, res: ServerResponse) => boolean;

/** The server-side refusal of each app made by `createBaseApp` with admission control (see `refuserOf`). */
const refusers = new WeakMap<Hono<any>, Refuser>();

/**
 * What the server answers before the app sees a request: a request that its admission would refuse at
 * once (its lane and its lane's queue full) gets the app's own 503 (`Retry-After`, the JSON body, the
 * request id, `x-shed` between the services and the gateway, the HTTP metrics), written straight to Node's
 * response. Under overload most requests end there: through the app (its Request, Context, Response and
 * Headers objects) each cost the gateway 117–142 µs of CPU, answered here 50–55 (bench/README.md, "What
 * changed"). Undefined: the app refuses nothing itself (no admission control).
 */
export const refuserOf = (app: Hono<any>): Refuser | undefined => refusers.get(app);

function refuser(
  lanes: Admission,
  opts: Pick<AdmissionOptions, "retryAfterS" | "markShed" | "metrics"> & {
    internalSecret: string | undefined;
  },
): Refuser {
  const { metrics, retryAfterS, markShed, internalSecret } = opts;
  const carries = internalSecret === undefined ? undefined : carriesCredential(internalSecret);
  return (req, res) => {
    const url = req.url ?? "/";
    const query = url.indexOf("?");
    const header = (name: string) => {
      const value = req.headers[name];
      return Array.isArray(value) ? value.join(", ") : value;
    };
    const view: LaneRequest = {
      method: req.method ?? "GET",
      path: query === -1 ? url : url.slice(0, query),
      header,
    };
    const lane = lanes.fullLane(view);
    if (lane === undefined) return false;
    // Without the gateway's credential a service answers 401, whatever its load: the app decides.
    if (carries && !carries(header(INTERNAL_CREDENTIAL_HEADER))) return false;
    lanes.shedAtOnce(lane);
    const id = requestIdOf(header(REQUEST_ID_HEADER));
    const body = JSON.stringify({ error: OVERLOADED_MESSAGE, requestId: id });
    res.writeHead(503, {
      "content-type": "application/json",
      "content-length": Buffer.byteLength(body),
      "retry-after": String(retryAfterS),
      [REQUEST_ID_HEADER]: id,
      ...(markShed && { [SHED_HEADER]: "admission" }),
    });
    res.end(body);
    // As the app labels a refusal by its admission, which no route has matched yet.
    const labels = { method: view.method, route: "unmatched", status: "503" };
    metrics.httpDuration.observe(labels, 0);
    metrics.httpRequests.inc(labels);
    return true;
  };
}
