import { once } from "node:events";
import { type AddressInfo, createConnection, createServer, type Server, type Socket } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { type FaultProxy, startFaultProxy } from "./fault-proxy.ts";

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** An echo server that records what it received and how its connections ended. */
async function startEchoServer() {
  const received: Buffer[] = [];
  const ends: ("end" | "reset")[] = [];
  const sockets: Socket[] = [];
  const server: Server = createServer((socket) => {
    sockets.push(socket);
    socket.on("data", (chunk) => {
      received.push(chunk);
      socket.write(chunk);
    });
    socket.on("end", () => {
      ends.push("end");
      socket.end();
    });
    socket.on("error", (err: NodeJS.ErrnoException) => {
      if (err.code === "ECONNRESET") ends.push("reset");
    });
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const port = (server.address() as { port: number }).port;
  return {
    port,
    received: () => Buffer.concat(received).toString(),
    ends,
    connections: () => sockets.length,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise((r) => server.close(r));
    },
  };
}

/** A client socket with everything it read so far and how it ended. */
async function connect(port: number) {
  const socket = createConnection({ host: "127.0.0.1", port });
  const state = { data: "", error: undefined as NodeJS.ErrnoException | undefined, closed: false };
  socket.on("data", (chunk) => {
    state.data += chunk.toString();
  });
  socket.on("error", (err) => {
    state.error = err;
  });
  socket.on("close", () => {
    state.closed = true;
  });
  await once(socket, "connect");
  return { socket, state };
}

async function until(check: () => boolean, ms = 5000) {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error("condition not met in time");
    await sleep(10);
  }
}

const cleanup: (() => Promise<unknown> | unknown)[] = [];
afterEach(async () => {
  for (const c of cleanup.splice(0).reverse()) await c();
});

async function setUp() {
  const echo = await startEchoServer();
  cleanup.push(echo.close);
  return { echo, ...(await proxyTo(echo.port)) };
}

/** A fault proxy to `targetPort`, and a way to connect through it; all closed after the test. */
async function proxyTo(targetPort: number) {
  const proxy: FaultProxy = await startFaultProxy({ name: "test", targetPort });
  cleanup.push(proxy.close);
  const client = async () => {
    const c = await connect(proxy.port);
    cleanup.push(() => c.socket.destroy());
    return c;
  };
  return { proxy, client };
}

/**
 * A server that keeps its side open when a client ends its own (allowHalfOpen), as PostgreSQL and Kafka
 * may, and hands each connection to `handle`; closed after the test.
 */
