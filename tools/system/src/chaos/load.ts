import { randomUUID } from "node:crypto";
import { type ApiClient, createApiClient } from "@saga/api-client";
import { uniformInt } from "pure-rand/distribution/uniformInt";
import { xoroshiro128plus } from "pure-rand/generator/xoroshiro128plus";

export type LoadStats = {
  ordersSent: number;
  ordersCreated: number;
  cancelsSent: number;
  cancelsDone: number;
  inFlight: number;
  /** Requests that got no answer after every retry: their outcome is whatever the databases say. */
  gaveUp: number;
  retries: number;
};

export type LoadOptions = {
  gatewayUrl: string;
  seed: number;
  /** Orders per second offered. */
  rate: number;
  /** Share of ticks that also cancel an earlier order. */
  cancelRatio?: number;
  /** Each user orders and cancels with a bearer token of its own. */
  users: { id: string; balance: number; token: string }[];
};

/**
 * What the load was answered, for the checker to hold the final state to (`ClientRecord` in checker.ts):
 * the order each `201` named, by its Idempotency-Key, and each order whose `DELETE` got a `204`.
 */
type Answers = {
  /** Every Idempotency-Key sent with a `POST /orders`, answered or not. */
  keysSent: Set<string>;
  /** The order each `201` named, by the Idempotency-Key of its request, with the user and amount sent. */
  created: Map<string, { id: string; userId: string; amount: number }>;
  /** Orders whose `DELETE` was answered `204`. */
  canceled: Set<string>;
};

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Sends `request` until it gets an answer that is not a 5xx, for up to a minute: the gateway and
 * the services are being killed under it. The same Idempotency-Key on every attempt keeps a retried
 * POST from creating a second row.
 */
async function untilAnswered<T extends { response: Response }>(
  stats: LoadStats,
  request: () => Promise<T>,
): Promise<T | undefined> {
  const deadline = Date.now() + 60_000;
  let waitMs = 0;
  for (let attempt = 0; Date.now() < deadline; attempt++) {
    if (attempt > 0) {
      stats.retries++;
      await sleep(waitMs);
    }
    try {
      const res = await request();
      if (res.response.status < 500) return res;
      waitMs = backoffMs(attempt, Number(res.response.headers.get("retry-after") ?? 0) * 1000);
    } catch {
      // Connection refused or reset while a process is down: retry.
      waitMs = backoffMs(attempt, 0);
    }
  }
  stats.gaveUp++;
  return undefined;
}

/**
 * Doubles from 200 ms up to 5 s, no sooner than a shedding service's Retry-After, and jittered: when the
 * saga stalls, a thousand requests wait at once, and retries that arrive together cost a loaded machine
 * more than the stall itself (the services, the gateway and this process answer and send them all).
 */
function backoffMs(attempt: number, retryAfterMs: number): number {
  return Math.max(retryAfterMs, Math.min(200 * 2 ** attempt, 5000) * (0.5 + Math.random() / 2));
}

/** Bearer tokens for the load: the admin's creates the users; `token(id)` is each user's own. */
export type LoadAuth = { adminToken: string; token: (userId: string) => Promise<string> };

/** Creates `count` users through the gateway as the admin, each with `balance` and a token of its own. */
export async function createUsers(
  gatewayUrl: string,
  count: number,
  balance: number,
  runId: string,
  auth: LoadAuth,
) {
  const stats = emptyStats();
  const api = createApiClient({ baseUrl: gatewayUrl, token: auth.adminToken });
  return Promise.all(
    Array.from({ length: count }, async (_, i) => {
      const key = `${runId}-user-${i}`;
      const res = await untilAnswered(stats, () =>
        api.POST("/users", {
          params: { header: { "Idempotency-Key": key } },
          body: { username: `chaos-${runId}-${i}`, initialBalance: balance },
          signal: AbortSignal.timeout(5000),
        }),
      );
      if (!res?.data)
        throw new Error(`could not create user ${i}: ${res?.response.status} ${JSON.stringify(res?.error)}`);
      return { id: res.data.id, balance, token: await auth.token(res.data.id) };
    }),
  );
}

