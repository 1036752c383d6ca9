import { parseArgs } from "node:util";
import { checkDashboards, driveSagas, formatReport } from "./check.ts";
import { loadDashboards } from "./dashboards.ts";
import { prometheusConfigs } from "./paths.ts";
import { configForTargets, loadPrometheusConfig, startPrometheus } from "./prometheus.ts";

const USAGE = `check-dashboards [--config FILE | --targets job=host:port,...] [--dashboard FILE.json]... [--drive GATEWAY_URL --token ADMIN_TOKEN]

Starts Prometheus on a free port of 127.0.0.1, scrapes the targets (default: the local run's, from
monitoring/prometheus/prometheus.yml) every second and evaluates every expression of the dashboards.
Exits 1 when one returns no series, a target is down or a metric of monitoring/README.md is missing.`;

async function run(): Promise<number> {
  const { values } = parseArgs({
    options: {
      config: { type: "string" },
      targets: { type: "string" },
      dashboard: { type: "string", multiple: true },
      drive: { type: "string" },
      token: { type: "string" },
      help: { type: "boolean" },
    },
  });
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  const config = values.targets
    ? configForTargets(parseTargets(values.targets))
    : await loadPrometheusConfig(values.config ?? prometheusConfigs.local);
  const all = loadDashboards();
  const chosen = values.dashboard ?? [...all.keys()];
  const dashboards = chosen.map((file) => {
    const dashboard = all.get(file);
    if (!dashboard) throw new Error(`no dashboard ${file}; there are ${[...all.keys()].join(", ")}`);
    return dashboard;
  });

  const prometheus = await startPrometheus({ config });
  try {
    console.log(`prometheus on ${prometheus.url}`);
    await prometheus.waitForScrapes(1);
    if (values.drive) {
      console.log(`driving sagas through ${values.drive}`);
      await driveSagas(values.drive, { token: values.token });
    }
    await prometheus.waitForScrapes(3);
    const report = await checkDashboards(prometheus, dashboards);
    console.log(formatReport(report));
    return report.ok ? 0 : 1;
  } finally {
    await prometheus.stop();
  }
}

/** `gateway=127.0.0.1:8080,user-service=127.0.0.1:8081,user-service=127.0.0.1:8082` */
function parseTargets(spec: string): Record<string, string[]> {
  const targets: Record<string, string[]> = {};
  for (const item of spec
    .split(",")
    .map((s) => s.trim())
    .filter(Boolean)) {
    const [job, address] = item.split("=");
    if (!job || !address) throw new Error(`--targets: ${item} is not job=host:port`);
    targets[job] = [...(targets[job] ?? []), address];
  }
  return targets;
}

run().then(
  (code) => process.exit(code),
  (err) => {
    console.error(err);
    process.exit(1);
  },
);
