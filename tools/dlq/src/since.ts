const UNITS = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 } as const;

/**
 * `--since`: an ISO 8601 instant (`2026-12-01T09:30:00Z`) or a span back from `now` (`90s`, `15m`,
 * `2h`, `7d`). Throws a message naming the accepted forms for anything else.
 */
export function parseSince(text: string, now = new Date()): Date {
  const span = /^(\d+)([smhd])$/.exec(text.trim());
  if (span) return new Date(now.getTime() - Number(span[1]) * UNITS[span[2] as keyof typeof UNITS]);
  // Only full dates: Date.parse takes "1" or "June" too, which an operator did not mean.
  if (/^\d{4}-\d{2}-\d{2}/.test(text)) {
    const at = Date.parse(text);
    if (!Number.isNaN(at)) return new Date(at);
  }
  throw new Error(
    `--since ${JSON.stringify(text)}: give an ISO 8601 time (2026-12-01T09:30:00Z) or a span ago (90s, 15m, 2h, 7d)`,
  );
}
