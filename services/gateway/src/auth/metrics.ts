import { Counter, type Registry } from "prom-client";

/** Why a request was refused before it reached a service. A bounded set, so the series stay few. */
export type AuthFailure =
  | "missing_token"
  | "malformed_header"
  | "expired"
  | "bad_claims"
  | "bad_signature"
  | "bad_algorithm"
  | "malformed_token"
  | "keys_unavailable";

/** Authentication failures and rate-limited requests, registered on the gateway's registry. */
export function createAuthMetrics(registry: Registry) {
  const registers = [registry];
  return {
    authFailures: new Counter({
      name: "gateway_auth_failures_total",
      help: "Requests refused because their bearer token was missing or invalid, by reason",
      labelNames: ["reason"] as const,
      registers,
    }),
    rateLimited: new Counter({
      name: "gateway_rate_limited_total",
      help: "Requests answered 429 by the gateway's rate limits, by route and by the bucket that was empty (subject or address)",
      labelNames: ["route", "scope"] as const,
      registers,
    }),
  };
}

export type AuthMetrics = ReturnType<typeof createAuthMetrics>;
