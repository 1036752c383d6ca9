import { spawn, spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { cacheDir, type Log, repoRoot } from "./infra/index.ts";

/** Schemathesis and every package it needs, pinned with their hashes (`pip-compile --generate-hashes`). */
const SCHEMATHESIS_REQUIREMENTS = join(repoRoot, "tools/schemathesis/requirements.txt");

/** How to run Schemathesis' `st`: its arguments follow `args`. */
export type SchemathesisCommand = { command: string; args: string[] };

/**
 * Schemathesis' command line in a virtual environment under `.cache/schemathesis/<hash of the requirements>/`,
 * created on first use from the pinned requirements file (pip with `--require-hashes`). A finished
 * environment carries a stamp; one without it (an interrupted install) is made again. A changed
 * requirements file gets an environment of its own.
 */
export async function ensureSchemathesis(log: Log = () => {}): Promise<SchemathesisCommand> {
  const requirements = await readFile(SCHEMATHESIS_REQUIREMENTS);
  const digest = createHash("sha256").update(requirements).digest("hex").slice(0, 12);
  const venv = join(cacheDir, "schemathesis", digest);
  // The environment's python and `-m`, not its `st` script: the script names the environment's path as it
  // was when created, and .cache/ may be reached through another path (a worktree's link to it).
  const st = { command: join(venv, "bin", "python"), args: ["-m", "schemathesis.cli"] };
  const stamp = join(venv, ".installed");
  if (existsSync(stamp)) return st;

  const python = findPython();
  log(`schemathesis: creating a virtual environment in ${venv} (first run only)`);
  const started = performance.now();
  // Made in place, not renamed into it when done: a virtual environment knows its own path.
  await rm(venv, { recursive: true, force: true });
  await run(
    python,
    ["-m", "venv", venv],
    "create a virtual environment (on Debian: apt-get install python3-venv)",
  );
  await run(
    join(venv, "bin", "pip"),
    [
      "install",
      "--quiet",
      "--disable-pip-version-check",
      "--no-input",
      // Only the files the requirements file names, by their hashes; nothing resolved anew.
      "--require-hashes",
      "--no-deps",
      "--only-binary=:all:",
      "-r",
      SCHEMATHESIS_REQUIREMENTS,
    ],
    "install the pinned requirements",
  );
  await writeFile(stamp, `${new Date().toISOString()}\n`);
  log(`schemathesis: installed in ${((performance.now() - started) / 1000).toFixed(1)}s`);
  return st;
}

function findPython(): string {
  for (const candidate of ["python3", "python"]) {
    const version = spawnSync(candidate, ["-c", "import sys, venv; print(sys.version_info >= (3, 10))"], {
      encoding: "utf8",
    });
    if (version.status === 0 && version.stdout.trim() === "True") return candidate;
  }
  throw new Error("schemathesis needs Python 3.10 or newer with venv (apt-get install python3 python3-venv)");
}

function run(command: string, args: string[], what: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: ["ignore", "pipe", "pipe"] });
    const output: Buffer[] = [];
    child.stdout.on("data", (chunk: Buffer) => output.push(chunk));
    child.stderr.on("data", (chunk: Buffer) => output.push(chunk));
    child.once("error", (err) => reject(new Error(`could not ${what}: ${err.message}`, { cause: err })));
    child.once("close", (code) => {
      if (code === 0) resolve();
      else reject(new Error(`could not ${what} (\`${command}\` exited ${code}):\n${Buffer.concat(output)}`));
    });
  });
}
