import type { Context } from "hono";

/** Who sent a request, as its verified token says. */
export type Principal = {
  /** The token's `sub`: a user id (lower case), or an admin's id. */
  subject: string;
  admin: boolean;
};

// Keyed by the request itself: the principal lives exactly as long as the request, and the shared
// base app's context type needs no gateway-only variable.
const principals = new WeakMap<Request, Principal>();

export function setPrincipal(c: Context, principal: Principal): void {
  principals.set(c.req.raw, principal);
}

/** The request's principal, or undefined before (or without) authentication. */
export function principalOf(c: Context): Principal | undefined {
  return principals.get(c.req.raw);
}
