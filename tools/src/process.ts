import { readdir, readFile } from "node:fs/promises";

// /proc/<pid>/stat counts CPU time in clock ticks; 100 per second on Linux x86-64.
const TICKS_PER_SECOND = 100;

/** Its own CPU ticks, and those of its children that exited and were waited for (cutime + cstime). */
type ProcStat = { ppid: number; ticks: number; reaped: number };

async function readStats(): Promise<Map<number, ProcStat>> {
  const stats = new Map<number, ProcStat>();
  for (const entry of await readdir("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    const text = await readFile(`/proc/${entry}/stat`, "utf8").catch(() => undefined);
    if (!text) continue;
    // The command name may hold spaces; the fields after its closing parenthesis do not.
    const fields = text.slice(text.lastIndexOf(")") + 2).split(" ");
    stats.set(Number(entry), {
      ppid: Number(fields[1]),
      ticks: Number(fields[11]) + Number(fields[12]),
      reaped: Number(fields[13]) + Number(fields[14]),
    });
  }
  return stats;
}

/**
 * The processes counted for each named root, from one reading of /proc: the root alone, or the root and
 * all its live descendants.
 */
async function processTrees(roots: Record<string, number>, alone: string[]) {
  const stats = await readStats();
  const children = new Map<number, number[]>();
  for (const [pid, s] of stats) children.set(s.ppid, [...(children.get(s.ppid) ?? []), pid]);
  const tree = (pid: number): number[] => [pid, ...(children.get(pid) ?? []).flatMap(tree)];
  const trees = Object.entries(roots).map(
    ([name, pid]) => [name, alone.includes(name) ? [pid] : tree(pid)] as const,
  );
  return { stats, trees };
}

/**
 * CPU seconds used so far by each named process and all its descendants (a PostgreSQL server is a
 * postmaster and one backend per connection). Descendants that already exited count through their
 * parent, once it has waited for them (a postmaster does at once): without them a backend that ends
 * between two readings would take its whole life's CPU out of the difference.
 */
export async function cpuSeconds(
  roots: Record<string, number>,
  /** Roots counted alone: the benchmark's own process is the parent of everything it started. */
  alone: string[] = [],
): Promise<Record<string, number>> {
  const { stats, trees } = await processTrees(roots, alone);
  return Object.fromEntries(
    trees.map(([name, pids]) => {
      const reaped = !alone.includes(name);
      const ticks = pids.reduce(
        (sum, pid) => sum + (stats.get(pid)?.ticks ?? 0) + (reaped ? (stats.get(pid)?.reaped ?? 0) : 0),
        0,
      );
      return [name, ticks / TICKS_PER_SECOND];
    }),
  );
}

/** Each named process's threads (and its live descendants'), by `pid/tid`, with their wake-ups so far. */
export type WakeupCounts = Record<string, Map<string, number>>;

/**
 * Times each named process and its live descendants have been woken so far: the voluntary context
 * switches of all their threads (a thread that blocked, on a socket, a lock, a disk flush, and was woken
 * again). At low rates a process pays for each wake-up more than for the work it then does (its caches
 * are cold), so CPU per saga follows how many wake-ups a saga causes. Counted per thread, for
 * `wakeupsBetween`.
 */
export async function wakeups(
  roots: Record<string, number>,
  /** Roots counted alone (see `cpuSeconds`). */
  alone: string[] = [],
): Promise<WakeupCounts> {
  const { trees } = await processTrees(roots, alone);
  const out: WakeupCounts = {};
  for (const [name, pids] of trees) {
    const threads = new Map<string, number>();
    for (const pid of pids)
      for (const tid of await readdir(`/proc/${pid}/task`).catch(() => [] as string[])) {
        const text = await readFile(`/proc/${pid}/task/${tid}/status`, "utf8").catch(() => "");
        const count = /^voluntary_ctxt_switches:\s+(\d+)/m.exec(text)?.[1];
        if (count !== undefined) threads.set(`${pid}/${tid}`, Number(count));
      }
    out[name] = threads;
  }
  return out;
}

/**
 * The wake-ups of each named process between two readings, from the threads alive at the second: a
 * thread that started meanwhile counts from zero (also one that took an exited thread's id, whose count
 * is lower), and one that exited meanwhile is left out (/proc keeps no total for it). A total over the
 * whole tree went negative when a PostgreSQL backend with many wake-ups behind it exited in between.
 */
export function wakeupsBetween(before: WakeupCounts, after: WakeupCounts): Record<string, number> {
  return Object.fromEntries(
    Object.entries(after).map(([name, threads]) => {
      let sum = 0;
      for (const [thread, count] of threads) {
        const earlier = before[name]?.get(thread) ?? 0;
        sum += count >= earlier ? count - earlier : count;
      }
      return [name, sum];
    }),
  );
}

/**
 * Extra flags for the Node processes a run starts, from SAGA_NODE_FLAGS: for instance
 * "--cpu-prof --cpu-prof-dir=/tmp/prof" to profile them (Node refuses --cpu-prof in NODE_OPTIONS).
 */
export function nodeFlags(): string[] {
  return (process.env.SAGA_NODE_FLAGS ?? "").split(/\s+/).filter(Boolean);
}
