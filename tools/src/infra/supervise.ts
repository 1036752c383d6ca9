import { spawn } from "node:child_process";
import { closeSync, openSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { createInterface } from "node:readline";
import type { Readable, Writable } from "node:stream";

/**
 * Runs the server as the child of a tiny `sh` that holds the read end of a pipe whose
 * only writer is this Node process. When Node ends in any way, SIGKILL included, the
 * kernel closes the pipe, `read` sees EOF and the watchdog stops the server: no orphans,
 * no polling. `stop()` closes the pipe on purpose and takes the same path.
 * The server's stdout and stderr go to the log file (or `onLine`); the watchdog's own
 * stdout carries just the server's pid.
 */
const WATCHDOG = `
sig=$1; grace=$2; shift 2
exec 3<&0
"$@" </dev/null 3<&- >&2 &
child=$!
echo "$child"
(
  while read -r _ <&3; do :; done
  kill -s "$sig" "$child" 2>/dev/null || exit 0
  ticks=0
  while kill -0 "$child" 2>/dev/null; do
    ticks=$((ticks + 1))
    if [ "$ticks" -gt "$((grace * 10))" ]; then kill -s KILL "$child" 2>/dev/null; exit 0; fi
    sleep 0.1
  done
) <&3 &
watcher=$!
wait "$child"; code=$?
kill "$watcher" 2>/dev/null
exit "$code"
`;

export interface SuperviseOptions {
  command: string;
  args: readonly string[];
  /** Appends the server's output (stdout and stderr) to this file... */
  logFile?: string;
  /** ...or hands it over line by line. */
  onLine?: (line: string) => void;
  /** How the server is asked to stop: SIGINT is a fast shutdown for postgres, SIGTERM a clean one for Kafka. */
  stopSignal: "SIGINT" | "SIGTERM";
  /** Seconds between the stop signal and SIGKILL. */
  graceSeconds: number;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** Run as this user (only possible as root). */
  uid?: number;
  gid?: number;
}

export interface Supervised {
  /** The server's pid (not the watchdog's). */
  readonly pid: number;
  /** Settles with the server's exit code when it ends, for whatever reason. */
  readonly exited: Promise<number | null>;
  /** Asks the server to stop and resolves once it has. */
  stop(): Promise<number | null>;
}

/** Starts `command` under a watchdog that stops it when this process dies. */
export async function supervise(opts: SuperviseOptions): Promise<Supervised> {
  const log = opts.logFile === undefined ? "pipe" : openSync(opts.logFile, "a");
  const sh = spawn(
    "/bin/sh",
    [
      "-c",
      WATCHDOG,
      "watchdog",
      opts.stopSignal.replace(/^SIG/, ""),
      String(opts.graceSeconds),
      opts.command,
      ...opts.args,
    ],
    {
      stdio: ["pipe", "pipe", log],
      env: opts.env ?? process.env,
      cwd: opts.cwd,
      uid: opts.uid,
      gid: opts.gid,
      // Own process group: a Ctrl-C meant for the test run must not reach the servers
      // before the tests are done with them; stop() ends them in order instead.
      detached: true,
    },
  );
  if (typeof log === "number") closeSync(log);
  const stdin = sh.stdin as Writable;
  // Closing stdin after the watchdog is gone raises EPIPE; there is nothing left to stop then.
  stdin.on("error", () => {});
  if (sh.stderr) {
    const onLine = opts.onLine ?? (() => {});
    createInterface({ input: sh.stderr }).on("line", onLine);
  }
  const exited = new Promise<number | null>((resolve) => sh.once("exit", (code) => resolve(code)));
  const pid = await new Promise<number>((resolve, reject) => {
    const lines = createInterface({ input: sh.stdout as Readable });
    lines.once("line", (line) => resolve(Number(line)));
    sh.once("error", reject);
    void exited.then((code) => reject(new Error(`${opts.command} exited before it started (code ${code})`)));
  });
  return {
    pid,
    exited,
    stop() {
      stdin.end();
      return exited;
    },
  };
}

/** The last lines of a server's log, for error messages. */
export async function tail(file: string, lines = 30): Promise<string> {
  const text = await readFile(file, "utf8").catch(() => "");
  return text.trimEnd().split("\n").slice(-lines).join("\n");
}
