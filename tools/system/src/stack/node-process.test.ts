import { freePort, isAlive } from "@saga/tools/infra";
import { afterEach, expect, it } from "vitest";
import { createNodeProcess, type NodeProcess } from "./node-process.ts";

const started: NodeProcess[] = [];
afterEach(async () => {
  await Promise.all(started.splice(0).map((p) => p.stop()));
});

async function startFixture(restart: boolean) {
  const logs: string[] = [];
  const proc = createNodeProcess(
    {
      name: "fixture",
      entry: "tools/system/src/stack/fixtures/ready-server.ts",
      port: await freePort(),
      env: {},
      ...(restart ? { restart: { log: (line: string) => logs.push(line) } } : {}),
    },
    () => {},
  );
  started.push(proc);
  await proc.start();
  return { proc, logs };
}

const ready = (proc: NodeProcess) =>
  fetch(`${proc.url}/ready`, { signal: AbortSignal.timeout(1000) }).then(
    (r) => r.ok,
    () => false,
  );

async function until(check: () => boolean | Promise<boolean>, ms = 20_000) {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error("condition not met in time");
    await new Promise((r) => setTimeout(r, 100));
  }
}

it("restarts a process killed from outside, and says so", async () => {
  const { proc, logs } = await startFixture(true);
  const first = proc.pid() as number;
  process.kill(first, "SIGKILL");

  await until(() => logs.some((l) => l.includes("restarted and ready")));
  expect(logs[0]).toMatch(/^fixture exited unexpectedly .* restarting in 1s \(restart 1\)$/);
  expect(proc.restarts()).toBe(1);
  expect(proc.pid()).not.toBe(first);
  expect(await ready(proc)).toBe(true);
});

it("leaves a process down that it was asked to stop or kill", async () => {
  const { proc, logs } = await startFixture(true);
  await proc.kill("SIGKILL");
  await new Promise((r) => setTimeout(r, 1500));
  expect(proc.isRunning()).toBe(false);
  expect(logs).toEqual([]);
  expect(await ready(proc)).toBe(false);
  expect(proc.unplannedExits(), "a kill asked for is no crash").toEqual([]);
});

it("does not restart without the option (the chaos run restarts on its own schedule)", async () => {
  const { proc, logs } = await startFixture(false);
  process.kill(proc.pid() as number, "SIGKILL");
  await until(() => !proc.isRunning());
  await new Promise((r) => setTimeout(r, 1500));
  expect(proc.isRunning()).toBe(false);
  expect(logs).toEqual([]);
  // Killed from outside, not through kill(): what a crash looks like to the run.
  expect(proc.unplannedExits()).toEqual([{ code: 137, upMs: expect.any(Number) }]);
});

it("a start cut short (Ctrl-C during `npm start`) rejects at once, and stop() ends the process it spawned", async () => {
  const proc = createNodeProcess(
    {
      name: "fixture",
      entry: "tools/system/src/stack/fixtures/never-ready.ts",
      port: await freePort(),
      env: {},
    },
    () => {},
  );
  started.push(proc);
  const stopAsked = new AbortController();
  const starting = proc.start(stopAsked.signal);
  await until(() => proc.pid() !== undefined);
  const pid = proc.pid() as number;

  stopAsked.abort(new Error("SIGINT"));
  await expect(starting).rejects.toThrow("SIGINT");
  await proc.stop();
  expect(proc.isRunning()).toBe(false);
  expect(isAlive(pid)).toBe(false);
});
