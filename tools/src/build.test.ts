import { spawn } from "node:child_process";
import { cp, mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { expect, onTestFinished, test } from "vitest";
import { buildAll, distDir, PROCESSES, type ProcessName } from "./build.ts";
import { freePort } from "./infra/ports.ts";
import { freshDatabase, kafkaBrokers, uniqueName } from "./test/harness.ts";

// What the image holds: dist/ alone, run by plain node from a directory with no node_modules and no sources.
test("every process runs from a copy of dist/ alone and answers /ready", async () => {
  await buildAll();
  const clean = await mkdtemp(join(tmpdir(), "saga-dist-"));
  onTestFinished(() => rm(clean, { recursive: true, force: true }));
  await cp(distDir, join(clean, "dist"), { recursive: true });
  expect((await readdir(clean)).sort()).toEqual(["dist"]);

  const [userDb, orderDb] = [await freshDatabase("dist_user"), await freshDatabase("dist_order")];
  const ports = Object.fromEntries(
    await Promise.all(Object.keys(PROCESSES).map(async (name) => [name, await freePort()] as const)),
  ) as Record<ProcessName, number>;
  const common = {
    KAFKA_BROKERS: kafkaBrokers().join(","),
    KAFKA_TOPIC_PREFIX: `${uniqueName("dist")}.`,
    INTERNAL_SECRET: "dist-test-internal-secret-of-32-characters",
  };
  const env: Record<ProcessName, Record<string, string>> = {
    "user-service": { DATABASE_URL: userDb, INSTANCE_ID: "dist-user" },
    "order-service": { DATABASE_URL: orderDb, INSTANCE_ID: "dist-order" },
    relay: { USER_DB_URL: userDb, ORDER_DB_URL: orderDb, RELAY_ID: "dist-relay" },
    gateway: {
      USER_SERVICE_URLS: `http://127.0.0.1:${ports["user-service"]}`,
      ORDER_SERVICE_URLS: `http://127.0.0.1:${ports["order-service"]}`,
      METRICS_PORT: String(await freePort()),
      AUTH_SECRET: "dist-test-auth-secret-of-at-least-32-chars",
    },
  };

  // The gateway last: it is ready once it has a healthy instance of each service.
  for (const name of ["user-service", "order-service", "relay", "gateway"] as const) {
    const child = spawn(process.execPath, [join(clean, "dist/bin", `${name}.mjs`)], {
      cwd: clean,
      env: { PATH: process.env.PATH, LOG_LEVEL: "warn", ...common, ...env[name], PORT: String(ports[name]) },
      stdio: ["ignore", "ignore", "pipe"],
    });
    let stderr = "";
    child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
    onTestFinished(() => {
      child.kill("SIGKILL");
    });
    const deadline = Date.now() + 45_000;
    let status = 0;
    while (status !== 200 && Date.now() < deadline && child.exitCode === null) {
      status = await fetch(`http://127.0.0.1:${ports[name]}/ready`).then(
        (r) => r.status,
        () => 0,
      );
      if (status !== 200) await new Promise((r) => setTimeout(r, 100));
    }
    expect(status, `${name} from dist/: ${stderr}`).toBe(200);
  }
});
