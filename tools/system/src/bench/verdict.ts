import type { InvariantResult } from "../chaos/checker.ts";

/** The invariants a money check found broken, each with its first counter-example; none when it passed. */
export const brokenInvariants = (results: InvariantResult[]): string[] =>
  results.filter((r) => !r.pass).map((r) => `${r.name}: ${r.counterExamples[0] ?? ""}`);

/** The last line of a section of the report. */
export const verdictLine = (broken: string[]): string =>
  broken.length === 0
    ? "Every saga reached its final state and the money adds up."
    : `FAILED: ${broken.join("; ")}`;

/**
 * The run's exit code from every money check it made (after the measured phases, after the overload
 * phases): 1 when any of them found an invariant broken.
 */
export const exitCodeFor = (...checks: string[][]): number => (checks.some((b) => b.length > 0) ? 1 : 0);
