import { readFile } from "node:fs/promises";
import { createServer } from "node:net";

/** A port that is free on 127.0.0.1 right now. Another process may still take it before we bind. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      server.close(() => {
        if (address && typeof address === "object") resolve(address.port);
        else reject(new Error("could not read the port of a probe socket"));
      });
    });
  });
}

/** Whether nothing listens on 127.0.0.1:port right now. */
export function isPortFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.unref();
    server.once("error", () => resolve(false));
    server.listen(port, "127.0.0.1", () => server.close(() => resolve(true)));
  });
}

/** The lowest of the kernel's ephemeral ports: the source ports it gives outgoing connections. */
async function lowestEphemeralPort(): Promise<number> {
  const text = await readFile("/proc/sys/net/ipv4/ip_local_port_range", "utf8").catch(() => "");
  return Number(text.trim().split(/\s+/)[0]) || 32_768;
}

/**
 * A port free on 127.0.0.1 now for a server that listens some seconds later, chosen below the kernel's
 * range of ephemeral ports. One from `freePort` is in that range, so the kernel may give it meanwhile to
 * an outgoing connection as its source port: a chaos run's user-service once failed to start with
 * EADDRINUSE on a port chosen before PostgreSQL and Kafka started and opened their connections.
 * `avoid`: ports already chosen and not listened on yet.
 */
export async function freeServerPort(avoid: ReadonlySet<number> = new Set()): Promise<number> {
  const lowest = 10_000;
  const low = await lowestEphemeralPort();
  if (low - lowest < 1_000) return freePort();
  for (let tries = 0; tries < 100; tries++) {
    const port = lowest + Math.floor(Math.random() * (low - lowest));
    if (!avoid.has(port) && (await isPortFree(port))) return port;
  }
  return freePort();
}
