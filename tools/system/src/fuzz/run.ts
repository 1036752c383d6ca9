import { randomInt } from "node:crypto";
import { rm } from "node:fs/promises";
import { join } from "node:path";
import { defineCli, numberOption, UsageError } from "@saga/tools/cli";
import { cacheDir } from "@saga/tools/infra";
import { setUp } from "@saga/tools/setup";
import { freePorts, type System, startSystem } from "../stack/system.ts";
import { FUZZ_ENV, runSchemathesis } from "./schemathesis.ts";

const fuzzCli = defineCli({
  name: "fuzz",
  command: "npm run fuzz --",
  about:
    "Schemathesis against the gateway's /openapi.json: a private copy of the system on free ports (beside a\n" +
    "running `npm start`), or, with --url and --token, a system that is already up. Exits 1 on a failure.\n" +
    "`npm run setup` runs first (skipping what is there).",
  options: {
    url: {
      type: "string",
      value: "URL",
      description: "the gateway of a running system, instead of a private copy",
    },
    token: {
      type: "string",
      value: "TOKEN",
      description: "an admin's token for --url (npm start prints one)",
    },
    seed: {
      type: "string",
      value: "N",
      default: String(randomInt(2 ** 31)),
      defaultText: "random",
      description: "Schemathesis's seed: a seed replays its run",
    },
    "max-examples": {
      type: "string",
      value: "N",
      default: "25",
      description: "cases per operation and phase",
    },
  },
});

async function run() {
  const { values, seed, maxExamples } = fuzzCli.parseOrExit(process.argv.slice(2), ({ values }) => {
    if (values.url && !values.token)
      throw new UsageError("--url needs --token (an admin's: npm start prints one)");
    return {
      values,
      seed: numberOption("seed", values.seed, { integer: true, min: 0 }),
      maxExamples: numberOption("max-examples", values["max-examples"], { integer: true, min: 1 }),
    };
  });
  // Here rather than in a prefuzz script, which npm runs before this one sees `--help`.
  await setUp();

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
