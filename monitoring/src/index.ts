export { type CheckReport, checkDashboards, driveSagas, formatReport, type QueryResult } from "./check.ts";
export {
  type Dashboard,
  type DashboardQuery,
  loadDashboards,
  metricNamesIn,
  queriesOf,
  substituteVariables,
} from "./dashboards.ts";
export { dependedMetricNames } from "./metric-names.ts";
export { dashboardsDir, prometheusConfigs } from "./paths.ts";
export {
  configForTargets,
  hasPrometheus,
  loadPrometheusConfig,
  type PrometheusConfig,
  type PrometheusServer,
  promtool,
  startPrometheus,
} from "./prometheus.ts";
