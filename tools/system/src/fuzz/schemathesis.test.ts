import { randomInt } from "node:crypto";
import { kafkaBrokers, postgresUrl, uniqueName } from "@saga/tools/test/harness";
import postgres from "postgres";
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from "vitest";
import { freePorts, type System, startSystem } from "../stack/system.ts";
import { FUZZ_ENV, runSchemathesis } from "./schemathesis.ts";

// Schemathesis against the whole system, started as `npm start` starts it (the bundles of `npm run build`),
// on the test run's PostgreSQL and Kafka.
// Cases per operation and phase: bounds the run (about 500 cases, 30 to 60 s of Schemathesis here).
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
    // The stateful phase followed the links: orders of users that the run created (their ids reach
    // POST /orders only through a link), some canceled by its DELETEs.
    expect(links?.covered, context).toBeGreaterThan(0);
    const userDb = postgres(system.userDbUrl, { max: 1, onnotice: () => {} });
    const orderDb = postgres(system.orderDbUrl, { max: 1, onnotice: () => {} });
    onTestFinished(() => Promise.all([userDb.end(), orderDb.end()]).then(() => {}));
    const users = (await userDb<{ id: string }[]>`select id from users`).map((u) => u.id);
    const [chained] = await orderDb<{ orders: number; canceled: number }[]>`
      select count(*)::int as orders, (count(*) filter (where cancel_reason = 'CANCELED_BY_REQUEST'))::int as canceled
      from orders where user_id = any(${users}::uuid[])`;
    console.log(
      `schemathesis: ${chained?.orders} orders of users it created, ${chained?.canceled} of them canceled`,
    );
    expect(chained?.orders, context).toBeGreaterThan(0);
    expect(chained?.canceled, context).toBeGreaterThan(0);
  }, 900_000);
});

const METHODS = new Set(["get", "put", "post", "delete", "patch", "head", "options", "trace"]);

function documentedOperations(document: { paths: Record<string, Record<string, unknown>> }): number {
  return Object.values(document.paths).reduce(
    (sum, item) => sum + Object.keys(item).filter((key) => METHODS.has(key)).length,
    0,
  );
}
