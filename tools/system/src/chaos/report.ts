import type { InvariantResult, TimeoutCancel } from "./checker.ts";
import type { FaultKind } from "./schedule.ts";

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
  /** Order-service instances behind the gateway. */
  orderServices: number;
  /** Faults done, by kind and target (a victim, or a link such as `user-1→postgres`). */
  faults: Record<FaultKind, Record<string, number>>;
  /** Traffic of the services and relays through the fault proxies. */
  proxy: { connections: number; resets: number; megabytes: number };
  outcomes: Record<string, number>;
  load: Record<string, number>;
  /** When the load stopped offering orders, from its start: the run's duration. */
  loadStoppedS: number;
  /** When the last fault of the schedule ended, from the load's start: past its stop, faults went on without new orders. */
  faultsEndedS: number;
  /** Every order canceled at its deadline, with its credit reply, if the order-service recorded one. */
  timeoutCancels: TimeoutCancel[];
  duplicateCopies: number;
  /** Processes that exited by themselves once ready (crashes), with their code and time up: a failure. */
  unplannedExits: string[];
  maxRelayLagS: number;
  timeToQuietS: number | null;
  invariants: InvariantResult[];
};

export function formatReport(r: ChaosReport): string {
  const invariantRows = r.invariants.map((i) => [
    i.skipped ? "SKIP" : i.pass ? "PASS" : "FAIL",
    i.name,
    i.checked,
  ]);
  const examples = r.invariants
    .filter((i) => !i.pass)
    .map((i) => `${i.name}:\n${i.counterExamples.map((e) => `  - ${e}`).join("\n")}`)
    .join("\n");
  return [
    `## Chaos run: seed ${r.seed}, ${r.durationS} s of load at ${r.rate} orders/s${r.orderServices === 1 ? "" : `, ${r.orderServices} order-service instances`}`,
    "",
    faultTable(r.faults, ["kill", "freeze"], "victim"),
    "",
    faultTable(r.faults, ["blackhole", "latency", "reset"], "link"),
    "",
    table(["orders", "count"], Object.entries(r.outcomes)),
    "",
    table(
      ["load and recovery", "value"],
      [
        ["load offered (s)", r.loadStoppedS.toFixed(0)],
        ["last fault ended (s from the load's start)", r.faultsEndedS.toFixed(0)],
        ...Object.entries(r.load),
        ["connections through the fault proxies", r.proxy.connections],
        ["of them reset by a fault", r.proxy.resets],
        ["MB through the fault proxies", r.proxy.megabytes.toFixed(1)],
        ["duplicate copies on Kafka (absorbed by the inboxes)", r.duplicateCopies],
        ["processes that exited by themselves (the run did not stop them)", r.unplannedExits.length],
        ["highest relay lag (s)", r.maxRelayLagS.toFixed(2)],
        ["time to quiet (s)", r.timeToQuietS === null ? "never" : r.timeToQuietS.toFixed(1)],
      ],
    ),
    "",
    ...(r.unplannedExits.length > 0
      ? [`Exits the run did not cause: ${r.unplannedExits.join("; ")}.`, ""]
      : []),
    ...timeoutTable(r.timeoutCancels),
    table(["result", "invariant", "checked"], invariantRows),
    ...(examples ? ["", "Counter-examples:", examples] : []),
  ].join("\n");
}

/** Targets down, kinds across, with a total row. */
function faultTable(faults: ChaosReport["faults"], kinds: FaultKind[], what: string): string {
  const targets = [...new Set(kinds.flatMap((k) => Object.keys(faults[k])))].sort();
  const total = (k: FaultKind) => Object.values(faults[k]).reduce((a, b) => a + b, 0);
  return table(
    [what, ...kinds],
    [...targets.map((t) => [t, ...kinds.map((k) => faults[k][t] ?? 0)]), ["all", ...kinds.map(total)]],
  );
}

const TIMEOUTS_LISTED = 20;

/**
 * The orders canceled at their deadline: each is a saga that stopped (a lost or stuck event), or one that a
 * fault held past the deadline; their replies say which, and the checker fails one answered long before.
 */
function timeoutTable(cancels: readonly TimeoutCancel[]): string[] {
  if (cancels.length === 0) return ["No order was canceled at its deadline (TIMEOUT).", ""];
  const rows = cancels
    .slice(0, TIMEOUTS_LISTED)
    .map((c) => [
      c.orderId,
      c.sagaS.toFixed(1),
      c.reply
        ? `${c.reply.topic}, recorded ${Math.abs(c.reply.processedS).toFixed(1)} s ${c.reply.processedS < 0 ? "before" : "after"} the cancel`
        : "none in the inbox",
    ]);
  const more = cancels.length - rows.length;
  return [
    `Canceled at the deadline (TIMEOUT): ${cancels.length}`,
    "",
    table(["order", "saga (s)", "credit reply"], rows),
    ...(more > 0 ? [`… and ${more} more (in the JSON report)`] : []),
    "",
  ];
}
