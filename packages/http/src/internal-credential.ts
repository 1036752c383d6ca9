import { createHash, timingSafeEqual } from "node:crypto";
import { INTERNAL_CREDENTIAL_HEADER, SUBJECT_HEADER } from "@saga/contracts";
import type { Context, MiddlewareHandler } from "hono";

export type InternalCredentialOptions = {
  /** The shared secret the gateway sends in `x-internal-credential`. */
  secret: string;
  /** Paths answered without the credential (but not with a wrong one): the probes and Prometheus' scrape. */
  open?: readonly string[];
};

const digest = (value: string) => createHash("sha256").update(value).digest();

/**
 * Refuses (401) every request that does not carry the gateway's internal credential, so the services'
 * API cannot be reached around the gateway's authentication. Compared in constant time over digests,
 * which also hides the secret's length. The open paths need none, but refuse a wrong one: the gateway's
 * health checks carry its credential, so that a gateway with another INTERNAL_SECRET is not ready.
 */
export function internalCredential({
  secret,
  open = ["/health", "/ready", "/metrics"],
}: InternalCredentialOptions): MiddlewareHandler {
  const expected = digest(secret);
  const openPaths = new Set(open);
  return async function internalCredential(c, next) {
    const given = c.req.header(INTERNAL_CREDENTIAL_HEADER);
    if (given === undefined && openPaths.has(c.req.path)) return next();
    if (given === undefined || !timingSafeEqual(digest(given), expected)) {
      return c.json({ error: "this service answers only the gateway", requestId: c.get("requestId") }, 401);
    }
    return next();
  };
}

/**
 * The subject the gateway authenticated (a user id, or an admin's id), or "" when the request came
 * without one (a process in development mode, an in-process test). Trusted only because the service
 * accepts requests from the gateway alone.
 */
export function callerSubject(c: Context): string {
  return c.req.header(SUBJECT_HEADER) ?? "";
}
