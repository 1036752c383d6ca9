import { createConnection, createServer, type Socket } from "node:net";

/**
 * What a link between a process and PostgreSQL or Kafka can suffer, as in Toxiproxy's toxics
 * (https://github.com/Shopify/toxiproxy#toxics):
 * - `blackhole`: connections are accepted, but no byte, FIN or RST crosses in either direction until
 *   the fault ends; then everything held flows on, as TCP does when a partition heals before its
 *   retransmissions give up. (Toxiproxy's `timeout` toxic drops the bytes instead and closes the
 *   connection when it is removed: no partition does either to a TCP connection.)
 * - `latency`: every chunk waits `ms` in each direction, in order (a round trip grows by 2 × ms).
 * - `reset`: every open connection is reset (RST) at both ends, and so is every new one until the
 *   fault ends (Toxiproxy's `reset_peer`).
 */
export type LinkFault = { kind: "blackhole" } | { kind: "latency"; ms: number } | { kind: "reset" };

export type FaultProxyStats = {
  /** Connections accepted since the start. */
  connections: number;
  /** Connections open now. */
  open: number;
  /** Connections reset by a `reset` fault. */
  resets: number;
  /** Bytes forwarded, both directions. */
  bytes: number;
};

export interface FaultProxy {
  readonly name: string;
  /** Where clients connect (127.0.0.1). */
  readonly port: number;
  /** Starts a fault on the link, in place of any other; it lasts until `heal()`. */
  inject(fault: LinkFault): void;
  /** Ends the fault: held traffic flows on, new connections go through. */
  heal(): void;
  fault(): LinkFault | undefined;
  stats(): FaultProxyStats;
  /** Stops listening and closes every connection. */
  close(): Promise<void>;
}

export type FaultProxyOptions = {
  /** For logs and reports: `user-1→postgres`. */
  name: string;
  /** Where to listen on 127.0.0.1; 0 picks a free port. */
  port?: number;
  /** What the link leads to, on 127.0.0.1. */
  targetPort: number;
};

/** One direction of a connection: bytes from `from` are written to `to`, after the link's latency. */
type Direction = {
  from: Socket;
  to: Socket;
  queue: { chunk: Buffer; dueAt: number }[];
  timer: NodeJS.Timeout | undefined;
  /** `to` is full: `from` stays paused until it drains. */
  waitingDrain: boolean;
  /** `from` ended; `to` is ended once the queue is empty. */
  ended: boolean;
};

type Connection = {
  client: Socket;
  upstream: Socket | undefined;
  directions: Direction[];
  closed: boolean;
};

/**
 * A TCP proxy in front of one server that injects network faults on command: the chaos run puts one
 * between each service or relay and PostgreSQL, and one between each and Kafka, all in a process of
 * their own (tools/system's fault-proxy-host.ts); tests put one in front of a server to slow or cut a
 * client's link. fault-proxy.test.ts shows each fault with real sockets.
 */
