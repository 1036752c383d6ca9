import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { fileURLToPath } from "node:url";
import { freePort } from "@saga/tools/infra";
import { describe, expect, it, onTestFinished } from "vitest";
import { eventually, ORDER_ID, order, startFakeUpstream, USER_ID, user } from "./support.ts";

const main = fileURLToPath(new URL("../src/main.ts", import.meta.url));

function startMain(env: Record<string, string>): ChildProcess {
  const child = spawn(process.execPath, [main], {
    env: { ...process.env, LOG_LEVEL: "warn", ...env },
    stdio: ["ignore", "inherit", "inherit"],
  });
  onTestFinished(() => {
    if (child.exitCode === null) child.kill("SIGKILL");
  });
  return child;
}

describe("main", () => {
  it("serves over a real port, forwards, and exits 0 on SIGTERM", async () => {
    const users = await startFakeUpstream(() => ({ body: user }));
    const orders = await startFakeUpstream(() => ({ status: 201, body: order }));
    const port = await freePort();
    const child = startMain({
      PORT: String(port),
      USER_SERVICE_URLS: users.url,
      ORDER_SERVICE_URL: orders.url,
      MAX_BODY_BYTES: "1024",
    });
    const base = `http://127.0.0.1:${port}`;
    await eventually(
      () =>
        fetch(`${base}/ready`).then(
          (r) => r.ok,
          () => false,
        ),
      20_000,
    );

    const got = await fetch(`${base}/users/${USER_ID}`);
    expect(await got.json()).toEqual(user);
    const created = await fetch(`${base}/orders`, {
      method: "POST",
      body: JSON.stringify({ userId: USER_ID, amount: 30 }),
      headers: { "content-type": "application/json", "idempotency-key": "k" },
    });
    expect(created.status).toBe(201);
    expect(orders.received[0]?.headers["idempotency-key"]).toBe("k");
    const tooBig = await fetch(`${base}/orders`, { method: "POST", body: "x".repeat(5000) });
    expect(tooBig.status).toBe(413);
    expect((await fetch(`${base}/orders/${ORDER_ID}`, { method: "HEAD" })).status).toBe(201);

    const exited = once(child, "exit");
    child.kill("SIGTERM");
    const [code] = await exited;
    expect(code).toBe(0);
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
