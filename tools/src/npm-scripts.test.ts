import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { describe, expect, it } from "vitest";
import { repoRoot } from "./infra/index.ts";

const NODE24 = "tools/bin/node24.mjs";

function killIfAlive(pid: number) {
  try {
    process.kill(pid, "SIGKILL");
  } catch {
    // Gone already.
  }
}

type Scripts = Record<string, string>;

async function scriptsOf(dir: string): Promise<Scripts> {
  const pkg = JSON.parse(await readFile(join(repoRoot, dir, "package.json"), "utf8"));
  return pkg.scripts ?? {};
}

/** The root and every workspace (`packages/*` read as the folders under packages/). */
async function packageDirs(): Promise<string[]> {
  const { workspaces } = JSON.parse(await readFile(join(repoRoot, "package.json"), "utf8")) as {
    workspaces: string[];
  };
  const dirs = await Promise.all(
    workspaces.map(async (w) =>
      w.endsWith("/*")
        ? (await readdir(join(repoRoot, w.slice(0, -2)))).map((d) => `${w.slice(0, -2)}/${d}`)
        : [w],
    ),
  );
  return [".", ...dirs.flat().filter((d) => existsSync(join(repoRoot, d, "package.json")))];
}

// npm runs a script with `sh -c` and on SIGTERM signals that shell, which dies without passing it on (dash
// does not replace itself by its last command): node24.mjs, which would forward it, never hears of it, and
// `npm start` killed by a supervisor left every process of the system running. `exec` makes node24.mjs the
// process npm signals.
describe("scripts that run through node24.mjs", () => {
  it("each replaces npm's shell with it (exec), in every package", async () => {
    const shellInFront: string[] = [];
    for (const dir of await packageDirs()) {
      for (const [name, script] of Object.entries(await scriptsOf(dir))) {
        // One command alone; a chain (`a && b`) needs its shell.
        const alone = !/&&|\|\||;/.test(script);
        if (script.includes("node24.mjs") && alone && !script.startsWith("exec "))
          shellInFront.push(`${dir}: ${name}`);
      }
    }
    expect(shellInFront).toEqual([]);
  });

  it.each(["start", "test", "chaos"])(
    "npm run %s passes a SIGTERM sent to npm on to the program",
    async (name) => {
      // The root's script as it is, its program replaced by one that says when it is up and what signal it got.
      const script = (await scriptsOf("."))[name] ?? "";
      const prefix = script.slice(0, script.indexOf(NODE24) + NODE24.length);
      expect(prefix).toMatch(/node24\.mjs$/);
      const dir = await mkdtemp(join(tmpdir(), "npm-sigterm-"));
      const program = join(dir, "program.cjs");
      await writeFile(
        program,
        `process.on("SIGTERM", () => { console.log("SIGTERM"); process.exit(0); });
         console.log(\`up \${process.pid}\`);
         setInterval(() => {}, 1000);`,
      );
      await writeFile(
        join(dir, "package.json"),
        JSON.stringify({
          name: "fixture",
          private: true,
          scripts: { [name]: `${prefix.replace(NODE24, join(repoRoot, NODE24))} node ${program}` },
        }),
      );
      const npm = spawn("npm", ["run", "--silent", name], { cwd: dir, stdio: ["ignore", "pipe", "inherit"] });
      const lines = createInterface({ input: npm.stdout })[Symbol.asyncIterator]();
      let programPid: number | undefined;
      try {
        const up = String((await lines.next()).value);
        expect(up).toMatch(/^up \d+$/);
        programPid = Number(up.split(" ")[1]);
        npm.kill("SIGTERM");
        const heard = await Promise.race([
          lines.next().then((l) => l.value),
          new Promise((r) => setTimeout(() => r("nothing within 5 s"), 5000)),
        ]);
        expect(heard).toBe("SIGTERM");
      } finally {
        npm.kill("SIGKILL");
        // Left running when the signal did not reach it.
        if (programPid) killIfAlive(programPid);
        await rm(dir, { recursive: true, force: true });
      }
    },
    20_000,
  );
});

type Ran = { code: number | null; stdout: string; stderr: string };

