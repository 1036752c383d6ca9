import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { afterEach, expect, it } from "vitest";
import { childPids, freezeFor, processStat } from "./freeze.ts";

const children: ChildProcess[] = [];
afterEach(() => {
  for (const c of children.splice(0)) c.kill("SIGKILL");
});

async function start(command: string, args: string[]) {
  const child = spawn(command, args, { stdio: ["ignore", "pipe", "ignore"] });
  children.push(child);
  await once(child, "spawn");
  return child;
}

it("stops a process for the time asked, then lets it go on", async () => {
  // A process that says what time it is every 20 ms.
  const ticker = await start(process.execPath, ["-e", "setInterval(() => console.log(Date.now()), 20)"]);
  const ticks: number[] = [];
  ticker.stdout?.on("data", (chunk: Buffer) => {
    for (const line of chunk.toString().split("\n")) if (line) ticks.push(Number(line));
  });
  while (ticks.length < 3) await new Promise((r) => setTimeout(r, 20));

  const frozen = new Set<number>();
  const pid = ticker.pid as number;
  const freezing = freezeFor([pid], 800, frozen);
  const from = Date.now();
  await new Promise((r) => setTimeout(r, 300));
  expect((await processStat(pid))?.[0]).toBe("T");
  expect(frozen).toEqual(new Set([pid]));
  await freezing;
  const until = Date.now();
  expect(frozen.size).toBe(0);
  expect((await processStat(pid))?.[0]).not.toBe("T");

  const after = ticks.length;
  while (ticks.length < after + 3) await new Promise((r) => setTimeout(r, 20));
  // No tick was written while it was stopped (100 ms of slack for the signal and the pipe at each end).
  expect(ticks.filter((t) => t > from + 100 && t < until - 100)).toEqual([]);
});

it("lists a process's children", async () => {
  const parent = await start("/bin/sh", ["-c", "sleep 30 & sleep 30 & wait"]);
  let found: number[] = [];
  for (let i = 0; i < 50 && found.length < 2; i++) {
    found = await childPids(parent.pid as number);
    await new Promise((r) => setTimeout(r, 20));
  }
  expect(found).toHaveLength(2);
  for (const pid of found) expect((await processStat(pid))?.[1]).toBe(String(parent.pid));
  for (const pid of found) process.kill(pid, "SIGKILL");
});