async function startHalfOpenServer(handle: (socket: Socket) => void) {
  const sockets: Socket[] = [];
  const server = createServer({ allowHalfOpen: true }, (socket) => {
    sockets.push(socket);
    socket.on("error", () => {});
    handle(socket);
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  cleanup.push(async () => {
    for (const s of sockets) s.destroy();
    await new Promise((r) => server.close(r));
  });
  return (server.address() as AddressInfo).port;
}

describe("startFaultProxy", () => {
  it("forwards bytes both ways, in order, and passes a close on", async () => {
    const { echo, proxy, client } = await setUp();
    const { socket, state } = await client();
    const sent = Array.from({ length: 200 }, (_, i) => `message ${i};`).join("");
    for (let i = 0; i < sent.length; i += 97) socket.write(sent.slice(i, i + 97));
    await until(() => state.data.length === sent.length);
    expect(state.data).toBe(sent);
    expect(echo.received()).toBe(sent);

    socket.end();
    await until(() => state.closed);
    expect(echo.ends).toEqual(["end"]);
    expect(state.error).toBeUndefined();
    expect(proxy.stats()).toMatchObject({ connections: 1, open: 0, resets: 0, bytes: 2 * sent.length });
  });

  it("latency: delays every chunk in each direction and keeps them in order", async () => {
    const { proxy, client } = await setUp();
    const { socket, state } = await client();
    proxy.inject({ kind: "latency", ms: 150 });

    const started = performance.now();
    socket.write("ping");
    await sleep(100);
    // Still on its way to the server.
    expect(state.data).toBe("");
    await until(() => state.data === "ping");
    // Two crossings of 150 ms each.
    expect(performance.now() - started).toBeGreaterThanOrEqual(290);

    const sent = Array.from({ length: 50 }, (_, i) => `${i},`).join("");
    for (const part of sent.match(/.{1,7}/g) ?? []) {
      socket.write(part);
      await sleep(2);
    }
    await until(() => state.data === `ping${sent}`);

    proxy.heal();
    expect(proxy.fault()).toBeUndefined();
    socket.write("!");
    await until(() => state.data.endsWith("!"));
  });

  it("latency: a close crosses after what was sent before it, and one end gone closes the other", async () => {
    const { echo, proxy, client } = await setUp();
    proxy.inject({ kind: "latency", ms: 200 });
    const first = await client();
    first.socket.end("bye");
    await until(() => echo.ends.length === 1);
    expect(echo.received()).toBe("bye");

    // The echo of "ping" is still on its way when the client goes: the server's side must not stay
    // open (an open PostgreSQL session can hold a transaction's locks).
    const second = await client();
    second.socket.write("ping");
    await until(() => echo.received() === "byeping");
    second.socket.destroy();
    await until(() => echo.ends.length === 2);
    // The proxy lets the connection go once the server's end has crossed back too.
    await until(() => proxy.stats().open === 0);
  });

  it("latency: an end waits like a chunk, in order behind the data sent before it", async () => {
    // What the server had read when the client's end reached it, and when that was.
    const ends: { read: string; at: number }[] = [];
    const port = await startHalfOpenServer((socket) => {
      let read = "";
      socket.on("data", (chunk) => {
        read += chunk.toString();
      });
      socket.on("end", () => {
        ends.push({ read, at: performance.now() });
        socket.end();
      });
    });
    const { proxy, client } = await proxyTo(port);
    const { socket, state } = await client();
    proxy.inject({ kind: "latency", ms: 300 });

    socket.write("data");
    // The end leaves while "data" is still on its way: it must neither overtake it nor skip its own wait.
    await sleep(100);
    const endedAt = performance.now();
    socket.end();
    await until(() => ends.length === 1);
    expect(ends[0]?.read).toBe("data");
    expect((ends[0]?.at ?? 0) - endedAt).toBeGreaterThanOrEqual(290);
    // The server's end comes back the same way, and closes the client.
    await until(() => state.closed);
    expect(state.error).toBeUndefined();
  });

  it("half-close: a client that has ended its side still reads what the server writes after that end", async () => {
    // As a server answers a client's last request: it reads to the end, then writes, then ends its side.
    const port = await startHalfOpenServer((socket) => {
      let asked = "";
      socket.on("data", (chunk) => {
        asked += chunk.toString();
      });
      socket.on("end", () => {
        socket.write(`answer to ${asked}`);
        setTimeout(() => socket.end(), 50);
      });
    });
    const { proxy, client } = await proxyTo(port);
    const { socket, state } = await client();
    socket.end("question");
    await until(() => state.closed);
    expect(state.data).toBe("answer to question");
    expect(state.error).toBeUndefined();
    expect(proxy.stats()).toMatchObject({ connections: 1, open: 0, resets: 0 });
  });

  it("blackhole: accepts connections but moves nothing until it ends; then everything held arrives", async () => {
    const { echo, proxy, client } = await setUp();
    const open = await client();
    open.socket.write("before;");
    await until(() => open.state.data === "before;");

    proxy.inject({ kind: "blackhole" });
    open.socket.write("during;");
    // A connection made during the blackhole is accepted by the proxy but goes nowhere.
    const late = await client();
    late.socket.write("late;");
    await sleep(500);
    expect(echo.received()).toBe("before;");
    expect(echo.connections()).toBe(1);
    expect(open.state.data).toBe("before;");
    expect(late.state.data).toBe("");
    expect(open.state.error ?? late.state.error).toBeUndefined();

    proxy.heal();
    await until(() => open.state.data === "before;during;" && late.state.data === "late;");
    expect(echo.connections()).toBe(2);
  });

  it("blackhole: a close during it reaches the server only when it ends", async () => {
    const { echo, proxy, client } = await setUp();
    const { socket } = await client();
    socket.write("x");
    await until(() => echo.received() === "x");

    proxy.inject({ kind: "blackhole" });
    socket.end();
    await sleep(300);
    expect(echo.ends).toEqual([]);

    proxy.heal();
    await until(() => echo.ends.length === 1);
    expect(echo.ends).toEqual(["end"]);
  });

  it("reset: resets open connections at both ends, and new ones until it ends", async () => {
    const { echo, proxy, client } = await setUp();
    const open = await client();
    open.socket.write("hello");
    await until(() => open.state.data === "hello");

    proxy.inject({ kind: "reset" });
    await until(() => open.state.closed);
    expect(open.state.error?.code).toBe("ECONNRESET");
    await until(() => echo.ends.length === 1);
    expect(echo.ends).toEqual(["reset"]);

    const refused = createConnection({ host: "127.0.0.1", port: proxy.port });
    refused.write("anyone?");
    const [err] = (await once(refused, "error")) as [NodeJS.ErrnoException];
    expect(err.code).toBe("ECONNRESET");
    expect(echo.connections()).toBe(1);
    expect(proxy.stats()).toMatchObject({ resets: 2, open: 0 });

    proxy.heal();
    const after = await client();
    after.socket.write("again");
    await until(() => after.state.data === "again");
  });

  it("stopListening: refuses new connections while the open ones go on", async () => {
    const { proxy, client } = await setUp();
    const open = await client();
    proxy.stopListening();

    const refused = createConnection({ host: "127.0.0.1", port: proxy.port });
    const [err] = (await once(refused, "error")) as [NodeJS.ErrnoException];
    expect(err.code).toBe("ECONNREFUSED");
    open.socket.write("still there");
    await until(() => open.state.data === "still there");

    await proxy.close();
    await until(() => open.state.closed);
  });
});
