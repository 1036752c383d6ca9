export { type CheckReport, checkDashboards, driveSagas, formatReport, type QueryResult } from "./check.ts";
export { type Dashboard, type DashboardQuery, loadDashboards } from "./dashboards.ts";
export { prometheusConfigs } from "./paths.ts";
export {
  configForTargets,
  hasPrometheus,
  loadPrometheusConfig,
  type PrometheusConfig,
  type PrometheusServer,
  startPrometheus,
} from "./prometheus.ts";
