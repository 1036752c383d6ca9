import { createServer, type IncomingHttpHeaders, type Server } from "node:http";
import { type AddressInfo, createServer as createListener, type Socket } from "node:net";
import { onTestFinished } from "vitest";
import {
  createGateway,
  type Gateway,
  type GatewayOptions,
  mintToken,
  parseGatewayEnv,
} from "../src/gateway.ts";

export type Received = { method: string; url: string; headers: IncomingHttpHeaders; body: string };

export type Reply = {
  status?: number;
  /** Sent as JSON; a string is sent as it is. */
  body?: unknown;
  headers?: Record<string, string>;
  /** Waits this long before answering. */
  delayMs?: number;
  /** Destroys the connection instead of answering, as a process that dies mid-request would. */
  destroy?: boolean;
};

export type FakeUpstream = {
  readonly url: string;
  readonly port: number;
  /** Every request but the health checks, in order. */
  readonly received: Received[];
  /** What `/health` answers: 200 while true, 503 while false. */
  healthy: boolean;
  /** How long `/health` takes to answer, as a saturated event loop would. */
  healthDelayMs: number;
  /** Health checks received so far. */
  readonly healthChecks: number;
  /**
   * The services' INTERNAL_SECRET, when set: as their internalCredential middleware, a request that
   * carries another credential is refused with a 401, a health check too; one without any, but for a
   * health check, as well.
   */
  credential: string | undefined;
  /** Stops listening and drops every connection: connects are refused from now on. */
  kill(): Promise<void>;
  /** Listens on the same port again. */
  revive(): Promise<void>;
};

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * A small real HTTP server standing in for a service instance: it records what it receives and
 * answers what `handle` says. Closed when the test finishes.
 */
export async function startFakeUpstream(
  handle: (req: Received) => Reply | Promise<Reply> = () => ({}),
): Promise<FakeUpstream> {
  let server: Server | undefined;
  const received: Received[] = [];
  let port = 0;
  let healthChecks = 0;

  const listen = () =>
    new Promise<void>((resolve, reject) => {
      const s = createServer(async (req, res) => {
        const chunks: Buffer[] = [];
        for await (const chunk of req) chunks.push(chunk as Buffer);
        const given = req.headers["x-internal-credential"];
        const refuse = (probe: boolean) => {
          if (fake.credential === undefined || given === fake.credential || (probe && given === undefined))
            return false;
          res.writeHead(401, { "content-type": "application/json" });
          res.end(JSON.stringify({ error: "this service answers only the gateway" }));
          return true;
        };
        if (req.url === "/health") {
          healthChecks++;
          if (refuse(true)) return;
          if (fake.healthDelayMs) await sleep(fake.healthDelayMs);
          res.writeHead(fake.healthy ? 200 : 503, { "content-type": "application/json" });
          res.end(JSON.stringify({ status: fake.healthy ? "UP" : "DOWN" }));
          return;
        }
        const request = {
          method: req.method ?? "",
          url: req.url ?? "",
          headers: req.headers,
          body: Buffer.concat(chunks).toString(),
        };
        received.push(request);
        if (refuse(false)) return;
        const reply = await handle(request);
        if (reply.delayMs) await sleep(reply.delayMs);
        if (reply.destroy) {
          req.socket.destroy();
          return;
        }
        const body =
          reply.body === undefined
            ? ""
            : typeof reply.body === "string"
              ? reply.body
              : JSON.stringify(reply.body);
        res.writeHead(reply.status ?? 200, {
          ...(body ? { "content-type": "application/json" } : {}),
          ...reply.headers,
        });
        res.end(body);
      });
      s.once("error", reject);
      s.listen(port, "127.0.0.1", () => {
        port = (s.address() as AddressInfo).port;
        server = s;
        resolve();
      });
    });

  const kill = () =>
    new Promise<void>((resolve) => {
      const s = server;
      server = undefined;
      if (!s) return resolve();
      s.close(() => resolve());
      s.closeAllConnections();
    });

  await listen();
  const fake: FakeUpstream = {
    url: `http://127.0.0.1:${port}`,
    port,
    received,
    healthy: true,
    healthDelayMs: 0,
    credential: undefined,
    get healthChecks() {
      return healthChecks;
    },
    kill,
    revive: listen,
  };
  onTestFinished(kill);
  return fake;
}

export type RawUpstream = {
  readonly url: string;
  /** Every request but the health checks, head and body as sent, in order. */
  readonly received: string[];
};

/**
 * An upstream that answers each request with the bytes `answer` gives, written as they are on the
 * socket: what Node's HTTP server would never send (a header twice, hop-by-hop headers, trailers, a
 * malformed answer). It answers `/health` 200 itself, and keeps its connections open. Closed when the test
 * finishes.
 */
