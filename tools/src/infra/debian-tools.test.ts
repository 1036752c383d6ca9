import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { chmod, mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { delimiter, join } from "node:path";
import { afterEach, beforeEach, expect, it } from "vitest";
import { debianTool, type ToolSpec } from "./debian-tools.ts";

const hasDpkg = spawnSync("sh", ["-c", "command -v dpkg-deb"]).status === 0;
const spec: ToolSpec = {
  name: "saga-edge",
  envVar: "SAGA_TEST_EDGE",
  packages: ["saga-edge", "libsaga-edge0"],
};

let work: string;
let path: string | undefined;

/** A Debian package holding `files` (path in the system → content), built with dpkg-deb. */
async function deb(name: string, files: Record<string, string>): Promise<void> {
  const tree = join(work, "tree", name);
  await mkdir(join(tree, "DEBIAN"), { recursive: true });
  await writeFile(
    join(tree, "DEBIAN", "control"),
    `Package: ${name}\nVersion: 1.0\nArchitecture: all\nMaintainer: test <t@example.org>\nDescription: test\n`,
  );
  for (const [file, content] of Object.entries(files)) {
    await mkdir(join(tree, file, ".."), { recursive: true });
    await writeFile(join(tree, file), content);
  }
  const built = spawnSync("dpkg-deb", [
    "--root-owner-group",
    "--build",
    tree,
    join(work, "debs", `${name}.deb`),
  ]);
  if (built.status !== 0) throw new Error(`dpkg-deb: ${built.stderr}`);
}

beforeEach(async () => {
  work = await mkdtemp(join(tmpdir(), "debian-tools-"));
  await mkdir(join(work, "debs"));
  await deb("saga-edge", { "usr/sbin/saga-edge": "#!/bin/sh\n" });
  await deb("libsaga-edge0", { "usr/lib/x86_64-linux-gnu/libsaga-edge.so.0": "" });
  // An apt-get that "downloads" the packages built above into its working directory.
  await mkdir(join(work, "bin"));
  await writeFile(join(work, "bin", "apt-get"), `#!/bin/sh\ncp ${join(work, "debs")}/*.deb .\n`);
  await chmod(join(work, "bin", "apt-get"), 0o755);
  path = process.env.PATH;
  process.env.PATH = `${join(work, "bin")}${delimiter}${path}`;
});

afterEach(async () => {
  process.env.PATH = path;
  await rm(work, { recursive: true, force: true });
});

it.skipIf(!hasDpkg)("unpacks the tool and its libraries", async () => {
  const tool = await debianTool(spec, () => {}, join(work, "cache"));
  expect(existsSync(tool.binary)).toBe(true);
  expect(existsSync(join(tool.env.LD_LIBRARY_PATH ?? "", "libsaga-edge.so.0"))).toBe(true);
});

it.skipIf(!hasDpkg)(
  "unpacks again after an unpack interrupted with the binary there, a library not",
  async () => {
    const cache = join(work, "cache");
    await mkdir(join(cache, "saga-edge", "root", "usr", "sbin"), { recursive: true });
    await writeFile(join(cache, "saga-edge", "root", "usr", "sbin", "saga-edge"), "#!/bin/sh\n");
    const tool = await debianTool(spec, () => {}, cache);
    expect(existsSync(join(tool.env.LD_LIBRARY_PATH ?? "", "libsaga-edge.so.0"))).toBe(true);
  },
);
