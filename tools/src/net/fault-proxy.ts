import { createConnection, createServer, type Socket } from "node:net";

/**
 * What a link between a process and PostgreSQL or Kafka can suffer, as in Toxiproxy's toxics
 * (https://github.com/Shopify/toxiproxy#toxics):
 * - `blackhole`: connections are accepted, but no byte, FIN or RST crosses in either direction until
 *   the fault ends; then everything held flows on, as TCP does when a partition heals before its
 *   retransmissions give up. (Toxiproxy's `timeout` toxic drops the bytes instead and closes the
 *   connection when it is removed: no partition does either to a TCP connection.)
 * - `latency`: every chunk waits `ms` in each direction, in order, and so does a FIN behind them (a round
 *   trip grows by 2 × ms).
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
  /**
   * Stops listening, so that a new connection is refused, while the open ones go on, faults and all: what
   * a client sees of a server on its way out (a restart, a failover) whose sessions have not ended yet.
   */
  stopListening(): void;
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

/** One direction of a connection: what `from` sends, its end included, is written to `to` after the latency. */
type Direction = {
  conn: Connection;
  from: Socket;
  to: Socket;
  /** In order: chunks, then "end" once `from` has ended. */
  queue: { chunk: Buffer | "end"; dueAt: number }[];
  timer: NodeJS.Timeout | undefined;
  /** `to` is full: `from` stays paused until it drains. */
  waitingDrain: boolean;
  /** `from` ended: its end is queued behind its last chunk. */
  ended: boolean;
  /** `to` was ended: nothing more crosses this way. */
  done: boolean;
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
 *
 * Each direction of a connection ends on its own, as TCP's do: one side's FIN crosses in its turn behind
 * what it sent, and the other side may go on writing until it sends its own (a client's goodbye, then
 * the server's last words). So both sockets are half-open (`allowHalfOpen`): by default Node would answer
 * a FIN at once, and a client would see its connection closed before its end had reached the server.
 */
export async function startFaultProxy({
  name,
  port = 0,
  targetPort,
}: FaultProxyOptions): Promise<FaultProxy> {
  let current: LinkFault | undefined;
  const connections = new Set<Connection>();
  // Every socket open, `close()` ends them all: a connection whose two ends have crossed is no longer
  // counted, but its sockets may still be closing.
  const sockets = new Set<Socket>();
  const stats = { connections: 0, resets: 0, bytes: 0 };
  // Connections accepted during a blackhole, to open upstream once it ends.
  const waiting: Connection[] = [];

  const blackholed = () => current?.kind === "blackhole";
  const latencyMs = () => (current?.kind === "latency" ? current.ms : 0);

  function track(socket: Socket) {
    sockets.add(socket);
    socket.once("close", () => sockets.delete(socket));
  }

  const server = createServer({ pauseOnConnect: true, noDelay: true, allowHalfOpen: true }, (client) => {
    stats.connections++;
    client.on("error", () => {});
    if (current?.kind === "reset") {
      stats.resets++;
      client.resetAndDestroy();
      return;
    }
    track(client);
    const conn: Connection = { client, upstream: undefined, directions: [], closed: false };
    connections.add(conn);
    client.once("close", () => sideClosed(conn, client));
    if (blackholed()) waiting.push(conn);
    else connectUpstream(conn);
  });

  function connectUpstream(conn: Connection) {
    if (conn.closed) return;
    const upstream = createConnection({
      host: "127.0.0.1",
      port: targetPort,
      noDelay: true,
      allowHalfOpen: true,
    });
    conn.upstream = upstream;
    track(upstream);
    upstream.on("error", () => {});
    upstream.once("close", () => sideClosed(conn, upstream));
    upstream.once("connect", () => {
      if (conn.closed) return;
      conn.directions = [direction(conn, conn.client, upstream), direction(conn, upstream, conn.client)];
      if (!blackholed()) conn.client.resume();
    });
  }

  function direction(conn: Connection, from: Socket, to: Socket): Direction {
    const d: Direction = {
      conn,
      from,
      to,
      queue: [],
      timer: undefined,
      waitingDrain: false,
      ended: false,
      done: false,
    };
    from.on("data", (chunk: Buffer) => {
      d.queue.push({ chunk, dueAt: performance.now() + latencyMs() });
      flush(d);
    });
    from.once("end", () => {
      d.ended = true;
      d.queue.push({ chunk: "end", dueAt: performance.now() + latencyMs() });
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

  /** Writes what is due, in order, the end last; holds everything while the link is blackholed. */
  function flush(d: Direction) {
    if (d.conn.closed || blackholed() || d.to.destroyed) return;
    clearTimeout(d.timer);
    d.timer = undefined;
    const now = performance.now();
    while (d.queue.length > 0) {
      const next = d.queue[0] as { chunk: Buffer | "end"; dueAt: number };
      if (next.dueAt > now) {
        d.timer = setTimeout(() => flush(d), next.dueAt - now);
        return;
      }
      d.queue.shift();
      if (next.chunk === "end") {
        d.done = true;
        d.to.end();
        // Both ends have crossed: each socket closes on its own once its FIN is out.
        if (d.conn.directions.every((x) => x.done)) forget(d.conn);
        return;
      }
      stats.bytes += next.chunk.length;
      if (!d.to.write(next.chunk)) {
        d.waitingDrain = true;
        d.from.pause();
      }
    }
  }

  /**
   * One side's socket closed. After both its directions ended, that is all: the other side's end still
   * crosses in its turn. After an error (a reset, a write to a peer that is gone) the other side is reset
   * at once, and what was still queued in either direction is lost, as a reset discards what its receiver
   * has not read. A blackhole holds the close too, until it ends.
   */
  function sideClosed(conn: Connection, side: Socket) {
    if (conn.closed || blackholed()) return;
    const clean =
      !side.errored &&
      conn.directions.length > 0 &&
      conn.directions.every((d) => (d.from === side ? d.ended : d.done));
    if (clean) return;
    forget(conn);
    const other = side === conn.client ? conn.upstream : conn.client;
    if (other && !other.destroyed) other.resetAndDestroy();
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
      if (conn.client.destroyed) sideClosed(conn, conn.client);
      else if (conn.upstream?.destroyed) sideClosed(conn, conn.upstream);
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
    stopListening() {
      // Without a callback: close's would wait for the open connections to end.
      if (server.listening) server.close();
    },
    async close() {
      current = undefined;
      // Called after stopListening() too: the callback then runs once the last connection has closed.
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const conn of connections) forget(conn);
      for (const socket of sockets) socket.destroy();
      await closed;
    },
  };
}

/**
 * A fault proxy in front of the server of `url` (a database's, say), and the same URL through it: what a
 * test gives the client whose link it slows or cuts. The caller closes the proxy.
 */
export async function proxiedUrl(url: string, name: string): Promise<{ proxy: FaultProxy; url: string }> {
  const direct = new URL(url);
  const proxy = await startFaultProxy({ name, targetPort: Number(direct.port) });
  const through = new URL(direct);
  through.hostname = "127.0.0.1";
  through.port = String(proxy.port);
  return { proxy, url: through.toString() };
}
