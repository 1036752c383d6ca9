import { join } from "node:path";
import { repoRoot, type Supervised, supervise } from "@saga/tools/infra";
import { nodeFlags } from "@saga/tools/process";

export type NodeProcessSpec = {
  /** Short label for log prefixes and reports: `user-1`, `relay-2`, … */
  name: string;
  /** Entry point, relative to the repository root. */
  entry: string;
  port: number;
  env: Record<string, string>;
  /**
   * Start it again when it exits by itself (a crash, a SIGKILL from outside), after a back-off that
   * doubles from 1 s up to 30 s and resets once it has stayed up for a minute; `npm start` wants this,
   * the chaos run (which kills and restarts on its own schedule) does not.
   */
  restart?: { log: (line: string) => void };
};

export type NodeProcess = {
  readonly spec: NodeProcessSpec;
  readonly url: string;
  /** Whether the process is up (started and not yet exited). */
  isRunning(): boolean;
  pid(): number | undefined;
  /**
   * Starts the process and resolves once its readiness endpoint answers 200. When `signal` aborts, or
   * `stop()` or `kill()` is called, before it is ready, it rejects; the process then runs until `stop()`.
   */
  start(signal?: AbortSignal): Promise<void>;
  /** Sends `signal` and resolves once the process has exited. */
  kill(signal?: NodeJS.Signals): Promise<number | null>;
  /** SIGTERM, then SIGKILL after the grace period; a start in progress is cut short and waited for first. */
  stop(): Promise<void>;
  /** How often it was restarted after exiting by itself (see `restart`). */
  restarts(): number;
  /** Its exits after it was ready that nobody asked for (no `kill()`, no `stop()`): crashes. */
  unplannedExits(): { code: number | null; upMs: number }[];
};

export type Output = (name: string, line: string) => void;

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

const RESTART_MIN_MS = 1000;
const RESTART_MAX_MS = 30_000;
const RESTART_RESET_AFTER_MS = 60_000;

/**
 * One of our Node processes, run as `node <entry>` (one process, so a SIGKILL hits the
 * service itself, not a wrapper) under the infra watchdog, so it dies with its supervisor.
 */
export function createNodeProcess(spec: NodeProcessSpec, output: Output): NodeProcess {
  let current: Supervised | undefined;
  let running = false;
  // Set by kill() and stop(): an exit we asked for is not a crash.
  let expected = false;
  let restarts = 0;
  // The process that answered ready last: an exit of one still starting is its start's failure.
  let readyServer: Supervised | undefined;
  const unplanned: { code: number | null; upMs: number }[] = [];
  let backoffMs = RESTART_MIN_MS;
  let restartTimer: NodeJS.Timeout | undefined;
  // The start in progress: stop() waits for it, so that a process it has just spawned is stopped too.
  let starting: Promise<void> | undefined;
  const url = `http://127.0.0.1:${spec.port}`;

  function onExit(server: Supervised, code: number | null, upMs: number) {
    if (current !== server) return;
    running = false;
    if (!expected && readyServer === server) unplanned.push({ code, upMs });
    if (expected || !spec.restart) return;
    if (upMs >= RESTART_RESET_AFTER_MS) backoffMs = RESTART_MIN_MS;
    const delay = backoffMs;
    backoffMs = Math.min(backoffMs * 2, RESTART_MAX_MS);
    restarts++;
    spec.restart.log(
      `${spec.name} exited unexpectedly (code ${code ?? "none: killed by a signal"}) after ${(upMs / 1000).toFixed(1)}s; restarting in ${delay / 1000}s (restart ${restarts})`,
    );
    restartTimer = setTimeout(() => {
      restartTimer = undefined;
      if (expected) return;
      start().then(
        () => spec.restart?.log(`${spec.name} restarted and ready (restart ${restarts})`),
        (err: Error) => {
          // A restart cut short by stop() did not fail.
          if (!expected) spec.restart?.log(`${spec.name} restart failed: ${err.message}`);
        },
      );
    }, delay);
    restartTimer.unref();
  }

  async function start(signal?: AbortSignal) {
    if (running) return;
    signal?.throwIfAborted();
    expected = false;
    const run = launch(signal);
    starting = run;
    try {
      await run;
    } finally {
      if (starting === run) starting = undefined;
    }
  }

  async function launch(signal?: AbortSignal) {
    const server = await supervise({
      command: process.execPath,
      // Stack traces name the TypeScript sources, through the bundles' source maps.
      args: ["--enable-source-maps", ...nodeFlags(), join(repoRoot, spec.entry)],
      onLine: (line) => output(spec.name, line),
      stopSignal: "SIGTERM",
      graceSeconds: 10,
      cwd: repoRoot,
      env: { ...process.env, ...spec.env, PORT: String(spec.port) },
    });
    current = server;
    running = true;
    const startedAt = performance.now();
    void server.exited.then((code) => onExit(server, code, performance.now() - startedAt));
    await waitReady(server, 60_000, signal);
    readyServer = server;
  }

  async function waitReady(server: Supervised, timeoutMs: number, signal?: AbortSignal) {
    const deadline = Date.now() + timeoutMs;
    let exited = false;
    void server.exited.then(() => {
      exited = true;
    });
    while (Date.now() < deadline) {
      if (exited) throw new Error(`${spec.name} exited during start-up`);
      if (expected) throw new Error(`${spec.name} was stopped during start-up`);
      signal?.throwIfAborted();
      const probe = AbortSignal.timeout(1000);
      const ok = await fetch(`${url}/ready`, { signal: signal ? AbortSignal.any([probe, signal]) : probe })
        .then((r) => r.ok)
        .catch(() => false);
      if (ok) return;
      await sleep(100);
    }
    throw new Error(`${spec.name} was not ready on ${url}/ready within ${timeoutMs / 1000}s`);
  }

  return {
    spec,
    url,
    isRunning: () => running,
    pid: () => (running ? current?.pid : undefined),
    start,
    restarts: () => restarts,
    unplannedExits: () => [...unplanned],
    async kill(signal = "SIGKILL") {
      const server = current;
      if (!server || !running) return null;
      expected = true;
      try {
        process.kill(server.pid, signal);
      } catch {
        // Already gone.
      }
      return server.exited;
    },
    async stop() {
      expected = true;
      clearTimeout(restartTimer);
      await starting?.catch(() => {});
      if (current && running) await current.stop();
    },
  };
}
