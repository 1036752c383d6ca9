import type { InvariantResult } from "./checker.ts";

/** A markdown table: readable in a terminal, and pasted as it is into a note. */
export function table(headers: string[], rows: (string | number)[][]): string {
  const cells = [headers, ...rows.map((r) => r.map(String))];
  const widths = headers.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? "").length)));
  const line = (r: string[]) => `| ${r.map((c, i) => c.padEnd(widths[i] ?? 0)).join(" | ")} |`;
  return [
    line(headers),
    `|${widths.map((w) => "-".repeat(w + 2)).join("|")}|`,
    ...cells.slice(1).map(line),
  ].join("\n");
}

export type ChaosReport = {
  seed: number;
  durationS: number;
  rate: number;
  kills: Record<string, number>;
  outcomes: Record<string, number>;
  load: Record<string, number>;
  duplicateCopies: number;
  maxRelayLagS: number;
  timeToQuietS: number | null;
  invariants: InvariantResult[];
};

export function formatReport(r: ChaosReport): string {
  const invariantRows = r.invariants.map((i) => [i.pass ? "PASS" : "FAIL", i.name, i.checked]);
  const examples = r.invariants
    .filter((i) => !i.pass)
    .map((i) => `${i.name}:\n${i.counterExamples.map((e) => `  - ${e}`).join("\n")}`)
    .join("\n");
  return [
    `## Chaos run: seed ${r.seed}, ${r.durationS} s of load at ${r.rate} orders/s`,
    "",
    table(["victim", "kills"], Object.entries(r.kills)),
    "",
    table(["orders", "count"], Object.entries(r.outcomes)),
    "",
    table(
      ["load and recovery", "value"],
      [
        ...Object.entries(r.load),
        ["duplicate copies on Kafka (absorbed by the inboxes)", r.duplicateCopies],
        ["highest relay lag (s)", r.maxRelayLagS.toFixed(2)],
        ["time to quiet (s)", r.timeToQuietS === null ? "never" : r.timeToQuietS.toFixed(1)],
      ],
    ),
    "",
    table(["result", "invariant", "checked"], invariantRows),
    ...(examples ? ["", "Counter-examples:", examples] : []),
  ].join("\n");
}
