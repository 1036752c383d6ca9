import { SignJWT } from "jose";

/** The `iss` and `aud` the gateway expects unless AUTH_ISSUER and AUTH_AUDIENCE say otherwise. */
export const DEFAULT_ISSUER = "outbox-saga";
export const DEFAULT_AUDIENCE = "outbox-saga-api";

/**
 * The public development key: with AUTH_DEV_MODE=true and no AUTH_SECRET or AUTH_JWKS_URL, the gateway
 * verifies tokens with it, so that `npm start` and `npm run token` work with no set-up. Anyone can
 * read it here and mint any token with it: it must never verify tokens in production.
 */
export const DEV_AUTH_SECRET = "outbox-saga development key: public, never use it in production";

export const ADMIN_ROLE = "admin";

export type MintOptions = {
  /** The HS256 secret the gateway verifies with (AUTH_SECRET, or the development key). */
  secret: string;
  /** `sub`: a user's id, or any id for an admin. */
  subject: string;
  role?: typeof ADMIN_ROLE | undefined;
  issuer?: string;
  audience?: string;
  /** Lifetime; default one hour. */
  ttlSeconds?: number;
};

/**
 * A signed HS256 token the gateway accepts: for local use (`npm run token`), tests, the chaos run and
 * the benchmark. Production tokens come from an identity provider (AUTH_JWKS_URL).
 */
export function mintToken({
  secret,
  subject,
  role,
  issuer = DEFAULT_ISSUER,
  audience = DEFAULT_AUDIENCE,
  ttlSeconds = 3600,
}: MintOptions): Promise<string> {
  return new SignJWT(role ? { role } : {})
    .setProtectedHeader({ alg: "HS256", typ: "JWT" })
    .setSubject(subject)
    .setIssuer(issuer)
    .setAudience(audience)
    .setIssuedAt()
    .setExpirationTime(Math.floor(Date.now() / 1000) + ttlSeconds)
    .sign(new TextEncoder().encode(secret));
}
