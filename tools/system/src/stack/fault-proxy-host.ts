import { type ChildProcess, fork } from "node:child_process";
import { once } from "node:events";
import { fileURLToPath } from "node:url";
import {
  type FaultProxy,
  type FaultProxyStats,
  type LinkFault,
  startFaultProxy,
} from "@saga/tools/fault-proxy";

/** A fault proxy in the host process, driven from this one. */
export type RemoteFaultProxy = {
  readonly name: string;
  readonly port: number;
  inject(fault: LinkFault): Promise<void>;
  heal(): Promise<void>;
  stats(): Promise<FaultProxyStats>;
};

export type FaultProxyHost = {
  /** Starts a proxy to 127.0.0.1:targetPort, on `port` or a free one. */
  add(opts: { name: string; targetPort: number; port?: number }): Promise<RemoteFaultProxy>;
  /** Closes every proxy and ends the host. */
  close(): Promise<void>;
};

type Request =
  | { id: number; op: "add"; name: string; targetPort: number; port?: number }
  | { id: number; op: "inject"; name: string; fault: LinkFault }
  | { id: number; op: "heal" | "stats"; name: string };
/** A request as the caller writes it: `call` adds the id. */
type Call = WithoutId<Request>;
type WithoutId<T> = T extends unknown ? Omit<T, "id"> : never;
type Reply = { id: number; ok: true; value?: unknown } | { id: number; ok: false; error: string };

/**
 * Runs the fault proxies in a process of their own, as Toxiproxy runs in its own server: the chaos
 * run's load client, busy with a thousand retried requests when the system sheds, must not slow the
 * services' database and broker traffic that crosses the proxies. The host ends when this process
 * does (its IPC channel closes), SIGKILL included.
 */
export async function startFaultProxyHost(): Promise<FaultProxyHost> {
  const child: ChildProcess = fork(fileURLToPath(import.meta.url), ["--host"], {
    stdio: ["ignore", "inherit", "inherit", "ipc"],
    // Plain node, whatever runs this one (a test runner's loaders, profiling flags).
    execArgv: [],
  });
  const exited = once(child, "exit");
  await once(child, "spawn");
  let nextId = 0;
  const pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  child.on("message", (reply: Reply) => {
    const p = pending.get(reply.id);
    pending.delete(reply.id);
    if (reply.ok) p?.resolve(reply.value);
    else p?.reject(new Error(reply.error));
  });
  void exited.then(() => {
    for (const p of pending.values()) p.reject(new Error("the fault proxy host exited"));
    pending.clear();
  });
  const call = <T>(request: Call): Promise<T> =>
    new Promise((resolve, reject) => {
      if (!child.connected) return reject(new Error("the fault proxy host is closed"));
      const id = nextId++;
      pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      child.send({ ...request, id }, (err) => {
        if (!err) return;
        pending.delete(id);
        reject(err);
      });
    });

  return {
    async add({ name, targetPort, port }) {
      const bound = await call<number>({ op: "add", name, targetPort, port });
      return {
        name,
        port: bound,
        inject: (fault) => call({ op: "inject", name, fault }),
        heal: () => call({ op: "heal", name }),
        stats: () => call({ op: "stats", name }),
      };
    },
    async close() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.disconnect();
      await exited;
    },
  };
}

/** The host's side: proxies by name, one request at a time in order of arrival. */
function serve() {
  const proxies = new Map<string, FaultProxy>();
  const send = (reply: Reply) => process.send?.(reply);
  process.on("message", async (request: Request) => {
    try {
      let value: unknown;
      if (request.op === "add") {
        const proxy = await startFaultProxy(request);
        proxies.set(request.name, proxy);
        value = proxy.port;
      } else {
        const proxy = proxies.get(request.name);
        if (!proxy) throw new Error(`no fault proxy ${request.name}`);
        if (request.op === "inject") proxy.inject(request.fault);
        else if (request.op === "heal") proxy.heal();
        else value = proxy.stats();
      }
      send({ id: request.id, ok: true, value });
    } catch (err) {
      send({ id: request.id, ok: false, error: (err as Error).message });
    }
  });
  // The parent is gone or done: so are we.
  process.on("disconnect", () => {
    void Promise.all([...proxies.values()].map((p) => p.close())).finally(() => process.exit(0));
  });
}

if (process.argv[2] === "--host" && import.meta.url === `file://${process.argv[1]}`) serve();
