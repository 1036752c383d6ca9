import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { parse, stringify } from "yaml";
import {
  GRAFANA_VARIABLES,
  loadDashboards,
  metricNamesIn,
  panelsOf,
  queriesOf,
  substituteVariables,
} from "../src/dashboards.ts";
import { dependedMetricNames } from "../src/metric-names.ts";
import { alertRules, monitoringDir } from "../src/paths.ts";
import { hasPrometheus, promtool } from "../src/prometheus.ts";

const dashboards = loadDashboards();
const queries = [...dashboards.values()].flatMap(queriesOf);

describe("dashboards", () => {
  it("are the two of the issue, with unique uids and titles", () => {
    expect([...dashboards.keys()]).toEqual(["saga-relay.json", "services.json"]);
    const all = [...dashboards.values()];
    expect(all.map((d) => d.title).sort()).toEqual(["Saga & relay", "Services"]);
    expect(new Set(all.map((d) => d.uid)).size).toBe(all.length);
  });

  it.each([...dashboards.entries()])(
    "%s: unique panel ids, every panel placed and on the provisioned data source",
    (_file, dashboard) => {
      const datasources = parse(
        readFileSync(join(monitoringDir, "grafana/provisioning/datasources/prometheus.yml"), "utf8"),
      );
      const uid = datasources.datasources[0].uid;
      const panels = panelsOf(dashboard);
      expect(new Set(panels.map((p) => p.id)).size).toBe(panels.length);
      for (const panel of panels) {
        expect(panel.gridPos.x + panel.gridPos.w, panel.title).toBeLessThanOrEqual(24);
        if (panel.type === "row") continue;
        expect(panel.targets?.length, panel.title).toBeGreaterThan(0);
        expect(panel.datasource, panel.title).toEqual({ type: "prometheus", uid });
        for (const target of panel.targets ?? [])
          expect(target.datasource, panel.title).toEqual({ type: "prometheus", uid });
      }
    },
  );

  it("name in their legends only labels that their query keeps (its by (...))", () => {
    for (const dashboard of dashboards.values())
      for (const panel of panelsOf(dashboard))
        for (const { expr, legendFormat = "" } of panel.targets ?? []) {
          const kept = [...expr.matchAll(/\bby \(([^)]*)\)/g)].flatMap((m) => (m[1] ?? "").split(/,\s*/));
          const named = [...legendFormat.matchAll(/\{\{\s*(\w+)\s*\}\}/g)].map((m) => m[1]);
          for (const label of named) expect(kept, `${panel.title}: ${legendFormat}`).toContain(label);
        }
  });

  it.each([
    ["Consumer lag by group and topic", "ConsumerLagHigh"],
    ["Relay lag per outbox", "RelayLagHigh"],
  ])("%s aggregates as %s does", (title, alert) => {
    const rule = (
      parse(readFileSync(alertRules.rules, "utf8")) as {
        groups: { rules: { alert: string; expr: string }[] }[];
      }
    ).groups
      .flatMap((g) => g.rules)
      .find((r) => r.alert === alert);
    const [panel] = queries.filter((q) => q.panel === title);
    expect(rule?.expr.replace(/\s*>\s*[\d.]+$/, "")).toBe(panel?.expr);
  });

  it("use no Grafana variable that a plain Prometheus query could not stand for", () => {
    for (const { expr } of queries) {
      const variables = expr.match(/\$\w+/g) ?? [];
      for (const v of variables) expect(GRAFANA_VARIABLES, expr).toContain(v);
    }
  });

  it("depend on exactly the metric names listed in monitoring/README.md", () => {
    const listed = dependedMetricNames().map((m) => m.name);
    expect(new Set(listed).size).toBe(listed.length);
    const used = new Set(queries.flatMap((q) => metricNamesIn(q.expr)));
    expect([...used].sort()).toEqual([...listed].sort());
  });

  it.runIf(hasPrometheus() || process.env.CI)("have valid PromQL (promtool check rules)", () => {
    const dir = mkdtempSync(join(tmpdir(), "dashboards-"));
    try {
      const rules = queries.map((q, i) => ({
        record: `dashboard:query_${i}`,
        expr: substituteVariables(q.expr),
      }));
      const file = join(dir, "rules.yml");
      writeFileSync(file, stringify({ groups: [{ name: "dashboards", rules }] }));
      const { code, output } = promtool(["check", "rules", file]);
      expect(output).toContain(`SUCCESS: ${rules.length} rules found`);
      expect(code).toBe(0);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("metricNamesIn", () => {
  it.each([
    ["sum by (job) (1 - up)", ["up"]],
    [
      'sum by (service, route) (rate(http_requests_total{status=~"5..", route!="/x"}[1m])) or vector(0)',
      ["http_requests_total"],
    ],
    [
      "histogram_quantile(0.95, sum by (le) (rate(a_bucket[$__rate_interval]))) / on (x) group_left (y) b",
      ["a_bucket", "b"],
    ],
  ])("%s", (expr, names) => {
    expect(metricNamesIn(expr)).toEqual(names);
  });
});
