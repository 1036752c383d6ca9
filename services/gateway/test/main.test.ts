import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { readdirSync } from "node:fs";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { createSecureServer } from "node:http2";
import { type AddressInfo, connect, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { createTestCertificates, freePort } from "@saga/tools/infra";
import { Agent, fetch as fetchWith } from "undici";
import { describe, expect, it, onTestFinished } from "vitest";
import {
  ADMIN_TOKEN,
  AUTH_SECRET,
  eventually,
  INTERNAL_SECRET,
  ORDER_ID,
  order,
  startFakeUpstream,
  USER_ID,
  user,
} from "./support.ts";

const main = fileURLToPath(new URL("../src/main.ts", import.meta.url));

/** The gateway's own process; with `fdLimit`, run under `prlimit` with that many file descriptors. */
function startMain(env: Record<string, string>, { fdLimit }: { fdLimit?: number } = {}): ChildProcess {
  const [command, args] =
    fdLimit === undefined
      ? [process.execPath, [main]]
      : ["prlimit", [`--nofile=${fdLimit}:${fdLimit}`, process.execPath, main]];
  const child = spawn(command, args, {
    env: { ...process.env, LOG_LEVEL: "warn", ...env },
    stdio: ["ignore", "inherit", "inherit"],
  });
  onTestFinished(() => {
    if (child.exitCode === null) child.kill("SIGKILL");
  });
  return child;
}

/** Until the gateway at `base` says it is ready. */
function untilReady(base: string): Promise<void> {
  return eventually(
    () =>
      fetch(`${base}/ready`).then(
        (r) => r.ok,
        () => false,
      ),
    20_000,
  );
}

describe("main", () => {
  it("serves over a real port, forwards, serves /metrics only on its own port, and exits 0 on SIGTERM", async () => {
    const users = await startFakeUpstream(() => ({ body: user }));
    const orders = await startFakeUpstream(() => ({ status: 201, body: order }));
    const port = await freePort();
    const metricsPort = await freePort();
    const child = startMain({
      PORT: String(port),
      METRICS_PORT: String(metricsPort),
      USER_SERVICE_URLS: users.url,
      ORDER_SERVICE_URLS: orders.url,
      MAX_BODY_BYTES: "1024",
      AUTH_SECRET,
      INTERNAL_SECRET,
    });
    const auth = { authorization: `Bearer ${ADMIN_TOKEN}` };
    const base = `http://127.0.0.1:${port}`;
    await untilReady(base);

    expect((await fetch(`${base}/users/${USER_ID}`)).status).toBe(401);
    const got = await fetch(`${base}/users/${USER_ID}`, { headers: auth });
    expect(await got.json()).toEqual(user);
    expect(users.received[0]?.headers["x-internal-credential"]).toBe(INTERNAL_SECRET);
    const created = await fetch(`${base}/orders`, {
      method: "POST",
      body: JSON.stringify({ userId: USER_ID, amount: 30 }),
      headers: { "content-type": "application/json", "idempotency-key": "k", ...auth },
    });
    expect(created.status).toBe(201);
    expect(orders.received[0]?.headers["idempotency-key"]).toBe("k");
    const tooBig = await fetch(`${base}/orders`, { method: "POST", body: "x".repeat(5000), headers: auth });
    expect(tooBig.status).toBe(413);
    expect((await fetch(`${base}/orders/${ORDER_ID}`, { method: "HEAD", headers: auth })).status).toBe(201);

    expect((await fetch(`${base}/metrics`)).status).toBe(404);
    const scraped = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
    expect(scraped).toContain('gateway_auth_failures_total{reason="missing_token"');

    const exited = once(child, "exit");
    child.kill("SIGTERM");
    const [code] = await exited;
    expect(code).toBe(0);
  });

  it("answers what it holds when it is stopped: a held read with the order as it is now, a read still waiting with 503 + Retry-After, a write sent with 504 (its outcome unknown)", async () => {
    // The order-service holds a read with `Prefer: wait` while the order is PENDING, and this one takes a
    // user's list of orders and a new order longer than the gateway's drain: none answers before the test ends.
    const orders = await startFakeUpstream((req) =>
      req.headers.prefer !== undefined || req.method === "POST" || req.url.startsWith("/orders?")
        ? new Promise<never>(() => {})
        : { body: order },
    );
    const users = await startFakeUpstream(() => ({ body: user }));
    const port = await freePort();
    const child = startMain({
      PORT: String(port),
      METRICS_PORT: String(await freePort()),
      USER_SERVICE_URLS: users.url,
      ORDER_SERVICE_URL: orders.url,
      RETRY_AFTER_S: "3",
      AUTH_SECRET,
      INTERNAL_SECRET,
    });
    const auth = { authorization: `Bearer ${ADMIN_TOKEN}` };
    const base = `http://127.0.0.1:${port}`;
    await untilReady(base);

    const held = fetch(`${base}/orders/${ORDER_ID}`, { headers: { ...auth, prefer: "wait=20" } });
    const list = fetch(`${base}/orders?userId=${USER_ID}`, { headers: auth });
    const write = fetch(`${base}/orders`, {
      method: "POST",
      body: JSON.stringify({ userId: USER_ID, amount: 30 }),
      headers: { "content-type": "application/json", "idempotency-key": "k", ...auth },
    });
    await eventually(() => orders.received.length === 3);
    const exited = once(child, "exit");
    child.kill("SIGTERM");

    // Each answered, not cut off at the end of the drain (an empty reply before).
    const [read, listed, written] = await Promise.all([held, list, write]);
    expect(read.status).toBe(200);
    expect(await read.json()).toEqual(order);
    // Not held for its wait: the state now, read again without the preference.
    expect(read.headers.get("preference-applied")).toBeNull();
    const again = orders.received.filter((r) => r.url === `/orders/${ORDER_ID}`);
    expect(again.map((r) => r.headers.prefer)).toEqual(["wait=20", undefined]);
    // A read changed nothing: come back (to another instance) after Retry-After.
    expect(listed.status).toBe(503);
    expect(listed.headers.get("retry-after")).toBe("3");
    expect(await listed.json()).toMatchObject({
      error: "the gateway is shutting down and order-service had not answered; retry",
    });
    // The order-service may have created the order: not a 503, which says that nothing was done, and no
    // Retry-After; the same status as an upstream that did not answer in time.
    expect(written.status).toBe(504);
    expect(written.headers.get("retry-after")).toBeNull();
    expect(await written.json()).toMatchObject({
      error:
        "the gateway is shutting down and order-service had not answered: the request may have been applied (send it again with the same Idempotency-Key)",
    });
    const [code] = await exited;
    expect(code).toBe(0);
  });

  it("speaks HTTP/1.1 to an https:// instance that offers HTTP/2 as well, as to any other", async () => {
    // Its connections per instance, and the held reads' connections of their own, are HTTP/1.1's: over
    // HTTP/2 one connection would carry any number of requests. undici 8 speaks HTTP/2 wherever TLS offers it.
    const dir = await mkdtemp(join(tmpdir(), "gateway-tls-"));
    onTestFinished(() => rm(dir, { recursive: true, force: true }));
    const { caFile, keyStoreFile } = await createTestCertificates(dir);
    const pem = await readFile(keyStoreFile);
    const versions: string[] = [];
    const users = createSecureServer({ key: pem, cert: pem, allowHTTP1: true }, (req, res) => {
      versions.push(`${req.url} ${req.httpVersion}`);
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify(req.url === "/health" ? { status: "UP" } : user));
    });
    users.listen(0, "127.0.0.1");
    await once(users, "listening");
    onTestFinished(() => new Promise<void>((resolve) => users.close(() => resolve())));
    const orders = await startFakeUpstream(() => ({ body: order }));
    const port = await freePort();
    startMain({
      PORT: String(port),
      METRICS_PORT: String(await freePort()),
      USER_SERVICE_URLS: `https://localhost:${(users.address() as AddressInfo).port}`,
      ORDER_SERVICE_URLS: orders.url,
      AUTH_SECRET,
      INTERNAL_SECRET,
      NODE_EXTRA_CA_CERTS: caFile,
    });
    const base = `http://127.0.0.1:${port}`;
    await untilReady(base);

    const got = await fetch(`${base}/users/${USER_ID}`, {
      headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
    });
    expect(await got.json()).toEqual(user);
    expect(versions).toContain(`/users/${USER_ID} 1.1`);
    expect(versions.filter((v) => !v.endsWith(" 1.1"))).toEqual([]);
  });

  it("refuses to start without its secrets, and starts in development mode saying what is open", async () => {
    const run = async (env: Record<string, string>) => {
      const child = spawn(process.execPath, [main], {
        env: {
          ...process.env,
          USER_SERVICE_URLS: "http://127.0.0.1:1",
          ORDER_SERVICE_URL: "http://127.0.0.1:1",
          PORT: String(await freePort()),
          METRICS_PORT: String(await freePort()),
          LOG_LEVEL: "warn",
          ...env,
        },
        stdio: ["ignore", "pipe", "pipe"],
      });
      onTestFinished(() => {
        if (child.exitCode === null) child.kill("SIGKILL");
      });
      let output = "";
      child.stdout?.on("data", (chunk) => {
        output += chunk;
      });
      child.stderr?.on("data", (chunk) => {
        output += chunk;
      });
      return { child, output: () => output };
    };

    const production = await run({});
    const [code] = await once(production.child, "exit");
    expect(code).toBe(1);
    expect(production.output()).toContain(
      "AUTH_SECRET or AUTH_JWKS_URL, INTERNAL_SECRET: required; set AUTH_DEV_MODE=true only for a local development run",
    );

    const dev = await run({ AUTH_DEV_MODE: "true" });
    await eventually(() => dev.output().includes("public development key"), 20_000);
    expect(dev.output()).toContain("never in production");
    expect(dev.child.exitCode).toBeNull();
  });

  it("fails fast naming a bad variable", async () => {
    const child = spawn(process.execPath, [main], {
      env: { ...process.env, USER_SERVICE_URLS: "nope", ORDER_SERVICE_URL: "http://127.0.0.1:1" },
      stdio: ["ignore", "ignore", "pipe"],
    });
    let stderr = "";
    child.stderr?.on("data", (chunk) => {
      stderr += chunk;
    });
    const [code] = await once(child, "exit");
    expect(code).toBe(1);
    expect(stderr).toContain("USER_SERVICE_URLS.0: must be an http:// origin");
  });
});

/** Low enough to reach with idle connections, high enough for the gateway's own. */
const FD_LIMIT = 96;

describe("a gateway out of file descriptors", () => {
  it("answers a request it cannot open an upstream connection for 503 + Retry-After, saying nothing was sent, and keeps the instance", async () => {
    const users = await startFakeUpstream(() => ({ body: user }));
    const orders = await startFakeUpstream(() => ({ status: 201, body: order }));
    const port = await freePort();
    const child = startMain(
      {
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
      { fdLimit: FD_LIMIT },
    );
    const sockets: Socket[] = [];
    onTestFinished(() => {
      for (const s of sockets) s.destroy();
    });
    const base = `http://127.0.0.1:${port}`;
    const auth = { authorization: `Bearer ${ADMIN_TOKEN}` };
    await untilReady(base);
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
    // On a connection of its own (fetch would reuse the one /ready was asked on), with undici's fetch:
    // Node's takes no dispatcher of undici 8.
    const post = () =>
      fetchWith(`${base}/orders`, {
        method: "POST",
        body: JSON.stringify({ userId: USER_ID, amount: 30 }),
        headers: { "content-type": "application/json", "idempotency-key": "k", ...auth },
        dispatcher: new Agent({ pipelining: 0 }),
      });
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