export async function startFaultProxy({
  name,
  port = 0,
  targetPort,
}: FaultProxyOptions): Promise<FaultProxy> {
  let current: LinkFault | undefined;
  const connections = new Set<Connection>();
  const stats = { connections: 0, resets: 0, bytes: 0 };
  // Connections accepted during a blackhole, to open upstream once it ends.
  const waiting: Connection[] = [];

  const blackholed = () => current?.kind === "blackhole";
  const latencyMs = () => (current?.kind === "latency" ? current.ms : 0);

  const server = createServer({ pauseOnConnect: true, noDelay: true }, (client) => {
    stats.connections++;
    client.on("error", () => {});
    if (current?.kind === "reset") {
      stats.resets++;
      client.resetAndDestroy();
      return;
    }
    const conn: Connection = { client, upstream: undefined, directions: [], closed: false };
    connections.add(conn);
    client.once("close", () => closeConnection(conn, client));
    if (blackholed()) waiting.push(conn);
    else connectUpstream(conn);
  });

  function connectUpstream(conn: Connection) {
    if (conn.closed) return;
    const upstream = createConnection({ host: "127.0.0.1", port: targetPort, noDelay: true });
    conn.upstream = upstream;
    upstream.on("error", () => {});
    upstream.once("close", () => closeConnection(conn, upstream));
    upstream.once("connect", () => {
      conn.directions = [direction(conn.client, upstream), direction(upstream, conn.client)];
      if (!blackholed()) conn.client.resume();
    });
  }

  function direction(from: Socket, to: Socket): Direction {
    const d: Direction = { from, to, queue: [], timer: undefined, waitingDrain: false, ended: false };
    from.on("data", (chunk: Buffer) => {
      d.queue.push({ chunk, dueAt: performance.now() + latencyMs() });
      flush(d);
    });
    from.once("end", () => {
      d.ended = true;
      flush(d);
    });
    to.on("drain", () => {
      d.waitingDrain = false;
      flush(d);
      if (!blackholed() && !d.waitingDrain && !d.ended) from.resume();
    });
    // Attaching the data listener set `from` flowing: a link blackholed meanwhile holds it.
    if (blackholed()) from.pause();
    return d;
  }

  /** Writes what is due, in order; holds everything while the link is blackholed. */
  function flush(d: Direction) {
    if (blackholed() || d.to.destroyed) return;
    clearTimeout(d.timer);
    d.timer = undefined;
    const now = performance.now();
    while (d.queue.length > 0) {
      const next = d.queue[0] as { chunk: Buffer; dueAt: number };
      if (next.dueAt > now) {
        d.timer = setTimeout(() => flush(d), next.dueAt - now);
        return;
      }
      d.queue.shift();
      stats.bytes += next.chunk.length;
      if (!d.to.write(next.chunk)) {
        d.waitingDrain = true;
        d.from.pause();
      }
    }
    if (d.ended) d.to.end();
  }

  /**
   * One end closed. What it sent still crosses, then its FIN (or at once its RST, after an error);
   * what was on its way to it is lost with it. A blackhole holds the close too, until it ends.
   */
  function closeConnection(conn: Connection, side: Socket) {
    if (conn.closed || blackholed()) return;
    const other = side === conn.client ? conn.upstream : conn.client;
    const fromSide = conn.directions.find((d) => d.from === side);
    const towardsSide = conn.directions.find((d) => d.to === side);
    if (towardsSide) {
      clearTimeout(towardsSide.timer);
      towardsSide.queue.length = 0;
    }
    if (other && !other.destroyed && !side.errored && fromSide && fromSide.queue.length > 0) {
      // flush() ends `other` once the queue is through; its close then comes back here.
      fromSide.ended = true;
      flush(fromSide);
      return;
    }
    forget(conn);
    if (other && !other.destroyed) {
      if (side.errored) other.resetAndDestroy();
      else other.end();
    }
  }

  function forget(conn: Connection) {
    conn.closed = true;
    connections.delete(conn);
    for (const d of conn.directions) clearTimeout(d.timer);
  }

  function reset() {
    for (const conn of [...connections]) {
      forget(conn);
      stats.resets++;
      conn.client.resetAndDestroy();
      if (conn.upstream?.connecting) conn.upstream.destroy();
      else conn.upstream?.resetAndDestroy();
    }
    waiting.length = 0;
  }

  function heal() {
    current = undefined;
    for (const conn of waiting.splice(0)) if (!conn.client.destroyed) connectUpstream(conn);
    for (const conn of [...connections]) {
      for (const d of conn.directions) {
        flush(d);
        if (!d.waitingDrain && !d.ended) d.from.resume();
      }
      // Closes that arrived during a blackhole.
      if (conn.client.destroyed) closeConnection(conn, conn.client);
      else if (conn.upstream?.destroyed) closeConnection(conn, conn.upstream);
    }
  }

  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, "127.0.0.1", () => resolve());
  });
  const address = server.address();
  if (!address || typeof address !== "object") throw new Error(`${name}: no address to listen on`);

  return {
    name,
    port: address.port,
    inject(fault) {
      if (current) heal();
      current = fault;
      if (fault.kind === "blackhole") {
        for (const conn of connections) for (const d of conn.directions) d.from.pause();
      } else if (fault.kind === "reset") reset();
    },
    heal,
    fault: () => current,
    stats: () => ({ ...stats, open: connections.size }),
    async close() {
      current = undefined;
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const conn of connections) {
        for (const d of conn.directions) clearTimeout(d.timer);
        conn.client.destroy();
        conn.upstream?.destroy();
      }
      connections.clear();
      await closed;
    },
  };
}
