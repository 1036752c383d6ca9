import { readdir, readFile } from "node:fs/promises";

/**
 * Stops `pids` with SIGSTOP, in order, and continues them with SIGCONT in reverse order after `ms`.
 * `frozen` holds them meanwhile, for a shutdown that must continue them first.
 */
export async function freezeFor(pids: number[], ms: number, frozen = new Set<number>()): Promise<void> {
  for (const pid of pids) {
    frozen.add(pid);
    signal(pid, "SIGSTOP");
  }
  try {
    await new Promise((resolve) => setTimeout(resolve, ms));
  } finally {
    for (const pid of [...pids].reverse()) {
      signal(pid, "SIGCONT");
      frozen.delete(pid);
    }
  }
}

/** Sends `name` to `pid`; a process gone meanwhile (a kill, a restart) has nothing to stop or continue. */
export function signal(pid: number, name: NodeJS.Signals): void {
  try {
    process.kill(pid, name);
  } catch {
    // Gone.
  }
}

/** The pids whose parent is `parent`, from /proc (Linux). */
export async function childPids(parent: number): Promise<number[]> {
  const children: number[] = [];
  for (const entry of await readdir("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    const ppid = Number((await processStat(Number(entry)))?.[1]);
    if (ppid === parent) children.push(Number(entry));
  }
  return children;
}

/** `/proc/<pid>/stat` after the command name: state, ppid, …; undefined once the process is gone. */
export async function processStat(pid: number): Promise<string[] | undefined> {
  const stat = await readFile(`/proc/${pid}/stat`, "utf8").catch(() => undefined);
  // `pid (comm) state ppid …`; comm may hold spaces and parentheses, so read after the last ')'.
  return stat?.slice(stat.lastIndexOf(")") + 2).split(" ");
}
