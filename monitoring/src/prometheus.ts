import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { freePort } from "@saga/tools/infra";
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
  const dir = join(cacheDir, "prometheus", `run-${randomBytes(4).toString("hex")}`);
  await mkdir(join(dir, "data"), { recursive: true });
  const configFile = join(dir, "prometheus.yml");
  const global = {
    ...config.global,
    scrape_interval: scrapeInterval,
    scrape_timeout: scrapeInterval,
    evaluation_interval: scrapeInterval,
  };
  await writeFile(configFile, stringify({ ...config, global }));

  const port = fixedPort ?? (await freePort());
  const url = `http://127.0.0.1:${port}`;
  let output = "";
  const child: ChildProcess = spawn(
    "prometheus",
    [
      `--config.file=${configFile}`,
      `--storage.tsdb.path=${join(dir, "data")}`,
      `--web.listen-address=127.0.0.1:${port}`,
      "--log.level=warn",
    ],
    { stdio: ["ignore", "pipe", "pipe"] },
  );
  const collect = (chunk: Buffer) => {
    output = (output + chunk.toString()).slice(-4000);
  };
  child.stdout?.on("data", collect);
  child.stderr?.on("data", collect);
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  // Prometheus must not outlive the process that started it.
  const killOnExit = () => child.kill("SIGKILL");
  process.once("exit", killOnExit);

  const stop = async () => {
    process.off("exit", killOnExit);
    if (child.exitCode === null && child.signalCode === null) {
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 5000);
      await exited;
      clearTimeout(timer);
    }
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
      if (child.exitCode !== null) throw new Error(`prometheus exited during start-up:\n${output}`);
      const ready = await fetch(`${url}/-/ready`).then(
        (r) => r.ok,
        () => false,
      );
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
