import { readFile, writeFile } from "node:fs/promises";
import { setPriority } from "node:os";

/**
 * Gives a process a CPU priority (a nice value, -20 to 19; lower is more CPU under contention).
 *
 * Why it is needed: every server here runs in a session of its own (`supervise` detaches it), and Linux
 * with autogroups (the default of desktop and server kernels) shares the CPU fairly between sessions, not
 * processes: under saturation each of the system's processes gets the same slice, whatever it needs, and a
 * process's own nice value only ranks it within its session. The nice value that counts between sessions is
 * the session's (`/proc/<pid>/autogroup`), so that is what is set when autogroups are on; otherwise the
 * process's own (its main thread's, on Linux).
 *
 * Raising a priority needs root or CAP_SYS_NICE: without it, or on a kernel that does not let it, the
 * answer is `false` and nothing changed.
 */
export async function setCpuPriority(pid: number, nice: number): Promise<boolean> {
  try {
    const autogroups = await readFile("/proc/sys/kernel/sched_autogroup_enabled", "utf8").catch(() => "0");
    if (autogroups.trim() === "1") await writeFile(`/proc/${pid}/autogroup`, String(nice));
    else setPriority(pid, nice);
    return true;
  } catch {
    return false;
  }
}