function emptyStats(): LoadStats {
  return {
    ordersSent: 0,
    ordersCreated: 0,
    cancelsSent: 0,
    cancelsDone: 0,
    inFlight: 0,
    gaveUp: 0,
    retries: 0,
  };
}

/**
 * A steady, seeded mix of orders (some larger than any balance, so they must fail) and cancels of
 * earlier orders, through the gateway. `stopOffering()` sends nothing more; `stop()` does that and waits
 * for what is in flight. `answers` records what clients were told.
 */
export function startLoad({ gatewayUrl, seed, rate, users, cancelRatio = 0.2 }: LoadOptions) {
  const rng = xoroshiro128plus(seed);
  const stats = emptyStats();
  const api: ApiClient = createApiClient({ baseUrl: gatewayUrl });
  const bearer = (token: string) => ({ authorization: `Bearer ${token}` });
  // Each order created, by the tick that sent it, with its owner's token, which alone may cancel it.
  const created = new Map<number, { id: string; token: string }>();
  const pending = new Set<Promise<void>>();
  const answers: Answers = { keysSent: new Set(), created: new Map(), canceled: new Set() };
  const maxBalance = Math.max(...users.map((u) => u.balance));
  let stopped = false;

  const track = (work: Promise<void>) => {
    stats.inFlight++;
    const p = work.finally(() => {
      stats.inFlight--;
      pending.delete(p);
    });
    pending.add(p);
  };

  const order = ({ id: userId, token }: { id: string; token: string }, amount: number, tick: number) => {
    const key = randomUUID();
    stats.ordersSent++;
    answers.keysSent.add(key);
    track(
      untilAnswered(stats, () =>
        api.POST("/orders", {
          params: { header: { "Idempotency-Key": key } },
          headers: bearer(token),
          body: { userId, amount },
          signal: AbortSignal.timeout(5000),
        }),
      ).then((res) => {
        if (res?.data) {
          stats.ordersCreated++;
          created.set(tick, { id: res.data.id, token });
          if (res.response.status === 201) answers.created.set(key, { id: res.data.id, userId, amount });
        }
      }),
    );
  };

  const cancel = ({ id: orderId, token }: { id: string; token: string }) => {
    stats.cancelsSent++;
    track(
      untilAnswered(stats, () =>
        api.DELETE("/orders/{id}", {
          params: { path: { id: orderId } },
          headers: bearer(token),
          signal: AbortSignal.timeout(5000),
        }),
      ).then((res) => {
        if (res?.response.status === 204) {
          stats.cancelsDone++;
          answers.canceled.add(orderId);
        }
      }),
    );
  };

  const loop = (async () => {
    const interval = 1000 / rate;
    const started = performance.now();
    for (let tick = 0; !stopped; tick++) {
      const user = users[uniformInt(rng, 0, users.length - 1)];
      if (!user) break;
      // One order in ten asks for more than any balance: a saga that must end CANCELED.
      const amount =
        uniformInt(rng, 0, 9) === 0 ? maxBalance + uniformInt(rng, 1, 1000) : uniformInt(rng, 1, 500);
      // Drawn on every tick, whatever has been answered by then, so that a seed sends the same orders
      // again; the order to cancel is named by the tick that sent it (none if it is not created yet).
      const cancels = uniformInt(rng, 0, 99) < cancelRatio * 100;
      const target = created.get(uniformInt(rng, 0, Math.max(0, tick - 1)));
      order(user, amount, tick);
      if (cancels && target) cancel(target);
      const next = started + (tick + 1) * interval;
      await sleep(Math.max(0, next - performance.now()));
    }
  })();

  return {
    stats,
    answers,
    /** Sends no more orders or cancels; what is in flight goes on. */
    stopOffering() {
      stopped = true;
    },
    async stop() {
      stopped = true;
      await loop;
      while (pending.size > 0) await Promise.allSettled([...pending]);
    },
  };
}
