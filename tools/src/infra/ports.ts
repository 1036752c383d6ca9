import { readFile } from "node:fs/promises";
import { createServer } from "node:net";

/** A port the kernel says is free on 127.0.0.1 right now, from its ephemeral range. */
function ephemeralPort(): Promise<number> {
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

let lowestEphemeral: Promise<number> | undefined;

/** The lowest of the kernel's ephemeral ports (the source ports it gives outgoing connections), read once. */
function lowestEphemeralPort(): Promise<number> {
  lowestEphemeral ??= readFile("/proc/sys/net/ipv4/ip_local_port_range", "utf8")
    .catch(() => "")
    .then((text) => Number(text.trim().split(/\s+/)[0]) || 32_768);
  return lowestEphemeral;
}

/** Ports this process handed out: two asked for before either is listened on must differ. */
const handedOut = new Set<number>();

/**
 * A port free on 127.0.0.1 now for a server that listens some seconds later, or listens again after a
 * restart, chosen below the kernel's range of ephemeral ports. A port from that range may be given
 * meanwhile to an outgoing connection as its source port: a chaos run's user-service once failed to start
 * with EADDRINUSE on a port chosen before PostgreSQL and Kafka opened their connections, and a CI run's
 * broker restarted on its own ports failed the same way while every package's tests ran at once.
 * Another process may still take it before we bind.
 */
export async function freePort(): Promise<number> {
  const lowest = 10_000;
  const low = await lowestEphemeralPort();
  for (let tries = 0; low - lowest >= 1_000 && tries < 100; tries++) {
    const port = lowest + Math.floor(Math.random() * (low - lowest));
    if (!handedOut.has(port) && (await isPortFree(port))) {
      handedOut.add(port);
      return port;
    }
  }
  return ephemeralPort();
}
