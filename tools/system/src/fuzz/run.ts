import { randomInt } from "node:crypto";
import { rm } from "node:fs/promises";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { cacheDir } from "@saga/tools/infra";
import { freePorts, type System, startSystem } from "../stack/system.ts";
import { FUZZ_ENV, runSchemathesis } from "./schemathesis.ts";

// `npm run fuzz`: Schemathesis against a private copy of the system on free ports (beside a running
// `npm start`), or, with --url and --token, against a system that is already up.
async function run() {
  const { values } = parseArgs({
    options: {
      url: { type: "string" },
      token: { type: "string" },
      seed: { type: "string", default: String(randomInt(2 ** 31)) },
      "max-examples": { type: "string", default: "25" },
    },
  });
  const seed = Math.trunc(Number(values.seed));
  const maxExamples = Number(values["max-examples"]);
  if (!Number.isInteger(maxExamples) || maxExamples < 1)
    throw new Error("--max-examples must be a positive integer");
  if (values.url && !values.token) throw new Error("--url needs --token (an admin's: npm start prints one)");

  let system: System | undefined;
  const dataDir = join(cacheDir, "fuzz", `${process.pid}`);
  try {
    let gatewayUrl = values.url;
    let token = values.token;
    if (!gatewayUrl || !token) {
      console.log("fuzz: starting a private copy of the system on free ports");
      system = await startSystem({
        ports: await freePorts(),
        dataDir,
        durable: false,
        env: FUZZ_ENV,
        output: () => {},
        log: (line) => console.log(line),
      });
      gatewayUrl = system.gatewayUrl;
      token = await system.token("fuzz-admin", { admin: true });
    }
    const result = await runSchemathesis({
      schema: `${gatewayUrl}/openapi.json`,
      baseUrl: gatewayUrl,
      token,
      seed,
      maxExamples,
      output: (line) => console.log(line),
    });
    console.log(
      `fuzz: ${result.operations} operations, ${result.cases} cases, ${result.failures} failures, ` +
        `${result.errors} errors, links ${result.links?.covered ?? 0}/${result.links?.total ?? 0} followed, seed ${seed}; ` +
        `warnings: ${result.warnings.join("; ") || "none"}`,
    );
    process.exitCode = result.exitCode;
  } finally {
    await system?.stop();
    await rm(dataDir, { recursive: true, force: true });
  }
}

run().catch((err) => {
  console.error(err);
  process.exit(1);
});
