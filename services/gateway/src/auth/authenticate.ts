import type { Context, MiddlewareHandler } from "hono";
import {
  createRemoteJWKSet,
  errors,
  type JWTPayload,
  type JWTVerifyGetKey,
  type JWTVerifyOptions,
  jwtVerify,
} from "jose";
import type { AuthFailure, AuthMetrics } from "./metrics.ts";
import { type Principal, setPrincipal } from "./principal.ts";
import { ADMIN_ROLE } from "./tokens.ts";

export type VerifierOptions = {
  /** An HS256 shared secret (AUTH_SECRET, or the development key): only HS256 is accepted then. */
  secret?: string | undefined;
  /** An identity provider's keys (AUTH_JWKS_URL): only `algorithms` (asymmetric) are accepted then. */
  jwksUrl?: string | undefined;
  algorithms: readonly string[];
  issuer: string;
  audience: string;
  clockSkewSeconds: number;
  /** Verified tokens kept until they expire, so that a client's next request skips the signature; 0 keeps none. */
  maxCachedTokens?: number;
};

/** A token that is not good: the client's fault, a 401 that says why. */
class InvalidTokenError extends Error {
  override readonly name = "InvalidTokenError";
  readonly reason: AuthFailure;
  constructor(reason: AuthFailure, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.reason = reason;
  }
}

/** The keys of the identity provider could not be had: the gateway's fault, a 503 with Retry-After. */
class KeysUnavailableError extends Error {
  override readonly name = "KeysUnavailableError";
}

// A subject travels in a header to the services and keys their idempotency records.
const SUBJECT = /^[\x21-\x7e]{1,200}$/;

/**
 * Verifies a bearer token with jose: signature, `exp` (required) and `nbf` within the clock skew,
 * `iss`, `aud`, and an algorithm from a pinned list, so that `alg: none` and algorithm confusion (an
 * HS256 token signed with a public key) are refused whatever the token's header says.
 */
export function createTokenVerifier(opts: VerifierOptions): (token: string) => Promise<Principal> {
  if ((opts.secret === undefined) === (opts.jwksUrl === undefined)) {
    throw new Error("createTokenVerifier: give exactly one of secret and jwksUrl");
  }
  const checks: JWTVerifyOptions = {
    issuer: opts.issuer,
    audience: opts.audience,
    clockTolerance: opts.clockSkewSeconds,
    requiredClaims: ["sub", "exp"],
  };
  const verify: (token: string) => Promise<JWTPayload> = opts.jwksUrl
    ? (() => {
        const keys = keysOrUnavailable(createRemoteJWKSet(new URL(opts.jwksUrl)));
        const options = { ...checks, algorithms: [...opts.algorithms] };
        return async (token) => (await jwtVerify(token, keys, options)).payload;
      })()
    : (() => {
        // Imported once, not on every verification.
        const key = crypto.subtle.importKey(
          "raw",
          new TextEncoder().encode(opts.secret),
          { name: "HMAC", hash: "SHA-256" },
          false,
          ["verify"],
        );
        const options = { ...checks, algorithms: ["HS256"] };
        return async (token) => (await jwtVerify(token, await key, options)).payload;
      })();

  // Tokens already verified, until they expire. A client sends the same token with every request for its
  // lifetime, and checking its signature was a tenth of the gateway's CPU (WebCrypto's HMAC job, in a
  // profile of a quick bench run; 43–49 µs a request, 0.4 µs from here): the same string verifies the same
  // way, so only `exp` needs checking again. Failures are not kept. Bounded: past `maxCachedTokens` the
  // oldest entry goes.
  const verified = new Map<string, { principal: Principal; expiresAtMs: number }>();
  const maxCachedTokens = opts.maxCachedTokens ?? 10_000;

  return async (token) => {
    const cached = verified.get(token);
    if (cached) {
      if (Date.now() < cached.expiresAtMs) return cached.principal;
      verified.delete(token);
    }
    let payload: JWTPayload;
    try {
      payload = await verify(token);
    } catch (err) {
      throw classify(err);
    }
    const subject = payload.sub ?? "";
    if (!SUBJECT.test(subject)) throw new InvalidTokenError("bad_claims", "the token's subject is not valid");
    const principal = { subject, admin: payload.role === ADMIN_ROLE };
    // `exp` is required, so jose has checked it is there; it accepts it up to the clock skew late.
    const expiresAtMs = ((payload.exp ?? 0) + opts.clockSkewSeconds) * 1000;
    if (maxCachedTokens > 0) {
      if (verified.size >= maxCachedTokens) verified.delete(verified.keys().next().value as string);
      verified.set(token, { principal, expiresAtMs });
    }
    return principal;
  };
}

