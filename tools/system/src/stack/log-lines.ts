const COLORS = [36, 33, 35, 32, 34, 96, 93, 95];
const LEVELS: Record<number, string> = {
  10: "TRACE",
  20: "DEBUG",
  30: "INFO",
  40: "WARN",
  50: "ERROR",
  60: "FATAL",
};
const OMIT = new Set(["level", "time", "pid", "hostname", "msg", "service", "name"]);

/**
 * Prints each process's output with a coloured name prefix, turning our JSON log lines into one
 * readable line each (`INFO message key=value …`); anything else passes through as it is.
 */
export function createPrefixedOutput(names: string[], useColor = process.stdout.isTTY ?? false) {
  const width = Math.max(...names.map((n) => n.length), 7);
  const colorOf = new Map(names.map((n, i) => [n, COLORS[i % COLORS.length]]));
  return (name: string, line: string) => {
    const label = name.padEnd(width);
    const prefix = useColor ? `\x1b[${colorOf.get(name) ?? 37}m${label}\x1b[0m |` : `${label} |`;
    process.stdout.write(`${prefix} ${humanize(line)}\n`);
  };
}

function humanize(line: string): string {
  if (!line.startsWith("{")) return line;
  try {
    const entry = JSON.parse(line) as Record<string, unknown>;
    const level = LEVELS[entry.level as number] ?? String(entry.level ?? "");
    const extras = Object.entries(entry)
      .filter(([k]) => !OMIT.has(k))
      .map(([k, v]) => `${k}=${typeof v === "string" ? v : isError(v) ? v.message : JSON.stringify(v)}`);
    return [level, entry.msg, ...extras].filter(Boolean).join(" ");
  } catch {
    return line;
  }
}

// pino serialises errors with their stack; one line per event is enough on a shared console.
function isError(v: unknown): v is { message: string } {
  return typeof v === "object" && v !== null && "message" in v && "stack" in v;
}
