import { IncomingMessage, ServerResponse } from "node:http";
import { Socket } from "node:net";
import type { Context } from "hono";
import { describe, expect, it } from "vitest";
import { clientSignal } from "./forward.ts";

/** A Node response as @hono/node-server hands it to the app, on a socket of its own. */
function nodeResponse() {
  const socket = new Socket();
  const res = new ServerResponse(new IncomingMessage(socket));
  res.assignSocket(socket);
  return res;
}
const contextOf = (outgoing: ServerResponse) => ({ env: { outgoing } }) as unknown as Context;

describe("clientSignal", () => {
  it("aborts when the client goes away before the answer", async () => {
    const outgoing = nodeResponse();
    const signal = clientSignal(contextOf(outgoing));
    expect(signal.aborted).toBe(false);
    outgoing.destroy();
    await new Promise((r) => setImmediate(r));
    expect(signal.aborted).toBe(true);
  });

  it("is aborted at once for a client gone before it was asked for (queued for admission meanwhile)", async () => {
    const outgoing = nodeResponse();
    outgoing.destroy();
    await new Promise((r) => setImmediate(r));
    expect(clientSignal(contextOf(outgoing)).aborted).toBe(true);
  });
});
