import type { Context, MiddlewareHandler } from "hono";
import type { AuthMetrics } from "./metrics.ts";
import { principalOf } from "./principal.ts";

export type BucketSettings = {
  /** Tokens added per second: the sustained rate. */
  perSecond: number;
  /** Bucket size: the burst allowed after a quiet spell. */
  burst: number;
};

type Bucket = { tokens: number; at: number };

/**
 * Token buckets by key, in memory (one gateway instance's view). Written by hand: it is a few lines of
 * arithmetic, and the libraries at hand either count fixed windows (rate-limiter-flexible's memory
 * limiter) or hold one bucket without keys (limiter). At most `maxKeys` buckets are kept: past it,
 * buckets that have refilled are dropped (they hold nothing a new bucket would not), then the oldest.
 */
function createTokenBuckets(
  { perSecond, burst }: BucketSettings,
  maxKeys = 100_000,
  now = () => performance.now(),
) {
  const buckets = new Map<string, Bucket>();

  function current(key: string, at: number): Bucket {
    const bucket = buckets.get(key);
    if (!bucket) return { tokens: burst, at };
    return { tokens: Math.min(burst, bucket.tokens + ((at - bucket.at) / 1000) * perSecond), at };
  }

  function evict(at: number) {
    for (const [key, bucket] of buckets) {
      if (buckets.size < maxKeys) return;
      if (bucket.tokens + ((at - bucket.at) / 1000) * perSecond >= burst) buckets.delete(key);
    }
    for (const key of buckets.keys()) {
      if (buckets.size < maxKeys) return;
      buckets.delete(key);
    }
  }

  return {
    /** Seconds until `key` has a token again; 0 when it has one now. Takes nothing. */
    wait(key: string): number {
      const { tokens } = current(key, now());
      return tokens >= 1 ? 0 : (1 - tokens) / perSecond;
    },
    /** Takes one token from `key`'s bucket, which must have one (see `wait`). */
    take(key: string): void {
      const at = now();
      const bucket = current(key, at);
      if (!buckets.has(key) && buckets.size >= maxKeys) evict(at);
      buckets.set(key, { tokens: bucket.tokens - 1, at });
    },
    size: () => buckets.size,
  };
}

export type RateLimitOptions = {
  /** Per authenticated subject. */
  subject: BucketSettings;
  /** Per client address (the TCP peer; a proxy in front would need its own header trusted). */
  address: BucketSettings;
  metrics: AuthMetrics;
};

/** The TCP peer's address under @hono/node-server; "unknown" in `app.request()` tests without one. */
function clientAddress(c: Context): string {
  const env = c.env as { incoming?: { socket?: { remoteAddress?: string } } } | undefined;
  return env?.incoming?.socket?.remoteAddress ?? "unknown";
}

/**
 * Rate limits a route per subject and per client address, a token bucket each: a request passes only
 * when both buckets have a token, and then takes one from each. Otherwise a 429 with `Retry-After`
 * (whole seconds until the emptier bucket has a token), counted by route and bucket. Runs after
 * authentication.
 */
export function rateLimit({ subject, address, metrics }: RateLimitOptions): MiddlewareHandler {
  const bySubject = createTokenBuckets(subject);
  const byAddress = createTokenBuckets(address);
  return async function rateLimit(c, next) {
    const subjectKey = principalOf(c)?.subject ?? "";
    const addressKey = clientAddress(c);
    const waits = { subject: bySubject.wait(subjectKey), address: byAddress.wait(addressKey) };
    if (waits.subject > 0 || waits.address > 0) {
      const scope = waits.subject >= waits.address ? "subject" : "address";
      metrics.rateLimited.inc({ route: `${c.req.method} ${c.req.path}`, scope });
      const retryAfter = Math.max(1, Math.ceil(Math.max(waits.subject, waits.address)));
      return c.json(
        { error: `too many requests: retry in ${retryAfter} s`, requestId: c.get("requestId") },
        429,
        { "Retry-After": String(retryAfter) },
      );
    }
    bySubject.take(subjectKey);
    byAddress.take(addressKey);
    await next();
  };
}
