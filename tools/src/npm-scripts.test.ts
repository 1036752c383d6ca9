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
