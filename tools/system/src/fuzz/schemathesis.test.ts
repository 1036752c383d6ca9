import { randomInt } from "node:crypto";
import { kafkaBrokers, postgresUrl, uniqueName } from "@saga/tools/test/harness";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { freePorts, type System, startSystem } from "../stack/system.ts";
import { FUZZ_ENV, runSchemathesis } from "./schemathesis.ts";

// Schemathesis against the whole system, started as `npm start` starts it (the bundles of `npm run build`),
// on the test run's PostgreSQL and Kafka.
// Cases per operation and phase: bounds the run (about N s on a quiet machine).
const MAX_EXAMPLES = 25;

let system: System;
const logs: string[] = [];

beforeAll(async () => {
  system = await startSystem({
    ports: await freePorts(),
    external: { postgresUrl: postgresUrl(), kafkaBrokers: kafkaBrokers(), prefix: `${uniqueName("fuzz")}.` },
    env: FUZZ_ENV,
    output: (name, line) => logs.push(`${name} | ${line}`),
    log: (line) => logs.push(line),
  });
}, 180_000);

afterAll(async () => {
  await system?.stop();
});

describe("Schemathesis against the running system", () => {
  it("finds no 5xx, no response its document does not declare, no timeout, following create → read → cancel", async () => {
    const seed = randomInt(2 ** 31);
    const output: string[] = [];
    const schema = `${system.gatewayUrl}/openapi.json`;
    const result = await runSchemathesis({
      schema,
      baseUrl: system.gatewayUrl,
      token: await system.token(uniqueName("fuzz-admin"), { admin: true }),
      seed,
      maxExamples: MAX_EXAMPLES,
      output: (line) => output.push(line),
    });
    const { operations, cases, failures, errors, warnings, links } = result;
    console.log(
      `schemathesis: ${operations} operations, ${cases} cases, ${failures} failures, ${errors} errors, ` +
        `links ${links?.covered}/${links?.total} followed, seed ${seed}; warnings: ${warnings.join("; ") || "none"}`,
    );
    const context = `${output.join("\n")}\nreplay against a running system: ${result.command}\n${logs.slice(-30).join("\n")}`;
    expect(result, context).toMatchObject({ exitCode: 0, failures: 0, errors: 0 });
    // Every operation of the document was tested, and every phase ran: none skipped for lack of data.
    const document = (await (await fetch(schema)).json()) as Parameters<typeof documentedOperations>[0];
    expect(operations, context).toBe(documentedOperations(document));
    expect(result.phases, context).toEqual({
      examples: expect.stringMatching(/success|skip/),
      coverage: "success",
      fuzzing: "success",
      stateful: "success",
    });
    // The stateful phase followed links (create a user → create its order → read it → cancel it).
    expect(links?.covered, context).toBeGreaterThan(0);
  }, 900_000);
});

const METHODS = new Set(["get", "put", "post", "delete", "patch", "head", "options", "trace"]);

function documentedOperations(document: { paths: Record<string, Record<string, unknown>> }): number {
  return Object.values(document.paths).reduce(
    (sum, item) => sum + Object.keys(item).filter((key) => METHODS.has(key)).length,
    0,
  );
}
