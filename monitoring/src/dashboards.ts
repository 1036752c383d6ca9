import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { dashboardsDir } from "./paths.ts";

type Target = {
  refId: string;
  expr: string;
  legendFormat?: string;
  datasource?: { type: string; uid: string };
};
export type Panel = {
  id: number;
  type: string;
  title: string;
  datasource?: { type: string; uid: string };
  gridPos: { h: number; w: number; x: number; y: number };
  targets?: Target[];
  panels?: Panel[];
};
export type Dashboard = { uid: string; title: string; panels: Panel[] };

/** One PromQL expression of a dashboard, with where it is. */
export type DashboardQuery = { dashboard: string; panel: string; refId: string; expr: string };

/** Every dashboard JSON of monitoring/grafana/dashboards, by file name. */
export function loadDashboards(dir = dashboardsDir): Map<string, Dashboard> {
  const dashboards = new Map<string, Dashboard>();
  for (const file of readdirSync(dir)
    .filter((f) => f.endsWith(".json"))
    .sort()) {
    dashboards.set(file, JSON.parse(readFileSync(join(dir, file), "utf8")) as Dashboard);
  }
  return dashboards;
}

/** Panels, those inside collapsed rows included. */
export function panelsOf(dashboard: Dashboard): Panel[] {
  return dashboard.panels.flatMap((p) => [p, ...(p.panels ?? [])]);
}

export function queriesOf(dashboard: Dashboard): DashboardQuery[] {
  return panelsOf(dashboard).flatMap((panel) =>
    (panel.targets ?? []).map((t) => ({
      dashboard: dashboard.title,
      panel: panel.title,
      refId: t.refId,
      expr: t.expr,
    })),
  );
}

/** The Grafana variables our dashboards may use; any other `$` makes an expression unusable outside Grafana. */
export const GRAFANA_VARIABLES = ["$__rate_interval", "$__interval", "$__range"] as const;

/**
 * The expression as Prometheus would receive it from Grafana. `$__rate_interval` is at least four
 * scrape intervals in Grafana; give what fits the Prometheus that evaluates it.
 * https://grafana.com/docs/grafana/latest/datasources/prometheus/template-variables/
 */
export function substituteVariables(expr: string, { rateInterval = "1m", range = "5m" } = {}): string {
  return expr
    .replaceAll("$__rate_interval", rateInterval)
    .replaceAll("$__interval", rateInterval)
    .replaceAll("$__range", range);
}

const KEYWORDS = new Set([
  "and",
  "or",
  "unless",
  "bool",
  "offset",
  "by",
  "without",
  "on",
  "ignoring",
  "group_left",
  "group_right",
  "inf",
  "nan",
]);

/**
 * The metric names an expression selects, for the simple PromQL our dashboards use: identifiers that
 * are not functions, keywords, label names in matchers or grouping clauses, nor inside strings or ranges.
 */
export function metricNamesIn(expr: string): string[] {
  const stripped = expr
    .replace(/"(?:[^"\\]|\\.)*"/g, '""')
    .replace(/\{[^}]*\}/g, " ")
    .replace(/\[[^\]]*\]/g, " ")
    .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, " ");
  const names = new Set<string>();
  for (const match of stripped.matchAll(/(?<![\w.$])[a-zA-Z_:][\w:]*/g)) {
    const rest = stripped.slice((match.index ?? 0) + match[0].length);
    if (/^\s*\(/.test(rest) || KEYWORDS.has(match[0].toLowerCase())) continue;
    names.add(match[0]);
  }
  return [...names].sort();
}
