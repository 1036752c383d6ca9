import { type ChildProcess, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { createInterface } from "node:readline";
import { afterEach, describe, expect, test } from "vitest";
import { isAlive } from "./infra/index.ts";
import { repoRoot } from "./infra/paths.ts";

async function until(condition: () => boolean, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, 100));
  }
  return true;
}

// Whatever a failed test leaves running would keep vitest from exiting.
const started: { child: ChildProcess; seen: { command: number } }[] = [];
afterEach(() => {
  for (const run of started.splice(0)) {
    run.child.kill("SIGKILL");
    if (run.seen.command && isAlive(run.seen.command)) process.kill(run.seen.command, "SIGKILL");
  }
});

/**
 * Runs `with-infra` (in one Node process, as `npm test` ends up running it) around a
 * command that just waits, and reports the pids and data dir of the servers it started.
 */
async function startWithInfra() {
  const child = spawn(
    process.execPath,
    [`${repoRoot}tools/src/with-infra.ts`, "sh", "-c", "echo command-started $$; exec sleep 600"],
    // SAGA_INFRA=local: servers of its own even when this test run was given external ones.
    { cwd: repoRoot, env: { ...process.env, SAGA_INFRA: "local" }, stdio: ["ignore", "pipe", "inherit"] },
  );
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  const seen = { postgres: 0, kafka: 0, command: 0, runDir: "" };
  started.push({ child, seen });
  await new Promise<void>((resolve, reject) => {
    void exited.then((code) => reject(new Error(`with-infra exited early (code ${code})`)));
    createInterface({ input: child.stdout }).on("line", (line) => {
      const servers = /PostgreSQL \S+ \(pid (\d+)\), Kafka \S+ \(pid (\d+)\), data in (\S+)/.exec(line);
      if (servers)
        Object.assign(seen, { postgres: Number(servers[1]), kafka: Number(servers[2]), runDir: servers[3] });
      const command = /^command-started (\d+)/.exec(line);
      if (command) {
        seen.command = Number(command[1]);
        resolve();
      }
    });
  });
  return { child, exited, ...seen };
}

describe("with-infra leaves no server behind", () => {
  test("when it is killed with SIGKILL, the watchdogs stop PostgreSQL and Kafka", async () => {
    const run = await startWithInfra();
    expect(isAlive(run.postgres) && isAlive(run.kafka)).toBe(true);

    run.child.kill("SIGKILL");
    await run.exited;

    expect(await until(() => !isAlive(run.postgres) && !isAlive(run.kafka), 20_000)).toBe(true);
    // The command itself is an ordinary child: a SIGKILLed parent cannot take it along
    // (afterEach kills it).
  });

  test("on SIGINT it passes the signal to the command, stops the servers, removes their data and exits 130", async () => {
    const run = await startWithInfra();
    expect(existsSync(run.runDir)).toBe(true);

    run.child.kill("SIGINT");

    // sleep dies of the forwarded SIGINT, so with-infra reports 128 + 2.
    expect(await run.exited).toBe(130);
    expect(isAlive(run.postgres) || isAlive(run.kafka) || isAlive(run.command)).toBe(false);
    expect(existsSync(run.runDir)).toBe(false);
  });
});
