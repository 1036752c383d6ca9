import { DLQ_HEADERS, HEADERS, SCHEMA_VERSION } from "@saga/contracts";
import { deadLetters, outbox } from "@saga/db";
import { and, asc, eq, gte, isNull, type SQL } from "drizzle-orm";
import { type Executor, lockAggregate } from "./db.ts";
import { newRowId } from "./ids.ts";

/** A dead letter as recorded by the consumer that gave up on it (see `deadLetters` in @saga/db). */
export type DeadLetterRecord = typeof deadLetters.$inferSelect;

export type DeadLetterFilter = {
  /** The logical topic it was consumed from (`order.created`). */
  topic?: string | undefined;
  /** Dead-lettered at or after this instant. */
  since?: Date | undefined;
  /** Only those not replayed yet. */
  pending?: boolean | undefined;
};

/** The dead letters of a service database that match, oldest first. */
export async function listDeadLetters(
  db: Executor,
  filter: DeadLetterFilter = {},
): Promise<DeadLetterRecord[]> {
  const where: SQL[] = [];
  if (filter.topic !== undefined) where.push(eq(deadLetters.topic, filter.topic));
  if (filter.since !== undefined) where.push(gte(deadLetters.deadLetteredAt, filter.since));
  if (filter.pending) where.push(isNull(deadLetters.replayedAt));
  return db
    .select()
    .from(deadLetters)
    .where(and(...where))
    .orderBy(asc(deadLetters.deadLetteredAt), asc(deadLetters.id));
}

/** One dead letter by its id (the `event-id` of its message on the dead-letter topic). */
export async function findDeadLetter(db: Executor, id: string): Promise<DeadLetterRecord | undefined> {
  const [row] = await db.select().from(deadLetters).where(eq(deadLetters.id, id));
  return row;
}

export type ReplayResult =
  | { status: "replayed"; deadLetter: DeadLetterRecord }
  | { status: "already replayed"; deadLetter: DeadLetterRecord }
  | { status: "not found" };

/**
 * Sends a dead letter back to its original topic, once: in one transaction it records the replay on
 * the dead letter (who, when, and the outbox row that carries it) and writes that outbox row, which the
 * relay publishes like any event: the original key, value and headers, the original `event-id`
 * included, plus `dlq-replay-of`. A dead letter already replayed is refused (`already replayed`); and
 * were the same event sent twice anyway, every consumer group's inbox would apply it once.
 *
 * Runs on the database of the consumer that dead-lettered it, whose outbox the relay already tails.
 */
export async function replayDeadLetter(
  db: { transaction<T>(work: (tx: Executor) => Promise<T>): Promise<T> },
  id: string,
  replayedBy: string,
): Promise<ReplayResult> {
  return db.transaction(async (tx) => {
    const replayOutboxId = newRowId();
    // The claim: only the first replay finds `replayed_at` still null; a concurrent one waits for the
    // row lock, then finds it set.
    const [claimed] = await tx
      .update(deadLetters)
      .set({ replayedAt: new Date(), replayedBy, replayOutboxId })
      .where(and(eq(deadLetters.id, id), isNull(deadLetters.replayedAt)))
      .returning();
    if (!claimed) {
      const existing = await findDeadLetter(tx, id);
      return existing ? { status: "already replayed", deadLetter: existing } : { status: "not found" };
    }
    const { headers } = claimed;
    const aggregateId =
      claimed.messageKey ||
      headers[HEADERS.aggregateId] ||
      `${claimed.sourceTopic}:${claimed.partition}:${claimed.offset}`;
    // Like every writer of the outbox: the aggregate's lock first, so its rows keep commit order.
    await lockAggregate(tx, aggregateId);
    await tx.insert(outbox).values({
      id: replayOutboxId,
      aggregateId,
      topic: claimed.topic,
      eventType: headers[HEADERS.eventType] ?? "Unknown",
      schemaVersion: headers[HEADERS.schemaVersion] ?? SCHEMA_VERSION,
      payload: claimed.payload ?? "",
      headers: { ...headers, [DLQ_HEADERS.replayOf]: claimed.id },
    });
    return { status: "replayed", deadLetter: claimed };
  });
}
