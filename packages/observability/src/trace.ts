import { randomBytes } from "node:crypto";

/** What a usable `traceparent` says: its trace id (32 hex digits) and whether the caller samples it. */
export type TraceContext = { traceId: string; sampled: boolean };

// version-traceid-parentid-flags, lower-case hex, neither id all zeros; a later version may add fields.
const TRACEPARENT = /^([0-9a-f]{2})-((?!0{32})[0-9a-f]{32})-(?!0{16})[0-9a-f]{16}-([0-9a-f]{2})(-.*)?$/;

/**
 * A W3C `traceparent` as a receiver may use it, or undefined: well-formed, not of version `ff` (which
 * W3C forbids), with a trace id and a parent id that are not all zeros. A version after `00` is read by
 * its first four fields, as W3C asks of a receiver (what follows them is that version's);
 * https://www.w3.org/TR/trace-context/#versioning-of-traceparent
 */
export function parseTraceparent(value: string | undefined | null): TraceContext | undefined {
  const parts = value ? TRACEPARENT.exec(value) : null;
  if (!parts) return undefined;
  const [, version, traceId = "", flags = "", more] = parts;
  if (version === "ff" || (version === "00" && more !== undefined)) return undefined;
  return { traceId, sampled: (Number.parseInt(flags, 16) & 1) === 1 };
}

/** The trace id (32 hex digits) of a usable `traceparent`, for a log line; undefined otherwise. */
export function traceIdOf(value: string | undefined | null): string | undefined {
  return parseTraceparent(value)?.traceId;
}

/**
 * Continues the caller's W3C trace with a new span id, or starts a (sampled) trace when the header is
 * missing or unusable (`parseTraceparent`). It writes version `00` and of the caller's flags only
 * `sampled`, whatever version and flags it read: the only version and flag this process knows.
 * https://www.w3.org/TR/trace-context/#traceparent-header
 */
export function nextTraceparent(incoming: string | undefined | null): string {
  const span = randomHex(8);
  const caller = parseTraceparent(incoming);
  if (caller) return `00-${caller.traceId}-${span}-${caller.sampled ? "01" : "00"}`;
  return `00-${randomHex(16)}-${span}-01`;
}

// Random bytes drawn from a pool filled 4 KiB at a time, as `crypto.randomUUID` does: one `randomBytes` per
// id was 3% of the gateway's CPU under load (a trace for every request it forwards).
const POOL_BYTES = 4096;
let pool = Buffer.alloc(0);
let used = 0;

function randomHex(bytes: number): string {
  if (used + bytes > pool.length) {
    pool = randomBytes(POOL_BYTES);
    used = 0;
  }
  used += bytes;
  return pool.toString("hex", used - bytes, used);
}