/** Runs a program to its end, as `npm run --silent <script> -- <args>` in `dir` or `node <file> <args>`. */
function runProgram(how: { dir: string; script: string } | { file: string }, args: string[]): Promise<Ran> {
  const [command, argv, cwd] =
    "script" in how
      ? ["npm", ["run", "--silent", how.script, "--", ...args], join(repoRoot, how.dir)]
      : [process.execPath, [join(repoRoot, how.file), ...args], repoRoot];
  return new Promise((resolve, reject) => {
    const child = spawn(command, argv, { cwd, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (chunk) => {
      stdout += chunk;
    });
    child.stderr.on("data", (chunk) => {
      stderr += chunk;
    });
    child.once("error", reject);
    child.once("close", (code) => resolve({ code, stdout, stderr }));
  });
}

/** A line of a stack trace, which a wrong command line must not print. */
const STACK_LINE = /^\s+at /m;

// Each program reads its options through @saga/tools/cli: `--help` is its usage, printed before anything
// starts (no PostgreSQL, Kafka, build or setup); a wrong option is one line naming it, then the usage,
// exit 2. Before, chaos and bench threw parseArgs's TypeError with its stack, npm run infra and with-infra
// started PostgreSQL and Kafka, setup and build ran (npm start and npm run fuzz ran the setup first, as npm's
// prestart and prefuzz scripts), and migrate took --help for a database.
describe("every program's command line", () => {
  const programs: {
    name: string;
    how: { dir: string; script: string } | { file: string };
    names: string[];
  }[] = [
    { name: "npm start", how: { dir: ".", script: "start" }, names: ["--order-services"] },
    {
      name: "npm run chaos",
      how: { dir: ".", script: "chaos" },
      names: [
        "--duration",
        "--rate",
        "--seed",
        "--order-services",
        "--victims",
        "--kills",
        "--freezes",
        "--network-faults",
        "--users",
        "--quiet-timeout",
      ],
    },
    {
      name: "npm run bench",
      how: { dir: ".", script: "bench" },
      names: [
        "--quick",
        "--rates",
        "--seconds",
        "--concurrency",
        "--follow-rates",
        "--idle-seconds",
        "--idle-settle",
        "--overload-only",
        "--overload-seconds",
        "--overload-capacity",
        "--overload-factors",
        "--edge",
        "--env",
      ],
    },
    {
      name: "npm run bench -w relay",
      how: { dir: "relay", script: "bench" },
      names: [
        "--rows",
        "--batch",
        "--rate",
        "--seconds",
        "--client",
        "--idle",
        "--mode",
        "--retention",
        "--ids",
      ],
    },
    {
      name: "npm run bench:writers -w relay",
      how: { dir: "relay", script: "bench:writers" },
      names: ["--seconds", "--writers", "--rounds", "--rows-per-tx"],
    },
    {
      name: "npm run fuzz",
      how: { dir: ".", script: "fuzz" },
      names: ["--url", "--token", "--seed", "--max-examples"],
    },
    { name: "npm run infra", how: { dir: ".", script: "infra" }, names: ["POSTGRES_PORT", "KAFKA_PORT"] },
    { name: "npm run setup", how: { dir: ".", script: "setup" }, names: ["--help"] },
    { name: "npm run build", how: { dir: ".", script: "build" }, names: ["--help"] },
    { name: "npm run migrate -w db", how: { dir: "db", script: "migrate" }, names: ["<user|order>"] },
    {
      name: "npm run token",
      how: { dir: ".", script: "token" },
      names: ["--user", "--admin", "--subject", "--ttl"],
    },
    {
      name: "npm run dlq",
      how: { dir: ".", script: "dlq" },
      names: ["--topic", "--since", "--pending", "list", "show", "replay"],
    },
    {
      name: "npm run check-dashboards -w @saga/monitoring",
      how: { dir: "monitoring", script: "check-dashboards" },
      names: ["--config", "--targets", "--dashboard", "--drive", "--token"],
    },
    // `npm test` passes what follows `--` on to turbo, the command it wraps.
    { name: "with-infra", how: { file: "tools/src/with-infra.ts" }, names: ["<command>"] },
  ];

  it.each(programs)(
    "$name: --help prints its usage, naming its options; an unknown option is refused in one line, exit 2",
    async ({ how, names }) => {
      const [help, wrong] = await Promise.all([
        runProgram(how, ["--help"]),
        runProgram(how, ["--no-such-option"]),
      ]);
      expect(help.code).toBe(0);
      expect(help.stdout).toMatch(/^usage: /);
      for (const name of names) expect(help.stdout).toContain(name);
      expect(help.stdout).toContain("--help");

      expect(wrong.code).toBe(2);
      expect(wrong.stdout).toBe("");
      const [first, ...rest] = wrong.stderr.split("\n");
      expect(first).toMatch(/: unknown option --no-such-option$/);
      expect(rest.join("\n").trim()).toBe(help.stdout.trim());
      expect(wrong.stderr).not.toMatch(STACK_LINE);
    },
    30_000,
  );

  it("a bad value is refused by naming the option and what it takes, before anything starts", async () => {
    // The programs themselves, without npm (the test above goes through it).
    const chaos = { file: "tools/system/src/chaos/run.ts" };
    const cases: [how: { file: string }, args: string[], says: string][] = [
      [chaos, ["--rate", "abc"], 'chaos: --rate must be a positive number, not "abc"'],
      [chaos, ["--duration", "-5"], 'chaos: --duration must be a positive number, not "-5"'],
      [chaos, ["--seed", "x"], 'chaos: --seed must be a whole number, not "x"'],
      [chaos, ["--order-services", "0"], 'chaos: --order-services must be a whole number from 1, not "0"'],
      [
        { file: "tools/system/src/bench/run.ts" },
        ["--edge", "envoy"],
        "bench: --edge must be one of nginx, haproxy",
      ],
      [
        { file: "tools/system/src/bench/run.ts" },
        ["--rates", "100,fast"],
        "bench: --rates must be a comma-separated list",
      ],
      [
        { file: "services/gateway/src/token-cli.ts" },
        ["--admin", "--ttl", "0"],
        "token: --ttl must be a whole number from 1",
      ],
      [
        { file: "db/src/migrate-cli.ts" },
        ["users", "postgres://x"],
        'migrate: which database: user or order, not "users"',
      ],
    ];
    const runs = await Promise.all(cases.map(([how, args]) => runProgram(how, args)));
    for (const [i, [, args, says]] of cases.entries()) {
      const ran = runs[i] as Ran;
      expect({ args, code: ran.code, first: ran.stderr.split("\n")[0] }).toEqual({
        args,
        code: 2,
        first: expect.stringContaining(says),
      });
      expect(ran.stderr).toContain("usage: ");
      expect(ran.stderr).not.toMatch(STACK_LINE);
    }
  }, 60_000);
});
