import { readFileSync } from "node:fs";
import { join } from "node:path";
import { monitoringDir } from "./paths.ts";

export type MetricName = { name: string; type: string; exportedBy: string };

/**
 * The metric names the dashboards depend on: the table between the `metric-names` markers of
 * monitoring/README.md, the one place that lists them.
 */
export function dependedMetricNames(readme = join(monitoringDir, "README.md")): MetricName[] {
  const text = readFileSync(readme, "utf8");
  const section = /<!-- metric-names:start -->([\s\S]*?)<!-- metric-names:end -->/.exec(text)?.[1];
  if (!section) throw new Error(`${readme} has no metric-names section`);
  return section
    .split("\n")
    .map((line) => /^\|\s*`([^`]+)`\s*\|\s*([^|]+?)\s*\|[^|]*\|\s*([^|]+?)\s*\|/.exec(line))
    .filter((m) => m !== null)
    .map((m) => ({ name: m[1] as string, type: m[2] as string, exportedBy: m[3] as string }));
}

/** The family a sample name belongs to in Prometheus' metadata: `x_bucket` → `x` for a histogram. */
export function familyOf({ name, type }: MetricName): string {
  return type === "histogram" ? name.replace(/_(bucket|sum|count)$/, "") : name;
}
