import { spawn } from "node:child_process";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { repoRoot } from "@saga/tools/infra";
import { ensureSchemathesis } from "@saga/tools/schemathesis";

/** Schemathesis' settings: checks, auth from SAGA_TOKEN, request timeout, stateful steps. */
const SCHEMATHESIS_CONFIG = join(repoRoot, "tools/schemathesis/schemathesis.toml");

/**
 * The environment of a system under the fuzzer: its requests come from one admin on one address, and
 * past the rate limit every chain of links would end in a 429 after its first step.
 */
export const FUZZ_ENV: Record<string, string> = {
  LOG_LEVEL: "warn",
  RATE_LIMIT_SUBJECT_PER_S: "10000",
  RATE_LIMIT_SUBJECT_BURST: "10000",
  RATE_LIMIT_ADDRESS_PER_S: "10000",
  RATE_LIMIT_ADDRESS_BURST: "10000",
};

export type FuzzOptions = {
  /** The OpenAPI document: a URL (the gateway's `/openapi.json`) or a file. */
  schema: string;
  /** Where the API is, when the document's own `servers` do not say. */
  baseUrl: string;
  /** Sent as `Authorization: Bearer …` wherever the document asks for it. */
  token: string;
  seed: number;
  /** Cases per operation and phase: the run's bound. */
  maxExamples: number;
  /** Schemathesis' own output, line by line. */
  output: (line: string) => void;
};

export type FuzzResult = {
  /** `st`'s exit code: 0 when no check failed and no case errored. */
  exitCode: number;
  /** Operations of the document that were tested. */
  operations: number;
  /** Test cases generated and sent, over every phase. */
  cases: number;
  /** Distinct failures found (a check that failed: a 5xx, an undeclared status, a body off its schema…). */
  failures: number;
  /** Cases that could not be run or got no answer (a timeout, a refused connection). */
  errors: number;
  /** Each phase's outcome: `success`, `failure`, `errored` or `skip`. */
  phases: Record<string, string>;
  /** Schemathesis' warnings, `kind: operations` (those schemathesis.toml fails on make the exit code non-zero). */
  warnings: string[];
  /** Links between operations the stateful phase followed, of those the document declares or implies. */
  links: { covered: number; total: number } | undefined;
  /** The command line that replays the run against the same system. */
  command: string;
};

type JsonReport = {
  operations: { tested: number } | null;
  test_cases: { generated: number; unique_failures: number; errored: number };
  errors: { count: number }[];
  phases: Record<string, { status: string }> | null;
  /** Every kind of warning, with the operations it concerns (none, for most). */
  warnings: Record<string, string[]>;
};

/**
 * Runs Schemathesis against a running system: every phase (examples, coverage, fuzzing, and the
 * stateful phase that follows the document's links), every check but those tools/schemathesis/
 * schemathesis.toml turns off, and reads the figures from its event stream.
 */
export async function runSchemathesis(opts: FuzzOptions): Promise<FuzzResult> {
  const st = await ensureSchemathesis(opts.output);
  const reportDir = await mkdtemp(join(tmpdir(), "schemathesis-"));
  const report = join(reportDir, "report.json");
  const args = [
    `--config-file=${SCHEMATHESIS_CONFIG}`,
    "run",
    opts.schema,
    `--url=${opts.baseUrl}`,
    `--seed=${opts.seed}`,
    `--max-examples=${opts.maxExamples}`,
    "--report=json",
    `--report-json-path=${report}`,
  ];
  try {
    let links: FuzzResult["links"];
    const exitCode = await new Promise<number>((resolve, reject) => {
      const child = spawn(st.command, [...st.args, ...args], {
        stdio: ["ignore", "pipe", "pipe"],
        env: { ...process.env, SAGA_TOKEN: opts.token, NO_COLOR: "1", COLUMNS: "120" },
      });
      let buffered = "";
      const onData = (chunk: Buffer) => {
        buffered += chunk.toString("utf8");
        const lines = buffered.split("\n");
        buffered = lines.pop() ?? "";
        for (const line of lines) {
          // The one figure the JSON report leaves out: "API Links: 8 covered / 9 selected / 9 total".
          const covered = /API Links:\s+(\d+) covered \/ \d+ selected \/ (\d+) total/.exec(line);
          if (covered) links = { covered: Number(covered[1]), total: Number(covered[2]) };
          opts.output(line);
        }
      };
      child.stdout.on("data", onData);
      child.stderr.on("data", onData);
      child.once("error", reject);
      child.once("close", (code) => {
        if (buffered) opts.output(buffered);
        resolve(code ?? 1);
      });
    });
    const json = JSON.parse(await readFile(report, "utf8")) as JsonReport;
    return {
      exitCode,
      operations: json.operations?.tested ?? 0,
      cases: json.test_cases.generated,
      failures: json.test_cases.unique_failures,
      errors: json.test_cases.errored + json.errors.reduce((sum, e) => sum + e.count, 0),
      phases: Object.fromEntries(Object.entries(json.phases ?? {}).map(([name, p]) => [name, p.status])),
      warnings: Object.entries(json.warnings)
        .filter(([, labels]) => labels.length > 0)
        .map(([kind, labels]) => `${kind}: ${labels.join(", ")}`),
      links,
      command: `SAGA_TOKEN=… ${["st", ...args.filter((a) => !a.startsWith("--report"))].join(" ")}`,
    };
  } finally {
    await rm(reportDir, { recursive: true, force: true });
  }
}
