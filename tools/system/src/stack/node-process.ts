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
};

export type NodeProcess = {
  readonly spec: NodeProcessSpec;
  readonly url: string;
  /** Whether the process is up (started and not yet exited). */
  isRunning(): boolean;
  pid(): number | undefined;
  /** Starts the process and resolves once its readiness endpoint answers 200. */
  start(): Promise<void>;
  /** Sends `signal` and resolves once the process has exited. */
  kill(signal?: NodeJS.Signals): Promise<number | null>;
  /** SIGTERM, then SIGKILL after the grace period. */
  stop(): Promise<void>;
};

export type Output = (name: string, line: string) => void;

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * One of our Node processes, run as `node <entry>` (Node strips the types itself) (one process, so a SIGKILL hits the
 * service itself, not a wrapper) under the infra watchdog, so it dies with its supervisor.
 */
export function createNodeProcess(spec: NodeProcessSpec, output: Output): NodeProcess {
  let current: Supervised | undefined;
  let running = false;
  const url = `http://127.0.0.1:${spec.port}`;

  async function waitReady(server: Supervised, timeoutMs: number) {
    const deadline = Date.now() + timeoutMs;
    let exited = false;
    void server.exited.then(() => {
      exited = true;
    });
    while (Date.now() < deadline) {
      if (exited) throw new Error(`${spec.name} exited during start-up`);
      const ok = await fetch(`${url}/ready`, { signal: AbortSignal.timeout(1000) })
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
    async start() {
      if (running) return;
      const server = await supervise({
        command: process.execPath,
        args: [...nodeFlags(), join(repoRoot, spec.entry)],
        onLine: (line) => output(spec.name, line),
        stopSignal: "SIGTERM",
        graceSeconds: 10,
        cwd: repoRoot,
        env: { ...process.env, ...spec.env, PORT: String(spec.port) },
      });
      current = server;
      running = true;
      void server.exited.then(() => {
        if (current === server) running = false;
      });
      await waitReady(server, 60_000);
    },
    async kill(signal = "SIGKILL") {
      const server = current;
      if (!server || !running) return null;
      try {
        process.kill(server.pid, signal);
      } catch {
        // Already gone.
      }
      return server.exited;
    },
    async stop() {
      if (current && running) await current.stop();
    },
  };
}
