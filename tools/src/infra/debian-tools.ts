import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, readdir, rename, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { Log } from "./kafka.ts";
import { cacheDir } from "./paths.ts";

/** A program of the bench's edge experiments (tools/system/src/stack/edge.ts), ready to run. */
export type Tool = {
  binary: string;
  /** What it needs in its environment: `LD_LIBRARY_PATH` for libraries unpacked beside it. */
  env: Record<string, string>;
};

export type ToolSpec = {
  name: string;
  /** The environment variable that names a binary to use instead. */
  envVar: string;
  /** Debian's packages to unpack: the tool's, then the libraries it links that a base image lacks. */
  packages: string[];
};

/**
 * `spec.envVar`, the tool on the PATH, or Debian's packages unpacked into .cache/<name> (`apt-get
 * download` and `dpkg -x`: no root, no daemon started, nothing installed on the system). Throws with the
 * reason when none can be had. The packages are unpacked beside `root/` and renamed into it once all are,
 * with a stamp: a run interrupted meanwhile (its binary there, a library not) is done again.
 */
export async function debianTool(spec: ToolSpec, log: Log, cache = cacheDir): Promise<Tool> {
  const given = process.env[spec.envVar];
  if (given) return { binary: given, env: {} };
  const onPath = spawnSync("sh", ["-c", `command -v ${spec.name} || ls /usr/sbin/${spec.name}`], {
    encoding: "utf8",
  });
  const found = onPath.status === 0 ? onPath.stdout.trim().split("\n")[0] : undefined;
  if (found) return { binary: found, env: {} };
  const dir = join(cache, spec.name);
  const root = join(dir, "root");
  const stamp = join(root, ".unpacked");
  const unpacked: Tool = {
    binary: join(root, "usr", "sbin", spec.name),
    env: { LD_LIBRARY_PATH: join(root, "usr", "lib", "x86_64-linux-gnu") },
  };
  if (existsSync(stamp)) return unpacked;
  log(`${spec.name}: fetching Debian's packages into .cache/${spec.name} (first run only)`);
  await rm(dir, { recursive: true, force: true });
  await mkdir(dir, { recursive: true });
  const run = (args: string[]) => {
    const result = spawnSync(args[0] as string, args.slice(1), { cwd: dir, encoding: "utf8" });
    if (result.status !== 0)
      throw new Error(
        `${spec.name}: \`${args.join(" ")}\` failed (code ${result.status}): ${result.stderr.trim()}`,
      );
  };
  const download = ["apt-get", "download", "-qq", ...spec.packages];
  try {
    run(download);
  } catch (err) {
    // A machine whose package lists were never fetched (a fresh image) knows of no package yet.
    if (process.getuid?.() !== 0) throw err;
    run(["apt-get", "update", "-qq"]);
    run(download);
  }
  const debs = (await readdir(dir)).filter((f) => f.endsWith(".deb"));
  if (debs.length !== spec.packages.length)
    throw new Error(`${spec.name}: apt-get download left ${debs.length} of ${spec.packages.length} packages`);
  const staging = `root.${process.pid}`;
  for (const deb of debs) run(["dpkg", "-x", deb, staging]);
  if (!existsSync(join(dir, staging, "usr", "sbin", spec.name)))
    throw new Error(`${spec.name}: no usr/sbin/${spec.name} in its package`);
  await writeFile(join(dir, staging, ".unpacked"), `${debs.join("\n")}\n`);
  await rename(join(dir, staging), root);
  return unpacked;
}

/** nginx: `SAGA_NGINX`, one on the PATH, or Debian's package. */
export const nginxTool = (log: Log) =>
  debianTool({ name: "nginx", envVar: "SAGA_NGINX", packages: ["nginx"] }, log);

/**
 * HAProxy: `SAGA_HAPROXY`, one on the PATH, or Debian's package with the three libraries it links that
 * a base image lacks (Lua and OpenTracing's).
 */
export const haproxyTool = (log: Log) =>
  debianTool(
    {
      name: "haproxy",
      envVar: "SAGA_HAPROXY",
      packages: ["haproxy", "liblua5.3-0", "libopentracing-c-wrapper0", "libopentracing1"],
    },
    log,
  );
