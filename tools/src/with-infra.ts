import { spawn } from "node:child_process";
import { constants } from "node:os";
import { defineCli, UsageError } from "./cli.ts";
import { startInfra } from "./infra/index.ts";

const withInfraCli = defineCli({
  name: "with-infra",
  command: "node tools/src/with-infra.ts",
  positionals: "<command> [args...]",
  about:
    "Starts PostgreSQL and Kafka once, runs the command with POSTGRES_URL and KAFKA_BROKERS set (so every\n" +
    "package's test globalSetup shares them), stops the servers and exits with the command's exit code.\n" +
    "`npm test` runs turbo so. Its options come before the command; what follows the command is the command's.",
  options: {},
});

/** Its own options, before the command (or `--`), and the command with its arguments, untouched. */
function commandLine(argv: string[]): { command: string; args: string[] } {
  const at = argv.findIndex((arg) => !arg.startsWith("-") || arg === "--");
  const own = at === -1 ? argv : argv.slice(0, at);
  const [command, ...args] = at === -1 ? [] : argv.slice(argv[at] === "--" ? at + 1 : at);
  return withInfraCli.parseOrExit(own, () => {
    if (!command) throw new UsageError("no command to run");
    return { command, args };
  });
}

async function run(): Promise<number> {
  const { command, args } = commandLine(process.argv.slice(2));

  // Until the command runs, a signal only means "stop": servers started meanwhile are
  // stopped below. Once it runs, the signal is passed on and we wait for it to end.
  let received: NodeJS.Signals | undefined;
  let forward: (signal: NodeJS.Signals) => void = (signal) => {
    received = signal;
  };
  for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) process.on(signal, (s) => forward(s));

  const infra = await startInfra();
  try {
    if (received) return 128 + constants.signals[received];
    const child = spawn(command, args, {
      stdio: "inherit",
      env: {
        ...process.env,
        POSTGRES_URL: infra.postgresUrl,
        KAFKA_BROKERS: infra.kafkaBrokers.join(","),
        // What we started is what the command must use, whatever made us choose it.
        SAGA_INFRA: "external",
      },
    });
    forward = (signal) => {
      child.kill(signal);
    };
    return await new Promise<number>((resolve, reject) => {
      child.once("error", reject);
      child.once("exit", (code, signal) => resolve(code ?? 128 + (signal ? constants.signals[signal] : 0)));
    });
  } finally {
    await infra.stop();
  }
}

run().then(
  (code) => process.exit(code),
  (err) => {
    console.error(err);
    process.exit(1);
  },
);
