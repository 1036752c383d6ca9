import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, readdir, rm } from "node:fs/promises";
import { join } from "node:path";
import type { Log } from "./kafka.ts";
import { cacheDir } from "./paths.ts";

const dir = join(cacheDir, "nginx");
const unpacked = join(dir, "root", "usr", "sbin", "nginx");

/**
 * An nginx binary for the bench's edge experiment (tools/system/src/stack/edge.ts): `SAGA_NGINX`, one on
 * the PATH, or Debian's package unpacked into .cache/nginx (`apt-get download` and `dpkg -x`: no root, no
 * daemon started, nothing installed on the system). Throws with the reason when none can be had.
 */
export async function nginxBinary(log: Log): Promise<string> {
  const given = process.env.SAGA_NGINX;
  if (given) return given;
  const onPath = spawnSync("sh", ["-c", "command -v nginx || ls /usr/sbin/nginx"], { encoding: "utf8" });
  const found = onPath.status === 0 ? onPath.stdout.trim().split("\n")[0] : undefined;
  if (found) return found;
  if (existsSync(unpacked)) return unpacked;
  log("nginx: fetching Debian's package into .cache/nginx (first run only)");
  await rm(dir, { recursive: true, force: true });
  await mkdir(dir, { recursive: true });
  const run = (args: string[]) => {
    const result = spawnSync(args[0] as string, args.slice(1), { cwd: dir, encoding: "utf8" });
    if (result.status !== 0)
      throw new Error(`nginx: \`${args.join(" ")}\` failed (code ${result.status}): ${result.stderr.trim()}`);
  };
  try {
    run(["apt-get", "download", "-qq", "nginx"]);
  } catch (err) {
    // A machine whose package lists were never fetched (a fresh image) knows of no package yet.
    if (process.getuid?.() !== 0) throw err;
    run(["apt-get", "update", "-qq"]);
    run(["apt-get", "download", "-qq", "nginx"]);
  }
  const deb = (await readdir(dir)).find((f) => f.endsWith(".deb"));
  if (!deb) throw new Error("nginx: apt-get download left no package");
  run(["dpkg", "-x", deb, "root"]);
  if (!existsSync(unpacked)) throw new Error(`nginx: no ${unpacked} in ${deb}`);
  return unpacked;
}
