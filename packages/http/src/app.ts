import { REQUEST_ID_HEADER, TRACE_RESPONSE_HEADER } from "@saga/contracts";
import {
  httpMetrics,
  type Logger,
  type Metrics,
  metricsHandler,
  nextTraceparent,
  traceIdOf,
} from "@saga/observability";
import { type Context, Hono } from "hono";
import { HTTPException } from "hono/http-exception";
import { requestId } from "hono/request-id";
import { type AdmissionOptions, admission } from "./admission.ts";
import { bodyLimit } from "./body-limit.ts";
import { AppError } from "./errors.ts";
import { internalCredential } from "./internal-credential.ts";
import { allowedMethods, asGet, headLength, methodNotAllowedResponse, registeredRoutes } from "./methods.ts";

export type AppEnv = {
  Variables: {
    requestId: string;
    /** This request's trace context, once `requestTraceparent` has made it. */
    traceparent?: string;
  };
};

/**
 * This request's W3C trace context: the caller's trace (its `traceparent`) continued with a span of this
 * process, or a new trace; made once per request, so that its events, its error lines and the gateway's
 * `traceresponse` all name the same one.
 */
export function requestTraceparent(c: Context<AppEnv>): string {
  let traceparent = c.get("traceparent");
  if (traceparent === undefined) {
    traceparent = nextTraceparent(c.req.header("traceparent"));
    c.set("traceparent", traceparent);
  }
  return traceparent;
}

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
   * into a 503; undefined leaves it a 500. `method` is the request's: a write that failed so may have
   * been applied, which a read never was.
   */
  mapError?: (err: Error, method: string) => AppError | undefined;
  /**
   * The gateway's internal credential: when given, every request but `/health`, `/ready` and `/metrics`
   * must carry it (401 otherwise). A service run without one (development mode) answers anyone.
   */
  internalSecret?: string | undefined;
  /** Serve `/metrics` on this app (default); the gateway serves it on an internal port instead. */
  exposeMetrics?: boolean;
  /**
   * Answer every request with `traceresponse`, naming its trace (`requestTraceparent`): the gateway's, so
   * that a client that sent no `traceparent` learns the trace id of what it caused.
   */
  traceResponse?: boolean;
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
  traceResponse = false,
}: BaseAppOptions) {
  const app = new Hono<AppEnv>();
  app.use(
    requestId({
      headerName: REQUEST_ID_HEADER,
      limitLength: 128,
    }),
  );
  // As the request id: before anything may answer, so that every answer carries it.
  if (traceResponse)
    app.use(async function answerTrace(c, next) {
      c.header(TRACE_RESPONSE_HEADER, requestTraceparent(c));
      await next();
    });
  app.use(httpMetrics({ metrics }));
  // Before the probes and every refusal, so that their HEADs have a length too.
  app.use(headLength);
  if (internalSecret !== undefined) app.use(internalCredential({ secret: internalSecret }));
  // A rejected body up to 16 times the limit (at least 1 MiB) is read and dropped to keep the connection.
  app.use(bodyLimit({ maxBytes: maxBodyBytes, drainBytes: Math.max(maxBodyBytes * 16, 1024 * 1024) }));
  // After the body is read: a request whose body trickles in holds no place while it does (40 clients
  // sending half a body each held every place of a lane until their 408, 30 s later). A body that came
  // with its head, as nearly all do, is read at once, so shedding stays cheap: a head and a small copy.
  if (admissionOptions) app.use(admission({ ...admissionOptions, metrics }));

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
    // Only a method the path does not answer is a 405: an Allow that lists the very method asked would
    // say the router and these patterns disagree, and the path is then as unknown as any other.
    if (allowed && !allowed.includes(c.req.method)) return methodNotAllowedResponse(c, allowed);
    return c.json(
      {
        error: `no route for ${asGet(c.req.method)} ${c.req.path}`,
        requestId: c.get("requestId"),
      },
      404,
    );
  });
  app.onError((thrown, c) => {
    const id = c.get("requestId");
    const err = thrown instanceof AppError ? thrown : (mapError?.(thrown, c.req.method) ?? thrown);
    // The trace the request continued (the 32 hex digits an operator follows into the events and the
    // consumers' lines), whether or not this process made its own span of it yet.
    const traceId = () => traceIdOf(c.get("traceparent") ?? c.req.header("traceparent"));
    if (err instanceof AppError) {
      if (err !== thrown)
        logger.warn(
          { err: thrown, requestId: id, traceId: traceId(), method: c.req.method, path: c.req.path },
          err.message,
        );
      if (err.retryAfterS !== undefined) c.header("retry-after", String(err.retryAfterS));
      return c.json({ error: err.message, requestId: id }, err.status);
    }
    if (err instanceof HTTPException) return c.json({ error: err.message, requestId: id }, err.status);
    logger.error(
      { err, requestId: id, traceId: traceId(), method: c.req.method, path: c.req.path },
      "unhandled error",
    );
    return c.json({ error: "internal error", requestId: id }, 500);
  });
  return app;
}
