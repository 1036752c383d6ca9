import { describe, expect, it } from "vitest";
import { prometheusConfigs } from "../src/paths.ts";
import { hasPrometheus, loadPrometheusConfig, promtool } from "../src/prometheus.ts";

// CI installs Prometheus with `npm run setup`; a developer without it skips what needs it.
const withPrometheus = hasPrometheus() || Boolean(process.env.CI);

function targetsByJob(config: Awaited<ReturnType<typeof loadPrometheusConfig>>): Record<string, string[]> {
  return Object.fromEntries(
    config.scrape_configs.map((job: { job_name: string; static_configs: { targets: string[] }[] }) => [
      job.job_name,
      job.static_configs.flatMap((s) => s.targets),
    ]),
  );
}

describe("prometheus configs", () => {
  it.runIf(withPrometheus).each(Object.entries(prometheusConfigs))(
    "%s passes promtool check config",
    (_name, file) => {
      const { code, output } = promtool(["check", "config", file]);
      expect(output).toContain("SUCCESS");
      expect(code).toBe(0);
    },
  );

  it("scrape the local run at the ports of docs/design.md", async () => {
    const config = await loadPrometheusConfig(prometheusConfigs.local);
    expect(targetsByJob(config)).toEqual({
      gateway: ["127.0.0.1:9480"],
      "user-service": ["127.0.0.1:8081", "127.0.0.1:8082"],
      "order-service": ["127.0.0.1:8091"],
      relay: ["127.0.0.1:9400", "127.0.0.1:9401"],
    });
    for (const job of config.scrape_configs) expect(job.metrics_path ?? "/metrics").toBe("/metrics");
  });

  it("scrape the same jobs in Compose, each with the labels of its process", async () => {
    const local = await loadPrometheusConfig(prometheusConfigs.local);
    const compose = await loadPrometheusConfig(prometheusConfigs.compose);
    const jobs = (c: typeof local) => c.scrape_configs.map((j: { job_name: string }) => j.job_name);
    expect(jobs(compose)).toEqual([...jobs(local), "prometheus"]);
    for (const config of [local, compose]) {
      for (const job of config.scrape_configs)
        if (job.job_name !== "prometheus") expect(job.honor_labels, job.job_name).toBe(true);
    }
  });
});
