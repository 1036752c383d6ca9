import { randomBytes } from "node:crypto";
import { traceparent } from "@saga/contracts";

/**
 * Continues the caller's W3C trace with a new span id, or starts a trace when the header is missing
 * or malformed. https://www.w3.org/TR/trace-context/#traceparent-header
 */
export function nextTraceparent(incoming: string | undefined | null): string {
  const span = randomHex(8);
  if (incoming && traceparent.safeParse(incoming).success) {
    const [version, traceId, , flags] = incoming.split("-");
    return `${version}-${traceId}-${span}-${flags}`;
  }
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
