/** The longest `Prefer: wait` honoured, in seconds; a larger value is clamped to it. */
export const MAX_PREFER_WAIT_S = 30;

/**
 * The `wait` preference of a `Prefer` header (RFC 7240 §4.3), in seconds, clamped to
 * `MAX_PREFER_WAIT_S`; undefined when the header asks for no wait or its value is not a
 * non-negative integer (a preference that is not understood is ignored, RFC 7240 §2).
 * https://www.rfc-editor.org/rfc/rfc7240#section-4.3
 */
export function preferredWait(header: string | undefined | null): number | undefined {
  if (!header) return undefined;
  for (const preference of header.split(",")) {
    // `name[=value][; parameter]…`; the value may be a quoted string.
    const [token = ""] = preference.split(";");
    const eq = token.indexOf("=");
    if (eq < 0 || token.slice(0, eq).trim().toLowerCase() !== "wait") continue;
    const value = token
      .slice(eq + 1)
      .trim()
      .replace(/^"(.*)"$/, "$1");
    if (!/^\d+$/.test(value)) return undefined;
    return Math.min(Number(value), MAX_PREFER_WAIT_S);
  }
  return undefined;
}
