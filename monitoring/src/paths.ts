import { join } from "node:path";
import { fileURLToPath } from "node:url";

/** The monorepo root. */
export const repoRoot = fileURLToPath(new URL("../../", import.meta.url));

/** monitoring/ */
export const monitoringDir = join(repoRoot, "monitoring");

export const prometheusConfigs = {
  local: join(monitoringDir, "prometheus", "prometheus.yml"),
  compose: join(monitoringDir, "prometheus", "prometheus.compose.yml"),
};

export const dashboardsDir = join(monitoringDir, "grafana", "dashboards");

/** Git-ignored scratch space: Prometheus data of test runs goes under `.cache/prometheus/`. */
export const cacheDir = join(repoRoot, ".cache");
