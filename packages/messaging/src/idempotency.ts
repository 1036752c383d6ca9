import { createHash } from "node:crypto";
import { idempotencyKeys } from "@saga/db";
import { and, eq, sql } from "drizzle-orm";
import type { Database, Executor } from "./db.ts";

export type StoredResponse = { status: number; body: unknown };

/**
 * An `Idempotency-Key` in the namespace of the subject that sent it (`callerSubject(c)`: the user id
 * or admin id the gateway authenticated, "" without one).
 */
export type ScopedIdempotencyKey = { subject: string; key: string };

/**
 * The advisory lock that serialises `idempotent`'s requests with one key of one subject, taken before the
 * key is read, so that two concurrent retries cannot both do the work. Not every writer of
 * `idempotency_keys` takes it: the order-service's one-statement `POST /orders`
 * (services/order-service/src/domain/order-hot-path.ts) is serialised by the primary key instead (an insert
 * waits for a concurrent insert of the same key to commit or roll back), and the prune deletes only keys
 * past the retention.
 */
function idempotencyLockKey({ subject, key }: ScopedIdempotencyKey): string {
  // The key has no whitespace (1 to 200 visible ASCII characters), so the space keeps the pair unambiguous.
  return `idempotency-key:${subject} ${key}`;
}

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
 * Runs `work` in a transaction, at most once per idempotency key of a subject: the first response is
 * stored in the same transaction as the rows it created, and a retry by the same subject with the key
 * gets that response back; another subject's request with the same key is a request of its own.
 * Requests with one key are serialised, so two concurrent retries cannot both create a row. Without a
 * key the work just runs in a transaction. An error thrown by `work` rolls back and stores nothing.
 */
export async function idempotent(
  db: Database,
  scoped: ScopedIdempotencyKey | undefined,
  fingerprint: string,
  work: (tx: Executor) => Promise<StoredResponse>,
): Promise<IdempotentResult> {
  if (scoped === undefined) return { outcome: "fresh", ...(await db.transaction(work)) };
  const { subject, key } = scoped;
  return db.transaction(async (tx): Promise<IdempotentResult> => {
    await tx.execute(sql`select pg_advisory_xact_lock(hashtextextended(${idempotencyLockKey(scoped)}, 0))`);
    const [first] = await tx
      .select()
      .from(idempotencyKeys)
      .where(and(eq(idempotencyKeys.subject, subject), eq(idempotencyKeys.key, key)));
    if (first) {
      if (first.requestHash !== fingerprint) return { outcome: "mismatch" };
      return { outcome: "replayed", status: first.status, body: first.body };
    }
    const response = await work(tx);
    await tx.insert(idempotencyKeys).values({ subject, key, requestHash: fingerprint, ...response });
    return { outcome: "fresh", ...response };
  });
}
