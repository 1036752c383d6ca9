import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdir, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { freePort, isAlive, isPortFree, supervise } from "@saga/tools/infra";
import { parse, stringify } from "yaml";
import { cacheDir } from "./paths.ts";

/** Whether Debian's `prometheus` and `promtool` are on the PATH (`npm run setup` installs them). */
export function hasPrometheus(): boolean {
  return ["prometheus", "promtool"].every(
    (command) => spawnSync("sh", ["-c", `command -v ${command}`], { stdio: "ignore" }).status === 0,
  );
}

/** Runs promtool; `output` is its stdout and stderr together. */
export function promtool(args: string[]): { code: number | null; output: string } {
  const result = spawnSync("promtool", args, { encoding: "utf8" });
  if (result.error) throw result.error;
  return { code: result.status, output: `${result.stdout}${result.stderr}` };
}

// `any`: a Prometheus configuration is free-form YAML.
export type PrometheusConfig = Record<string, any>;

/**
 * A configuration file, its `rule_files` made absolute (Prometheus reads them relative to the file, and
 * `startPrometheus` writes the configuration elsewhere).
 */
export async function loadPrometheusConfig(file: string): Promise<PrometheusConfig> {
  const config = parse(await readFile(file, "utf8")) as PrometheusConfig;
  if (Array.isArray(config.rule_files))
    config.rule_files = config.rule_files.map((f: string) => resolve(dirname(file), f));
  return config;
}

/** A configuration with one static job per entry: `{ gateway: ["127.0.0.1:8080"] }`. */
export function configForTargets(targets: Record<string, string[]>): PrometheusConfig {
  return {
    scrape_configs: Object.entries(targets).map(([job, addresses]) => ({
      job_name: job,
      honor_labels: true,
      static_configs: [{ targets: addresses }],
    })),
  };
}

export type Sample = { metric: Record<string, string>; value: [number, string] };
export type ScrapeTarget = {
  labels: Record<string, string>;
  scrapeUrl: string;
  health: "up" | "down" | "unknown";
  lastError: string;
};

export type PrometheusServer = {
  readonly url: string;
  /** Evaluates an instant query now. */
  query(expr: string): Promise<Sample[]>;
  /** Metric families the targets reported, with or without samples, by name. */
  metadata(): Promise<Record<string, { type: string; help: string }[]>>;
  targets(): Promise<ScrapeTarget[]>;
  /** Resolves once every target has been scraped `scrapes` more times; fails after `timeoutMs`. */
  waitForScrapes(scrapes?: number, timeoutMs?: number): Promise<ScrapeTarget[]>;
  stop(): Promise<void>;
};

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Starts Prometheus on 127.0.0.1 with a random free port and a data directory under
 * `.cache/prometheus/`, deleted on stop, with `config`'s scrape jobs scraped every `scrapeInterval`.
 * It runs under the watchdog that runs PostgreSQL and Kafka (`supervise`): it stops when this process
 * ends, SIGKILL included, and the next start deletes the data directory such an end left.
 */
export async function startPrometheus({
  config,
  scrapeInterval = "1s",
  port: fixedPort,
}: {
  config: PrometheusConfig;
  scrapeInterval?: string;
  /** Listen here instead of on a random free port. */
  port?: number;
}): Promise<PrometheusServer> {
  const port = fixedPort ?? (await freePort());
  // A Prometheus left on the port (by an earlier run killed before it could stop it) would answer the
  // readiness probe for ours, which dies on the taken port.
  if (!(await isPortFree(port))) throw new Error(`port ${port} is taken: is Prometheus already running?`);
  const runs = join(cacheDir, "prometheus");
  await removeAbandonedRuns(runs);
  const dir = join(runs, `run-${process.pid}-${randomBytes(4).toString("hex")}`);
  await mkdir(join(dir, "data"), { recursive: true });
  const configFile = join(dir, "prometheus.yml");
  const global = {
    ...config.global,
    scrape_interval: scrapeInterval,
    scrape_timeout: scrapeInterval,
    evaluation_interval: scrapeInterval,
  };
  await writeFile(configFile, stringify({ ...config, global }));

  const url = `http://127.0.0.1:${port}`;
  let output = "";
  const server = await supervise({
    command: "prometheus",
    args: [
      `--config.file=${configFile}`,
      `--storage.tsdb.path=${join(dir, "data")}`,
      `--web.listen-address=127.0.0.1:${port}`,
      "--log.level=warn",
    ],
    onLine: (line) => {
      output = `${output}${line}\n`.slice(-4000);
    },
    stopSignal: "SIGTERM",
    graceSeconds: 5,
  });
  let exitCode: number | null | undefined;
  void server.exited.then((code) => (exitCode = code));

  const stop = async () => {
    await server.stop();
    await rm(dir, { recursive: true, force: true });
  };

  async function api<T>(path: string, params: Record<string, string> = {}): Promise<T> {
    const res = await fetch(`${url}${path}?${new URLSearchParams(params)}`, {
      signal: AbortSignal.timeout(10_000),
    });
    const body = (await res.json()) as { status: string; data: T; error?: string };
    if (body.status !== "success") throw new Error(`Prometheus ${path}: ${body.error ?? res.status}`);
    return body.data;
  }

  const targets = async () =>
    (await api<{ activeTargets: (ScrapeTarget & { lastScrape: string })[] }>("/api/v1/targets"))
      .activeTargets;

  try {
    const deadline = Date.now() + 30_000;
    for (;;) {
      const ready = await fetch(`${url}/-/ready`).then(
        (r) => r.ok,
        () => false,
      );
      // Ready is ours only while our child runs.
      if (exitCode !== undefined)
        throw new Error(`prometheus exited during start-up (code ${exitCode}):\n${output}`);
      if (ready) break;
      if (Date.now() > deadline) throw new Error(`prometheus was not ready within 30 s:\n${output}`);
      await sleep(100);
    }
  } catch (err) {
    await stop();
    throw err;
  }

  return {
    url,
    async query(expr) {
      const data = await api<{ resultType: string; result: Sample[] }>("/api/v1/query", { query: expr });
      if (data.resultType !== "vector")
        throw new Error(`expected an instant vector from ${expr}, got ${data.resultType}`);
      return data.result;
    },
    metadata: () => api("/api/v1/metadata"),
    targets,
    async waitForScrapes(scrapes = 3, timeoutMs = 60_000) {
      const deadline = Date.now() + timeoutMs;
      const counts = new Map<string, { last: string; n: number }>();
      for (;;) {
        const active = await targets();
        for (const t of active) {
          const seen = counts.get(t.scrapeUrl) ?? { last: t.lastScrape, n: 0 };
          if (t.lastScrape !== seen.last) {
            seen.last = t.lastScrape;
            seen.n++;
          }
          counts.set(t.scrapeUrl, seen);
        }
        if (active.length > 0 && active.every((t) => (counts.get(t.scrapeUrl)?.n ?? 0) >= scrapes))
          return active;
        if (Date.now() > deadline)
          throw new Error(`targets were not scraped ${scrapes} times within ${timeoutMs} ms`);
        await sleep(200);
      }
    },
    stop,
  };
}

/** Data directories of processes that were killed before they could delete theirs. */
async function removeAbandonedRuns(runs: string): Promise<void> {
  const entries = await readdir(runs).catch(() => [] as string[]);
  await Promise.all(
    entries.map(async (entry) => {
      const pid = Number(/^run-(\d+)-/.exec(entry)?.[1]);
      if (pid > 0 && !isAlive(pid)) await rm(join(runs, entry), { recursive: true, force: true });
    }),
  );
}
