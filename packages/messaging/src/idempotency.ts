import { createHash } from "node:crypto";
import { idempotencyKeys } from "@saga/db";
import { eq, sql } from "drizzle-orm";
import type { Database, Executor } from "./db.ts";

export type StoredResponse = { status: number; body: unknown };

export type IdempotentResult =
  | { outcome: "fresh" | "replayed"; status: number; body: unknown }
  /** The key was first used for a different request. */
  | { outcome: "mismatch" };

/** A stable digest of what a request asks for: route and validated body, whatever its whitespace. */
export function requestFingerprint(route: string, body: unknown): string {
  return createHash("sha256")
    .update(`${route}\n${JSON.stringify(body)}`)
    .digest("hex");
}

/**
 * Runs `work` in a transaction, at most once per idempotency key: the first response is stored in the
 * same transaction as the rows it created, and a retry with the key gets that response back. Requests
 * with one key are serialised, so two concurrent retries cannot both create a row. Without a key the
 * work just runs in a transaction. An error thrown by `work` rolls back and stores nothing.
 */
export async function idempotent(
  db: Database,
  key: string | undefined,
  fingerprint: string,
  work: (tx: Executor) => Promise<StoredResponse>,
): Promise<IdempotentResult> {
  if (key === undefined) return { outcome: "fresh", ...(await db.transaction(work)) };
  return db.transaction(async (tx): Promise<IdempotentResult> => {
    await tx.execute(sql`select pg_advisory_xact_lock(hashtextextended(${`idempotency-key:${key}`}, 0))`);
    const [first] = await tx.select().from(idempotencyKeys).where(eq(idempotencyKeys.key, key));
    if (first) {
      if (first.requestHash !== fingerprint) return { outcome: "mismatch" };
      return { outcome: "replayed", status: first.status, body: first.body };
    }
    const response = await work(tx);
    await tx.insert(idempotencyKeys).values({ key, requestHash: fingerprint, ...response });
    return { outcome: "fresh", ...response };
  });
}