/**
 * The key set's getter, failing with `KeysUnavailableError` whenever the keys themselves could not be had.
 * jose throws a plain JOSEError for an endpoint that answers anything but 200 (a redirect too: it asks with
 * `redirect: "manual"`) or a body that is not JSON, the same class as a malformed token's; told apart
 * here, not by its message. Only finding no key, or several, for the token's header is the token's doing
 * (its algorithm has been checked against the pinned list before the keys are asked for).
 */
function keysOrUnavailable(getKey: ReturnType<typeof createRemoteJWKSet>): JWTVerifyGetKey {
  return async (header, token) => {
    try {
      return await getKey(header, token);
    } catch (err) {
      if (err instanceof errors.JWKSNoMatchingKey || err instanceof errors.JWKSMultipleMatchingKeys)
        throw err;
      throw new KeysUnavailableError("the token's keys could not be fetched", { cause: err });
    }
  };
}

/** A jose error is the token's fault (401); anything else, such as an unreachable JWKS URL, is ours. */
function classify(err: unknown): Error {
  if (err instanceof KeysUnavailableError) return err;
  if (err instanceof errors.JWTExpired)
    return new InvalidTokenError("expired", "the token has expired", { cause: err });
  if (err instanceof errors.JWTClaimValidationFailed)
    return new InvalidTokenError("bad_claims", `the token's ${err.claim} claim is not accepted`, {
      cause: err,
    });
  if (err instanceof errors.JWSSignatureVerificationFailed || err instanceof errors.JWKSNoMatchingKey)
    return new InvalidTokenError("bad_signature", "the token's signature is not valid", { cause: err });
  if (err instanceof errors.JOSEAlgNotAllowed || err instanceof errors.JOSENotSupported)
    return new InvalidTokenError("bad_algorithm", "the token's algorithm is not accepted", { cause: err });
  if (err instanceof errors.JOSEError)
    return new InvalidTokenError("malformed_token", "the token is malformed", { cause: err });
  return err instanceof Error ? err : new Error(String(err));
}

export type AuthenticateOptions = {
  verify: (token: string) => Promise<Principal>;
  metrics: AuthMetrics;
  /** Names the protection space in `WWW-Authenticate`. */
  realm?: string;
  onUnavailable?: (err: Error) => void;
};

/**
 * Lets a request on only with a valid `Authorization: Bearer <token>`; its principal is then
 * `principalOf(c)`. Otherwise a 401 JSON error with an RFC 6750 `WWW-Authenticate` challenge, or a 503
 * with `Retry-After` when the keys cannot be fetched.
 */
export function authenticate({
  verify,
  metrics,
  realm = "outbox-saga",
  onUnavailable,
}: AuthenticateOptions): MiddlewareHandler {
  const refuse = (c: Context, reason: AuthFailure, message: string, challengeError?: string) => {
    metrics.authFailures.inc({ reason });
    const challenge = challengeError
      ? `Bearer realm="${realm}", error="${challengeError}", error_description="${message}"`
      : `Bearer realm="${realm}"`;
    return c.json({ error: message, requestId: c.get("requestId") }, 401, { "WWW-Authenticate": challenge });
  };

  return async function authenticate(c, next) {
    const header = c.req.header("authorization");
    if (header === undefined || header.trim() === "") {
      return refuse(c, "missing_token", "a bearer token is required");
    }
    // RFC 6750 section 2.1: the b64token syntax; anything else never reaches the verifier.
    const match = /^Bearer +([A-Za-z0-9\-._~+/]+=*)$/i.exec(header.trim());
    if (!match?.[1]) {
      return refuse(c, "malformed_header", "Authorization must be Bearer <token>", "invalid_token");
    }
    try {
      setPrincipal(c, await verify(match[1]));
    } catch (err) {
      if (err instanceof InvalidTokenError) return refuse(c, err.reason, err.message, "invalid_token");
      metrics.authFailures.inc({ reason: "keys_unavailable" });
      onUnavailable?.(err as Error);
      return c.json(
        {
          error: "the token cannot be verified now: its keys are unavailable",
          requestId: c.get("requestId"),
        },
        503,
        { "Retry-After": "5" },
      );
    }
    await next();
  };
}