export async function startRawUpstream(answer: (request: string) => string): Promise<RawUpstream> {
  const received: string[] = [];
  const sockets = new Set<Socket>();
  const server = createListener((socket) => {
    sockets.add(socket);
    socket.once("close", () => sockets.delete(socket));
    socket.on("error", () => {});
    let buffered = "";
    socket.on("data", (data) => {
      buffered += data.toString("latin1");
      for (;;) {
        const end = buffered.indexOf("\r\n\r\n");
        if (end === -1) return;
        const length = Number(/\r\ncontent-length: *(\d+)/i.exec(buffered.slice(0, end))?.[1] ?? 0);
        if (buffered.length < end + 4 + length) return;
        const request = buffered.slice(0, end + 4 + length);
        buffered = buffered.slice(request.length);
        if (request.startsWith("GET /health ")) {
          socket.write(
            'HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 15\r\n\r\n{"status":"UP"}',
          );
          continue;
        }
        received.push(request);
        socket.write(answer(request), "latin1");
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  onTestFinished(
    () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  );
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, received };
}

/** The secrets of the tests' gateways. */
export const AUTH_SECRET = "test-auth-secret-of-at-least-32-characters";
export const INTERNAL_SECRET = "test-internal-secret-of-at-least-32-chars";

/** A token the tests' gateways accept: an admin's unless `subject` is a user's id. */
export const tokenFor = (subject: string, opts: { admin?: boolean; ttlSeconds?: number } = {}) =>
  mintToken({
    secret: AUTH_SECRET,
    subject,
    role: opts.admin ? "admin" : undefined,
    ttlSeconds: opts.ttlSeconds,
  });

export const ADMIN_TOKEN = await tokenFor("test-admin", { admin: true });

/**
 * A gateway in front of the given fake instances (one order-service instance or several),
 * health-checked every 100 ms (with traffic or without), with a short upstream
 * timeout and a 1 KiB body limit; its first health checks are done when it resolves. Stopped when the
 * test finishes. Its `app.request()` sends an admin's token unless the request has an Authorization
 * header of its own (`authorization: ""` sends none), so that tests of routing need not say it.
 */
export async function startGateway(
  users: { url: string }[],
  orders: { url: string } | { url: string }[],
  env: Record<string, string> = {},
  options: GatewayOptions = {},
): Promise<Gateway> {
  const settings: Record<string, string> = {
    USER_SERVICE_URLS: users.map((u) => u.url).join(","),
    ORDER_SERVICE_URLS: [orders]
      .flat()
      .map((o) => o.url)
      .join(","),
    HEALTH_INTERVAL_MS: "100",
    HEALTH_NO_TRAFFIC_INTERVAL_MS: "100",
    HEALTH_TIMEOUT_MS: "500",
    UPSTREAM_TIMEOUT_MS: "1000",
    MAX_BODY_BYTES: "1024",
    INSTANCE_ID: "gateway-test",
    LOG_LEVEL: "silent",
    AUTH_SECRET,
    INTERNAL_SECRET,
    RATE_LIMIT_SUBJECT_BURST: "1000",
    RATE_LIMIT_ADDRESS_BURST: "1000",
    ...env,
  };
  // An empty value leaves a variable unset, as in a shell.
  const gateway = createGateway(
    parseGatewayEnv(Object.fromEntries(Object.entries(settings).filter(([, v]) => v !== ""))),
    options,
  );
  onTestFinished(() => gateway.stop());
  await gateway.start();
  const request = gateway.app.request.bind(gateway.app);
  gateway.app.request = (input, init, ...rest) => {
    const headers = new Headers(init?.headers);
    if (!headers.has("authorization")) headers.set("authorization", `Bearer ${ADMIN_TOKEN}`);
    else if (headers.get("authorization") === "") headers.delete("authorization");
    return request(input, { ...init, headers }, ...rest);
  };
  return gateway;
}

type WithMetrics = { metricsApp: { request: (path: string) => Response | Promise<Response> } };

/** A lane's adaptive bound, as the gateway's metrics give it. */
export async function admissionLimit(gateway: WithMetrics, lane: string): Promise<number> {
  const text = await (await gateway.metricsApp.request("/metrics")).text();
  return Number(new RegExp(`http_admission_limit\\{lane="${lane}",[^}]*\\} (\\S+)`).exec(text)?.[1]);
}

/** Raises a lane to its bound of 16 by answers on time with the lane full, so that a drop would show. */
export async function raiseLane(gateway: WithMetrics, lane: string, request: () => unknown) {
  await request();
  for (let round = 0; round < 60 && (await admissionLimit(gateway, lane)) < 16; round++)
    await Promise.all(Array.from({ length: Math.ceil(await admissionLimit(gateway, lane)) }, request));
}

/** Polls `condition` every 20 ms until it holds; fails after `timeoutMs`. */
export async function eventually(
  condition: () => boolean | Promise<boolean>,
  timeoutMs = 5000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`condition not met within ${timeoutMs} ms`);
    await sleep(20);
  }
}

export const USER_ID = "3f1c7a52-9d1e-4c8e-a0a4-7f7b0c5d2e11";
export const ORDER_ID = "8e3b1c0a-5d2f-4a7e-9b6c-1d2e3f4a5b6c";
export const user = { id: USER_ID, username: "ada", balance: 100, createdAt: "2025-01-01T00:00:00.000Z" };
export const order = {
  id: ORDER_ID,
  userId: USER_ID,
  amount: 30,
  status: "PENDING",
  createdAt: "2025-01-01T00:00:01.000Z",
};
