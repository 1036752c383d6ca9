import { spawn } from "node:child_process";
import { readdirSync } from "node:fs";
import { connect, type Socket } from "node:net";
import { fileURLToPath } from "node:url";
import { freePort } from "@saga/tools/infra";
import { Agent } from "undici";
import { describe, expect, it, onTestFinished } from "vitest";
import {
  ADMIN_TOKEN,
  AUTH_SECRET,
  eventually,
  INTERNAL_SECRET,
  order,
  startFakeUpstream,
  USER_ID,
  user,
} from "./support.ts";

const main = fileURLToPath(new URL("../src/main.ts", import.meta.url));
/** Low enough to reach with idle connections, high enough for the gateway's own. */
const FD_LIMIT = 96;

describe("a gateway out of file descriptors", () => {
  it("answers a request it cannot open an upstream connection for 503 + Retry-After, saying nothing was sent, and keeps the instance", async () => {
    const users = await startFakeUpstream(() => ({ body: user }));
    const orders = await startFakeUpstream(() => ({ status: 201, body: order }));
    const port = await freePort();
    // prlimit sets the limit and runs the gateway in its own process (same pid).
    const child = spawn("prlimit", [`--nofile=${FD_LIMIT}:${FD_LIMIT}`, process.execPath, main], {
      env: {
        ...process.env,
        LOG_LEVEL: "error",
        PORT: String(port),
        METRICS_PORT: String(await freePort()),
        USER_SERVICE_URLS: users.url,
        ORDER_SERVICE_URLS: orders.url,
        AUTH_SECRET,
        INTERNAL_SECRET,
        // Checks often enough to keep their connections open while the descriptors run out.
        HEALTH_INTERVAL_MS: "200",
        HEALTH_NO_TRAFFIC_INTERVAL_MS: "200",
      },
      stdio: ["ignore", "inherit", "inherit"],
    });
    const sockets: Socket[] = [];
    onTestFinished(() => {
      for (const s of sockets) s.destroy();
      if (child.exitCode === null) child.kill("SIGKILL");
    });
    const base = `http://127.0.0.1:${port}`;
    const auth = { authorization: `Bearer ${ADMIN_TOKEN}` };
    await eventually(
      () =>
        fetch(`${base}/ready`).then(
          (r) => r.ok,
          () => false,
        ),
      20_000,
    );
    // The limit bounds descriptors' numbers: one inherited above it takes none of the room.
    const openFds = () => readdirSync(`/proc/${child.pid}/fd`).filter((fd) => Number(fd) < FD_LIMIT).length;

    // The order-service's instance drops its connections, so that the next POST needs a new one; its
    // health checks connect again before the descriptors run out.
    await orders.kill();
    await orders.revive();
    const checks = orders.healthChecks;
    await eventually(() => orders.healthChecks > checks + 1, 20_000);

    // Idle connections until the gateway has one descriptor left: the next request's own connection.
    while (openFds() < FD_LIMIT - 1) {
      const before = openFds();
      const socket = connect(port, "127.0.0.1");
      sockets.push(socket);
      await eventually(() => openFds() > before, 5_000);
    }
    // On a connection of its own (fetch would reuse the one /ready was asked on).
    const post = () =>
      fetch(`${base}/orders`, {
        method: "POST",
        body: JSON.stringify({ userId: USER_ID, amount: 30 }),
        headers: { "content-type": "application/json", "idempotency-key": "k", ...auth },
        dispatcher: new Agent({ pipelining: 0 }),
      } as RequestInit);
    const refused = await post();
    expect(refused.status).toBe(503);
    expect(refused.headers.get("retry-after")).toBe("1");
    expect(((await refused.json()) as { error: string }).error).toMatch(/nothing was sent/);
    expect(orders.received).toHaveLength(0);

    for (const s of sockets.splice(0)) s.destroy();
    await eventually(() => openFds() < FD_LIMIT - 8, 5_000);
    // Still in rotation: the instance was never at fault.
    expect((await post()).status).toBe(201);
    expect(orders.received).toHaveLength(1);
  }, 60_000);
});
