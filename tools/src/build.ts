import { cp, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { build } from "esbuild";
import { defineCli } from "./cli.ts";
import { repoRoot } from "./infra/index.ts";

/**
 * `npm run build`: the production build. Each process becomes one ES module with every dependency
 * inside it (`dist/bin/<name>.mjs`, with a source map), and the SQL migrations are copied beside them,
 * so `dist/` runs on its own: no node_modules, no loader, nothing resolved or transpiled at start-up.
 *
 * Why a bundle rather than Node's own type stripping of `src/`: measured back to back on Node 24.22,
 * importing order-service's module graph took 0.5–1.1 s bundled against 6–8 s from `src/` (Node 22+
 * reads package.json scopes far more slowly than 20 did, and drizzle-orm's is 175 kB; nodejs/node#60397).
 */
export const PROCESSES = {
  gateway: "services/gateway/src/main.ts",
  "user-service": "services/user-service/src/main.ts",
  "order-service": "services/order-service/src/main.ts",
  relay: "relay/src/main.ts",
} as const;

export type ProcessName = keyof typeof PROCESSES;

export const distDir = join(repoRoot, "dist");

/** The bundle a process runs from, relative to the repository root. */
export const bundleOf = (name: ProcessName) => `dist/bin/${name}.mjs`;

export async function buildAll(log: (line: string) => void = () => {}): Promise<void> {
  const started = performance.now();
  // No clean first: a system already running from dist/ (npm start beside a test run) restarts from
  // whole files; esbuild replaces each bundle with one write.
  await build({
    entryPoints: Object.fromEntries(
      Object.entries(PROCESSES).map(([name, entry]) => [name, join(repoRoot, entry)]),
    ),
    outdir: join(distDir, "bin"),
    outExtension: { ".js": ".mjs" },
    bundle: true,
    platform: "node",
    format: "esm",
    target: "node24",
    sourcemap: true,
    // Bundled CommonJS (kafkajs, pg) calls require() for Node's own modules. Under a name of its own:
    // @platformatic/kafka imports createRequire itself, and the bundle keeps that import as it is.
    banner: {
      js: 'import { createRequire as createRequireForBundle } from "node:module"; const require = createRequireForBundle(import.meta.url);',
    },
    // @platformatic/kafka's CRC32C and compression are WebAssembly that wasm-utils reads from a file beside
    // its own module at import; its `bundled` entry carries the same module inline, for bundles like ours.
    alias: { "@platformatic/wasm-utils": "@platformatic/wasm-utils/bundled" },
    // pg's optional native binding, which we never load.
    external: ["pg-native"],
    logLevel: "warning",
  });
  // db/src/migrate.ts finds them at ../migrations from the module that runs it: dist/bin/<name>.mjs.
  await cp(join(repoRoot, "db/migrations"), join(distDir, "migrations"), { recursive: true });
  await writeFile(
    join(distDir, "package.json"),
    `${JSON.stringify({ type: "module", private: true }, null, 2)}\n`,
  );
  log(
    `build: ${Object.keys(PROCESSES).length} processes in dist/ in ${((performance.now() - started) / 1000).toFixed(1)}s`,
  );
}

const buildCli = defineCli({
  name: "build",
  command: "npm run build --",
  about: "The production build: each process bundled into dist/bin/<name>.mjs, the migrations beside them.",
  options: {},
});

if (import.meta.main) {
  buildCli.parseOrExit(process.argv.slice(2));
  buildAll((line) => console.log(line)).catch((err) => {
    console.error(err);
    process.exit(1);
  });
}
