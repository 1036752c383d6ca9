import { join } from "node:path";
import { cacheDir, repoRoot } from "@saga/tools/infra";

export { cacheDir, repoRoot };

/** monitoring/ */
export const monitoringDir = join(repoRoot, "monitoring");

export const prometheusConfigs = {
  local: join(monitoringDir, "prometheus", "prometheus.yml"),
  compose: join(monitoringDir, "prometheus", "prometheus.compose.yml"),
};

/** The alert rules both configurations load, and their `promtool test rules` file. */
export const alertRules = {
  rules: join(monitoringDir, "prometheus", "alerts.yml"),
  tests: join(monitoringDir, "prometheus", "alerts.test.yml"),
};

export const dashboardsDir = join(monitoringDir, "grafana", "dashboards");
