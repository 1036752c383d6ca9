import { randomBytes } from "node:crypto";
import { traceparent } from "@saga/contracts";

/**
 * Continues the caller's W3C trace with a new span id, or starts a trace when the header is missing
 * or malformed. https://www.w3.org/TR/trace-context/#traceparent-header
 */
export function nextTraceparent(incoming: string | undefined | null): string {
  const span = randomBytes(8).toString("hex");
  if (incoming && traceparent.safeParse(incoming).success) {
    const [version, traceId, , flags] = incoming.split("-");
    return `${version}-${traceId}-${span}-${flags}`;
  }
  return `00-${randomBytes(16).toString("hex")}-${span}-01`;
}
