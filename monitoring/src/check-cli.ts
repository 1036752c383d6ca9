import { defineCli, UsageError } from "@saga/tools/cli";
import { checkDashboards, driveSagas, formatReport } from "./check.ts";
import { loadDashboards } from "./dashboards.ts";
import { prometheusConfigs } from "./paths.ts";
import { configForTargets, loadPrometheusConfig, startPrometheus } from "./prometheus.ts";

const checkCli = defineCli({
  name: "check-dashboards",
  command: "npm run check-dashboards -w @saga/monitoring --",
  about:
    "Starts Prometheus on a free port of 127.0.0.1, scrapes the targets every second and evaluates every\n" +
    "expression of the dashboards. Exits 1 when one returns no series, a target is down or a metric of\n" +
    "monitoring/README.md is missing.",
  options: {
    config: {
      type: "string",
      value: "FILE",
      defaultText: "monitoring/prometheus/prometheus.yml, the local run's",
      description: "a Prometheus configuration whose targets are scraped",
    },
    targets: {
      type: "string",
      value: "job=host:port,…",
      description: "the targets instead of a configuration's",
    },
    dashboard: {
      type: "string",
      value: "FILE.json",
      multiple: true,
      defaultText: "every dashboard",
      description: "a dashboard to check, once per dashboard",
    },
    drive: { type: "string", value: "GATEWAY_URL", description: "drives sagas through this gateway first" },
    token: { type: "string", value: "ADMIN_TOKEN", description: "an admin's token for --drive" },
  },
});

async function run(): Promise<number> {
  const { values, targets, dashboards } = checkCli.parseOrExit(process.argv.slice(2), ({ values }) => {
    const all = loadDashboards();
    return {
      values,
      targets: values.targets === undefined ? undefined : parseTargets(values.targets),
      dashboards: (values.dashboard ?? [...all.keys()]).map((file) => {
        const dashboard = all.get(file);
        if (!dashboard)
          throw new UsageError(`--dashboard: no ${file}; there are ${[...all.keys()].join(", ")}`);
        return dashboard;
      }),
    };
  });
  const config = targets
    ? configForTargets(targets)
    : await loadPrometheusConfig(values.config ?? prometheusConfigs.local);

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
    if (!job || !address) throw new UsageError(`--targets: ${item} is not job=host:port`);
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
