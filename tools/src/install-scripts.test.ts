import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { expect, test } from "vitest";
import { repoRoot } from "./infra/index.ts";

const NODE_MODULES = "node_modules/";

type Lockfile = { packages: Record<string, { version?: string; hasInstallScript?: boolean }> };

// npm 12 skips the install scripts of dependencies that package.json's `allowScripts` does not name, and
// npm 11 runs them with a warning: every one must be decided in the repository, or a new dependency's
// script would run unreviewed on one npm and silently not at all on the next. Checked from the lockfile,
// so it holds for every platform's packages and whatever npm runs the tests.
test("every dependency with an install script is approved or denied in package.json's allowScripts", async () => {
  const [pkg, lock] = await Promise.all(
    ["package.json", "package-lock.json"].map(async (file) =>
      JSON.parse(await readFile(join(repoRoot, file), "utf8")),
    ),
  );
  // A pinned entry (`name@1.2.3`) decides that version; a name alone, every version.
  const decided = new Set(
    Object.keys((pkg as { allowScripts?: Record<string, boolean> }).allowScripts ?? {}),
  );
  const undecided = Object.entries((lock as Lockfile).packages).flatMap(([path, meta]) => {
    // The root and the workspaces are ours, not dependencies.
    const at = path.lastIndexOf(NODE_MODULES);
    if (at === -1) return [];
    const name = path.slice(at + NODE_MODULES.length);
    const decidedHere = decided.has(name) || decided.has(`${name}@${meta.version}`);
    return meta.hasInstallScript && !decidedHere ? [`${name}@${meta.version}`] : [];
  });
  expect(undecided).toEqual([]);
});
