import { type AppEnv, preferredWait, requestBody } from "@saga/http";
import { markHeld } from "@saga/observability";
import type { Hono } from "hono";
import { clientSignal, passThrough, upstreamHeaders } from "../forward.ts";
import type { Upstream } from "../upstream.ts";

export type ProxyRoutesDeps = {
  /** `/users`: the prefix itself and everything under it go to the upstream. */
  prefix: string;
  upstream: Upstream;
  timeoutMs: number;
  /** Requests for new work the upstream bounds and reports headroom for (`POST /orders`). */
  needsHeadroom?: (method: string, path: string) => boolean;
  /** The paths whose reads the upstream holds for `Prefer: wait=N`; none by default. */
  heldReads?: (path: string) => boolean;
};

/**
 * Forwards `<prefix>` and `<prefix>/*`, any method, to the upstream and answers with what it answers.
 * `<prefix>/:id` is a route of its own only so that the HTTP metrics label it by that template.
 */
export function registerProxyRoutes(
  app: Hono<AppEnv>,
  { prefix, upstream, timeoutMs, needsHeadroom, heldReads }: ProxyRoutesDeps,
) {
  for (const path of [prefix, `${prefix}/:id`, `${prefix}/*`]) {
    app.all(path, async (c) => {
      const method = c.req.method;
      const read = method === "GET" || method === "HEAD";
      // Read whole (the body limit bounds it), so that a failed connect can send it again.
      const body = read ? undefined : await requestBody(c);
      const url = new URL(c.req.url);
      // A read that asks the upstream to hold it (`Prefer: wait=N`) gets N more seconds, over the held
      // requests' connections; only on a path the upstream holds, as the admission counts only those as
      // long polls (any other read is answered at once, and keeps the plain timeout and connections).
      const waitS = read && heldReads?.(c.req.path) ? (preferredWait(c.req.header("prefer")) ?? 0) : 0;
      // It lasts as long as the saga (up to N + the timeout): timed apart from the request latency, as its
      // upstream call is (`send` with `holdMs`).
      if (waitS > 0) markHeld(c);
      const res = await upstream.send(
        {
          // A HEAD is sent as a GET (as nginx's proxy_cache_convert_head does) and answered from it without
          // the body, so that its Content-Length is the GET's (RFC 9110 §9.3.2) and a user's read is
          // checked on its owner whatever the method (auth/authorize.ts). undici also closes a connection
          // after a HEAD; after a GET it keeps it.
          method: method === "HEAD" ? "GET" : method,
          path: url.pathname + url.search,
          headers: upstreamHeaders(c),
          body: body?.length ? body : undefined,
        },
        {
          timeoutMs,
          clientSignal: clientSignal(c),
          holdMs: waitS * 1000,
          needsHeadroom: needsHeadroom?.(method, url.pathname),
        },
      );
      return passThrough(c, res);
    });
  }
}
