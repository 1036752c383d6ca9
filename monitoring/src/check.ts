import { randomUUID } from "node:crypto";
import {
  type Dashboard,
  type DashboardQuery,
  metricNamesIn,
  queriesOf,
  substituteVariables,
} from "./dashboards.ts";
import { dependedMetricNames, familyOf } from "./metric-names.ts";
import type { PrometheusServer } from "./prometheus.ts";

export type QueryResult = DashboardQuery & { series: number; error?: string };

export type CheckReport = {
  queries: QueryResult[];
  /** Names of the README's list that the checked dashboards use and no target exports. */
  missingNames: string[];
  /** Scrape URLs whose last scrape failed. */
  downTargets: string[];
  ok: boolean;
};

/**
 * Evaluates every expression of `dashboards` on `prometheus` and checks that each returns at least
 * one series, that every target is up, and that every metric the dashboards use is exported (by the
 * targets' metadata, so a counter that has not counted yet is found too).
 */
export async function checkDashboards(
  prometheus: PrometheusServer,
  dashboards: Dashboard[],
  { rateInterval = "1m", range = "5m" }: { rateInterval?: string; range?: string } = {},
): Promise<CheckReport> {
  const queries: QueryResult[] = [];
  for (const query of dashboards.flatMap(queriesOf)) {
    try {
      const result = await prometheus.query(substituteVariables(query.expr, { rateInterval, range }));
      queries.push({ ...query, series: result.length });
    } catch (err) {
      queries.push({ ...query, series: 0, error: (err as Error).message });
    }
  }

  const used = new Set(queries.flatMap((q) => metricNamesIn(q.expr)));
  const metadata = await prometheus.metadata();
  const missingNames = dependedMetricNames()
    .filter((m) => used.has(m.name) && m.type !== "built-in" && !metadata[familyOf(m)])
    .map((m) => m.name);
  const downTargets = (await prometheus.targets())
    .filter((t) => t.health !== "up")
    .map((t) => `${t.scrapeUrl} (${t.lastError})`);

  const ok = queries.every((q) => q.series > 0) && missingNames.length === 0 && downTargets.length === 0;
  return { queries, missingNames, downTargets, ok };
}

/** A readable account of a report, one line per expression. */
export function formatReport(report: CheckReport): string {
  const lines = report.queries.map(
    (q) =>
      `${q.series > 0 ? "ok  " : "FAIL"} ${String(q.series).padStart(3)} series  ${q.dashboard} / ${q.panel} [${q.refId}]  ${q.error ?? q.expr}`,
  );
  if (report.missingNames.length)
    lines.push(`FAIL not exported by any target: ${report.missingNames.join(", ")}`);
  if (report.downTargets.length) lines.push(`FAIL targets down: ${report.downTargets.join(", ")}`);
  const failed = report.queries.filter((q) => q.series === 0).length;
  lines.push(`${report.queries.length - failed} passed, ${failed} failed`);
  return lines.join("\n");
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Sends traffic through the gateway that gives every dashboard samples: a user, orders that are
 * confirmed, one rejected for insufficient funds, one canceled after confirmation, a 404 and a 400;
 * then waits until no order of its own is PENDING, reading each with `Prefer: wait`. `token` is an
 * admin's bearer token (it creates a user).
 */
export async function driveSagas(
  gatewayUrl: string,
  { timeoutMs = 60_000, token }: { timeoutMs?: number; token?: string } = {},
): Promise<void> {
  const auth: Record<string, string> = token ? { authorization: `Bearer ${token}` } : {};
  const call = async (method: string, path: string, body?: unknown, headers: Record<string, string> = {}) => {
    const res = await fetch(`${gatewayUrl}${path}`, {
      method,
      headers:
        body === undefined
          ? { ...auth, ...headers }
          : { ...auth, ...headers, "content-type": "application/json", "idempotency-key": randomUUID() },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(10_000),
    });
    const text = await res.text();
    return { status: res.status, body: text ? (JSON.parse(text) as Record<string, unknown>) : {} };
  };
  const expect = (what: string, res: { status: number; body: unknown }, status: number) => {
    if (res.status !== status)
      throw new Error(`${what}: expected ${status}, got ${res.status} ${JSON.stringify(res.body)}`);
    return res.body as { id: string; status?: string };
  };

  const user = expect(
    "POST /users",
    await call("POST", "/users", { username: `check-${randomUUID()}`, initialBalance: 100 }),
    201,
  );
  const orders: { id: string }[] = [];
  for (const amount of [30, 20, 1000]) {
    orders.push(expect("POST /orders", await call("POST", "/orders", { userId: user.id, amount }), 201));
  }
  expect("GET /users/:id/orders", await call("GET", `/users/${user.id}/orders`), 200);
  expect("GET unknown user", await call("GET", `/users/${randomUUID()}`), 404);
  expect("GET bad id", await call("GET", "/orders/not-a-uuid"), 400);

  const deadline = Date.now() + timeoutMs;
  // Followed as clients do, held until the saga decides (the held reads' panel needs samples too).
  const settled = async () => {
    for (const order of orders) {
      const current = expect(
        "GET /orders/:id",
        await call("GET", `/orders/${order.id}`, undefined, { prefer: "wait=5" }),
        200,
      );
      if (current.status === "PENDING") return false;
    }
    return true;
  };
  while (!(await settled())) {
    if (Date.now() > deadline) throw new Error(`orders still PENDING after ${timeoutMs} ms`);
    await sleep(200);
  }
  // A compensation: cancel a confirmed order, which releases its reservation.
  expect("DELETE /orders/:id", await call("DELETE", `/orders/${orders[0]?.id}`), 204);
}
