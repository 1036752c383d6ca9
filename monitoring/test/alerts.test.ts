import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it, onTestFinished } from "vitest";
import { parse } from "yaml";
import { metricNamesIn } from "../src/dashboards.ts";
import { dependedMetricNames } from "../src/metric-names.ts";
import { alertRules, prometheusConfigs, repoRoot } from "../src/paths.ts";
import { hasPrometheus, loadPrometheusConfig, promtool, startPrometheus } from "../src/prometheus.ts";

// CI installs Prometheus with `npm run setup`; a developer without it skips what needs it.
const withPrometheus = hasPrometheus() || Boolean(process.env.CI);

type Rule = { alert: string; expr: string; for?: string };
type Case = { alertname: string; exp_alerts: unknown[] };
const rules = (
  parse(readFileSync(alertRules.rules, "utf8")) as { groups: { rules: Rule[] }[] }
).groups.flatMap((g) => g.rules);
const alerts = rules.map((r) => r.alert);
const cases = (
  parse(readFileSync(alertRules.tests, "utf8")) as { tests: { alert_rule_test: Case[] }[] }
).tests.flatMap((t) => t.alert_rule_test);

describe("alert rules", () => {
  it("are the alerts of the issue", () => {
    expect(alerts.sort()).toEqual([
      "ConsumerLagHigh",
      "ConsumerPartitionStuck",
      "ConsumerSkippedRecords",
      "DeadLetters",
      "JobDown",
      "OutboxWithoutOwner",
      "ProcessDown",
      "RelayLagHigh",
      "SagaPastDeadline",
    ]);
  });

  it.each(alerts)("%s has a test in which it fires and one in which it stays silent", (alert) => {
    const mine = cases.filter((c) => c.alertname === alert);
    expect(mine.some((c) => c.exp_alerts.length > 0)).toBe(true);
    expect(mine.some((c) => c.exp_alerts.length === 0)).toBe(true);
  });

  // promtool tests a rule on the series its test file makes up: a rule and its test renamed alike pass,
  // and a rule that reads a series no process exports never fires (or, behind `unless`, always does).
  // monitoring/README.md lists what the processes export, and the dashboard check holds them to it.
  it.each(rules.map((r) => [r.alert, r.expr]))(
    "%s reads only metrics the processes export",
    (alert, expr) => {
      const exported = dependedMetricNames().map((m) => m.name);
      const read = metricNamesIn(expr);
      expect(read.length, alert).toBeGreaterThan(0);
      for (const name of read) expect(exported, `${alert} reads ${name}`).toContain(name);
    },
  );

  it.runIf(withPrometheus)("pass promtool check rules and promtool test rules", () => {
    const checked = promtool(["check", "rules", alertRules.rules]);
    expect(checked.output).toContain(`SUCCESS: ${alerts.length} rules found`);
    expect(checked.code).toBe(0);
    const tested = promtool(["test", "rules", alertRules.tests]);
    expect(tested.output).toContain("SUCCESS");
    expect(tested.code, tested.output).toBe(0);
  });

  it.each(["ProcessDown", "JobDown"])(
    "%s watches every job of the saga that both configurations scrape",
    async (alert) => {
      const expr = rules.find((r) => r.alert === alert)?.expr ?? "";
      const watched = /up\{job=~"([^"]+)"\}/.exec(expr)?.[1]?.split("|");
      for (const file of Object.values(prometheusConfigs)) {
        const jobs = ((await loadPrometheusConfig(file)).scrape_configs as { job_name: string }[])
          .map((c) => c.job_name)
          .filter((job) => job !== "prometheus");
        expect(watched?.sort(), file).toEqual(jobs.sort());
      }
    },
  );

  it("are loaded by both Prometheus configurations, and Compose mounts them beside its own", async () => {
    for (const file of Object.values(prometheusConfigs))
      expect((await loadPrometheusConfig(file)).rule_files).toEqual([alertRules.rules]);
    const compose = parse(readFileSync(join(repoRoot, "compose.yaml"), "utf8"));
    expect(compose.services.prometheus.volumes).toEqual(
      expect.arrayContaining([
        "./monitoring/prometheus/prometheus.compose.yml:/etc/prometheus/prometheus.yml:ro",
        "./monitoring/prometheus/alerts.yml:/etc/prometheus/alerts.yml:ro",
      ]),
    );
  });

  it.runIf(withPrometheus)("are evaluated by the Prometheus that `npm start` runs", async () => {
    const prometheus = await startPrometheus({ config: await loadPrometheusConfig(prometheusConfigs.local) });
    onTestFinished(() => prometheus.stop());
    const res = await fetch(`${prometheus.url}/api/v1/rules?type=alert`);
    const body = (await res.json()) as { data: { groups: { rules: { name: string; health: string }[] }[] } };
    const loaded = body.data.groups.flatMap((g) => g.rules);
    expect(loaded.map((r) => r.name).sort()).toEqual([...alerts].sort());
  });
});
