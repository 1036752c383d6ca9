import { randomUUID } from "node:crypto";
import { UsageError } from "@saga/tools/cli";
import { Agent } from "undici";
import { errorCode, pooledApiClient } from "../stack/api-client.ts";
import { ordersClient } from "./orders-client.ts";

export type PhaseResult = {
  label: string;
  /** Offered orders per second; undefined at saturation. */
  offered?: number;
  startedAt: Date;
  endedAt: Date;
  sent: number;
  created: number;
  failed: number;
  cancels: number;
  /** Why POST /orders failed: HTTP status or error code, and how often. */
  failures: Record<string, number>;
  /** POST /orders latencies in ms. */
  postLatencies: number[];
  orderIds: string[];
  /**
   * With `follow`: from sending POST /orders to reading the order's final state by GET /orders/:id,
   * in ms, of the orders the client did not cancel itself.
   */
  followLatencies: number[];
  /** With `follow`: GET /orders/:id requests sent, and how many the server held (`Preference-Applied`). */
  gets: number;
  heldGets: number;
};

export type PhaseOptions = {
  gatewayUrl: string;
  /** Each user orders and cancels with a bearer token of its own. */
  users: { id: string; balance: number; token: string }[];
  durationS: number;
  /** Open loop at this many orders per second… */
  rate?: number;
  /** …or a closed loop with this many clients, for saturation. */
  concurrency?: number;
  /**
   * Each client follows its order to its final state, as real clients do: GET /orders/:id with
   * `Prefer: wait=5` until it is no longer PENDING, or every 20 ms where the server does not hold
   * the request (no `Preference-Applied`).
   */
  follow?: boolean;
  label: string;
};

/**
 * The gateway's rate limits out of the way: the bench's load comes from one address and one client, at
 * rates far above what those limits let a single caller send.
 */
export const UNLIMITED_RATES = {
  RATE_LIMIT_SUBJECT_PER_S: "100000",
  RATE_LIMIT_SUBJECT_BURST: "100000",
  RATE_LIMIT_ADDRESS_PER_S: "100000",
  RATE_LIMIT_ADDRESS_BURST: "100000",
};

/** `--env NAME=value` arguments as the environment they add to every process of the system. */
export function envArgs(pairs: string[]): Record<string, string> {
  return Object.fromEntries(
    pairs.map((kv) => {
      const at = kv.indexOf("=");
      if (at < 1) throw new UsageError(`--env must be NAME=value, not ${JSON.stringify(kv)}`);
      return [kv.slice(0, at), kv.slice(at + 1)];
    }),
  );
}

const FOLLOW_WAIT_S = 5;
const POLL_MS = 20;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// One keep-alive pool for the whole run: connection set-up must not count as the system's latency.
const dispatcher = new Agent({
  connections: 512,
  keepAliveTimeout: 30_000,
  pipelining: 1,
  headersTimeout: 10_000,
  bodyTimeout: 10_000,
});

const bearer = (token: string) => ({ authorization: `Bearer ${token}` });

/**
 * One load phase through the gateway. One order in ten asks for more than its user has (the saga
 * must cancel it) and one in ten is canceled right after it is created, so compensations run too.
 */
