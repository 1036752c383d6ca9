import type { Context, MiddlewareHandler } from "hono";

/** The methods a route path (Hono's form, `/orders/:id`) answers. */
export type RouteMethods = { path: string; methods: readonly string[] };

// Compiled once per route path: `methodNotAllowed` matches every request against every route.
const patterns = new Map<string, RegExp>();

/**
 * `/orders/:id` as a pattern over a request path: `:name` is one non-empty segment, `*` the rest. Strict,
 * as Hono's router is: `/orders/42/` is another path, which no route serves (a 404, not a 405).
 */
function pattern(path: string): RegExp {
  let compiled = patterns.get(path);
  if (!compiled) {
    compiled = compile(path);
    patterns.set(path, compiled);
  }
  return compiled;
}

function compile(path: string): RegExp {
  const segments = path.split("/").map((s) => {
    if (s === "*") return ".*";
    if (s.startsWith(":")) return "[^/]+";
    return s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  });
  return new RegExp(`^${segments.join("/")}$`);
}

/**
 * A test of request paths against a route path in Hono's form (`/orders/:id`), matched as the router
 * matches it: for what an app must know of a route before routing, such as which reads it holds.
 */
export function matchesRoute(path: string): (requestPath: string) => boolean {
  const compiled = pattern(path);
  return (requestPath) => compiled.test(requestPath);
}

/**
 * The routes an app has registered by method (`app.routes`), leaving out middleware and `app.all`
 * routes, which answer any method.
 */
export function registeredRoutes(routes: readonly { path: string; method: string }[]): RouteMethods[] {
  const byPath = new Map<string, Set<string>>();
  for (const { path, method } of routes) {
    if (method === "ALL") continue;
    const methods = byPath.get(path) ?? new Set<string>();
    methods.add(method.toUpperCase());
    byPath.set(path, methods);
  }
  return [...byPath].map(([path, methods]) => ({ path, methods: [...methods] }));
}

/**
 * The `Allow` of a request path (RFC 9110 §10.2.1): every method of every route that matches it, HEAD
 * wherever GET is (Hono answers HEAD from the GET route); undefined when no route matches the path.
 */
export function allowedMethods(routes: readonly RouteMethods[], path: string): string[] | undefined {
  const allowed = new Set<string>();
  let known = false;
  for (const route of routes) {
    if (!pattern(route.path).test(path)) continue;
    known = true;
    for (const method of route.methods) allowed.add(method.toUpperCase());
  }
  if (!known) return undefined;
  if (allowed.has("GET")) allowed.add("HEAD");
  return [...allowed].sort();
}

/**
 * A HEAD is answered as its GET but for the body (RFC 9110 §9.3.2), Content-Length included: Hono answers
 * it from the GET route and drops the body after the app, leaving @hono/node-server no length to write.
 * Only a HEAD pays for the measure. An error that names the method names GET for a HEAD (`asGet`), so that
 * its length is its GET's too.
 */
export const headLength: MiddlewareHandler = function headLength(c, next) {
  if (c.req.method !== "HEAD") return next();
  return next().then(async () => {
    if (!c.res.body || c.res.headers.has("content-length")) return;
    c.res.headers.set("content-length", String((await c.res.clone().arrayBuffer()).byteLength));
  });
};

/** The method a request is answered as: a HEAD as its GET (see `headLength`). */
export const asGet = (method: string): string => (method === "HEAD" ? "GET" : method);

/** The 405 of a known path asked with a method it does not answer: `Allow` and a JSON error. */
export function methodNotAllowedResponse(c: Context, allowed: readonly string[]): Response {
  return c.json(
    {
      error: `${asGet(c.req.method)} is not allowed on ${c.req.path}; allowed: ${allowed.join(", ")}`,
      requestId: c.get("requestId"),
    },
    405,
    { Allow: allowed.join(", ") },
  );
}

/**
 * Answers 405 with `Allow` to a request whose path a route serves but not with its method, before
 * anything else looks at it (authentication, a proxy that would forward any method). For an app that
 * registers its routes by method, `createBaseApp` does the same from the app's own routes.
 */
export function methodNotAllowed(routes: readonly RouteMethods[]): MiddlewareHandler {
  return async function methodNotAllowed(c, next) {
    const allowed = allowedMethods(routes, c.req.path);
    if (allowed && !allowed.includes(c.req.method)) return methodNotAllowedResponse(c, allowed);
    return next();
  };
}
