import type { Server } from "node:http";
import { connect } from "node:net";
import { createLogger, createMetrics } from "@saga/observability";
import { afterEach, describe, expect, it } from "vitest";
import { createBaseApp } from "./app.ts";
import { requestBody } from "./body-limit.ts";
import { listen } from "./serve.ts";

const cleanups: (() => void)[] = [];
afterEach(() => {
  for (const cleanup of cleanups.splice(0)) cleanup();
});

/** A base app on a real port (1 KiB body limit) that answers each body as it read it. */
async function start() {
  const app = createBaseApp({
    logger: createLogger("test", "silent"),
    metrics: createMetrics("test", "t1"),
    ready: async () => {},
    maxBodyBytes: 1024,
  });
  app.post("/echo", async (c) => c.text(Buffer.from(await requestBody(c)).toString()));
  const server = await new Promise<Server>((resolve) => {
    const s: Server = listen({ app, port: 0 }, () => resolve(s));
  });
  cleanups.push(() => {
    server.closeAllConnections();
    server.close();
  });
  return (server.address() as { port: number }).port;
}

/** Sends `parts` on one connection, `gapMs` apart, and gives the bodies of the first `answers` answers. */
function send(port: number, parts: string[], answers: number, gapMs = 100): Promise<string[]> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, "127.0.0.1");
    cleanups.push(() => socket.destroy());
    let received = "";
    socket.on("error", reject);
    socket.on("data", (d) => {
      received += d.toString();
      const bodies: string[] = [];
      for (let rest = received; bodies.length < answers; ) {
        const end = rest.indexOf("\r\n\r\n");
        const length = Number(/\r\ncontent-length: (\d+)/i.exec(rest.slice(0, end))?.[1]);
        if (end === -1 || rest.length < end + 4 + length) return;
        bodies.push(rest.slice(end + 4, end + 4 + length));
        rest = rest.slice(end + 4 + length);
      }
      resolve(bodies);
    });
    parts.forEach((part, i) => setTimeout(() => socket.write(part), i * gapMs));
  });
}

const post = (body: string, declared = body.length) =>
  `POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: ${declared}\r\n\r\n${body}`;

describe("bodyLimit reads a body whole, however it comes", () => {
  it("in the same packet as its head", async () => {
    const port = await start();
    expect(await send(port, [post(`{"amount":5,"userId":"${"a".repeat(180)}"}`)], 1)).toEqual([
      `{"amount":5,"userId":"${"a".repeat(180)}"}`,
    ]);
  });

  it("partly with its head, the rest a moment later", async () => {
    const port = await start();
    expect(await send(port, [post("first half,", 23), " second half"], 1)).toEqual([
      "first half, second half",
    ]);
  });

  it("several requests in one packet (pipelined), each its own", async () => {
    const port = await start();
    expect(await send(port, [post("one") + post("") + post("three")], 3)).toEqual(["one", "", "three"]);
  });
});