export async function runPhase(opts: PhaseOptions): Promise<PhaseResult> {
  const result: PhaseResult = {
    label: opts.label,
    offered: opts.rate,
    startedAt: new Date(),
    endedAt: new Date(),
    sent: 0,
    created: 0,
    failed: 0,
    cancels: 0,
    failures: {},
    postLatencies: [],
    orderIds: [],
    followLatencies: [],
    gets: 0,
    heldGets: 0,
  };
  const orders = ordersClient(opts.gatewayUrl, dispatcher);
  let n = 0;
  const fail = (why: string) => {
    result.failed++;
    result.failures[why] = (result.failures[why] ?? 0) + 1;
  };
  /** Resolves to the seconds the server asked this client to wait before its next order (`Retry-After`), or 0. */
  const oneSaga = async (): Promise<number> => {
    const i = n++;
    const user = opts.users[i % opts.users.length];
    if (!user) return 0;
    const amount = i % 10 === 3 ? user.balance * 10 : 1 + (i % 50);
    result.sent++;
    const started = performance.now();
    try {
      const created = await orders.create(user.token, { userId: user.id, amount });
      result.postLatencies.push(performance.now() - started);
      if (created.status !== 201 || !created.order) {
        fail(String(created.status));
        return Number(created.retryAfter ?? 0) || 0;
      }
      result.created++;
      const { id } = created.order;
      result.orderIds.push(id);
      if (i % 10 === 7) {
        result.cancels++;
        await orders.cancel(user.token, id);
      } else if (opts.follow) {
        const followDeadline = performance.now() + 60_000;
        while (performance.now() < followDeadline) {
          const { order, held } = await orders.get(user.token, id, FOLLOW_WAIT_S);
          result.gets++;
          if (held) result.heldGets++;
          if (order && order.status !== "PENDING") {
            result.followLatencies.push(performance.now() - started);
            break;
          }
          if (!held) await sleep(POLL_MS);
        }
      }
    } catch (err) {
      fail(errorCode(err));
    }
    return 0;
  };

  const deadline = performance.now() + opts.durationS * 1000;
  if (opts.rate) {
    const inFlight = new Set<Promise<unknown>>();
    const interval = 1000 / opts.rate;
    const started = performance.now();
    for (let tick = 0; performance.now() < deadline; tick++) {
      // Open loop, but bounded: past this the client, not the system, would be what is measured.
      if (inFlight.size < 2000) {
        const p = oneSaga().finally(() => inFlight.delete(p));
        inFlight.add(p);
      }
      const wait = started + (tick + 1) * interval - performance.now();
      if (wait > 1) await new Promise((r) => setTimeout(r, wait));
      else if (tick % 64 === 0) await new Promise((r) => setImmediate(r));
    }
    await Promise.all(inFlight);
  } else {
    // A closed loop's clients are refused once the system is past its bound, and wait as told before
    // their next order, as real clients do: a client that asked again at once would measure how fast
    // the system refuses, in CPU the sagas it accepted needed.
    await Promise.all(
      Array.from({ length: opts.concurrency ?? 64 }, async () => {
        while (performance.now() < deadline) {
          const retryAfterS = await oneSaga();
          if (retryAfterS > 0)
            await sleep(Math.max(0, Math.min(retryAfterS * 1000, deadline - performance.now())));
        }
      }),
    );
  }
  result.endedAt = new Date();
  return result;
}

/**
 * Creates users through the gateway as the admin, each with a balance large enough for the whole run
 * and a token of its own: 16 at a time, and a 503 (shed, or no instance in rotation on a loaded
 * machine) is tried again after a pause.
 */
export async function createBenchUsers(
  gatewayUrl: string,
  count: number,
  balance: number,
  auth: { adminToken: string; token: (userId: string) => Promise<string> },
) {
  const runId = randomUUID().slice(0, 8);
  const api = pooledApiClient(gatewayUrl, dispatcher);
  const users: { id: string; balance: number; token: string }[] = [];
  for (let from = 0; from < count; from += 16) {
    const batch = Array.from({ length: Math.min(16, count - from) }, async (_, j) => {
      const create = () =>
        api.POST("/users", {
          headers: bearer(auth.adminToken),
          body: { username: `bench-${runId}-${from + j}`, initialBalance: balance },
        });
      let res = await create();
      for (let attempt = 0; res.response.status === 503 && attempt < 20; attempt++) {
        await new Promise((r) => setTimeout(r, 1000 * (1 + Math.random())));
        res = await create();
      }
      if (!res.data)
        throw new Error(`could not create a user: ${res.response.status} ${JSON.stringify(res.error)}`);
      const { id } = res.data;
      return { id, balance, token: await auth.token(id) };
    });
    users.push(...(await Promise.all(batch)));
  }
  return users;
}

export async function closeLoad() {
  await dispatcher.close();
}
