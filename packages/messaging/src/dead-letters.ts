import { DLQ_HEADERS, HEADERS, SCHEMA_VERSION } from "@saga/contracts";
import { deadLetters, outbox } from "@saga/db";
import { MAX_MESSAGE_BYTES, messageBytes } from "@saga/kafka";
import { and, asc, eq, gte, isNull, type SQL } from "drizzle-orm";
import { type Executor, lockAggregate } from "./db.ts";
import { newRowId } from "./ids.ts";
import { type NewOutboxRow, outboxMessage } from "./outbox.ts";

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
  | { status: "too large"; deadLetter: DeadLetterRecord; bytes: number; maxBytes: number }
  | { status: "not found" };

/** The outbox row that sends a dead letter back as it was consumed (see `replayDeadLetter`). */
function replayRow(deadLetter: DeadLetterRecord, id: string): NewOutboxRow {
  const { headers } = deadLetter;
  return {
    id,
    aggregateId:
      deadLetter.messageKey ||
      headers[HEADERS.aggregateId] ||
      `${deadLetter.sourceTopic}:${deadLetter.partition}:${deadLetter.offset}`,
    topic: deadLetter.topic,
    eventType: headers[HEADERS.eventType] ?? "Unknown",
    schemaVersion: headers[HEADERS.schemaVersion] ?? SCHEMA_VERSION,
    payload: deadLetter.payload ?? "",
    headers: { ...headers, [DLQ_HEADERS.replayOf]: deadLetter.id },
  };
}

/**
 * Sends a dead letter back to its original topic, once: in one transaction it records the replay on
 * the dead letter (who, when, and the outbox row that carries it) and writes that outbox row, which the
 * relay publishes like any event: the original key, value and headers, the original `event-id`
 * included, plus `dlq-replay-of`. A dead letter already replayed is refused (`already replayed`); and
 * were the same event sent twice anyway, every consumer group's inbox would apply it once.
 *
 * One whose message would be larger than Kafka takes (`MAX_MESSAGE_BYTES`: a message another producer
 * sent compressed) is refused too (`too large`) and stays pending: the broker would refuse it at every
 * attempt, and the relay's outbox, sent in order, would wait behind it for ever.
 *
 * Runs on the database of the consumer that dead-lettered it, whose outbox the relay already tails.
 */
export async function replayDeadLetter(
  db: { transaction<T>(work: (tx: Executor) => Promise<T>): Promise<T> },
  id: string,
  replayedBy: string,
): Promise<ReplayResult> {
  return db.transaction(async (tx) => {
    // The claim: the row's lock, so that of two replays at once the second waits, then finds the
    // first's `replayed_at`.
    const [deadLetter] = await tx.select().from(deadLetters).where(eq(deadLetters.id, id)).for("update");
    if (!deadLetter) return { status: "not found" };
    if (deadLetter.replayedAt) return { status: "already replayed", deadLetter };
    const row = replayRow(deadLetter, newRowId());
    const bytes = messageBytes(outboxMessage({ ...row, headers: row.headers, createdAt: new Date() }));
    if (bytes > MAX_MESSAGE_BYTES)
      return { status: "too large", deadLetter, bytes, maxBytes: MAX_MESSAGE_BYTES };
    const [claimed] = await tx
      .update(deadLetters)
      .set({ replayedAt: new Date(), replayedBy, replayOutboxId: row.id })
      .where(eq(deadLetters.id, id))
      .returning();
    // Like every writer of the outbox: the aggregate's lock first, so its rows keep commit order.
    await lockAggregate(tx, row.aggregateId);
    await tx.insert(outbox).values(row);
    return { status: "replayed", deadLetter: claimed ?? deadLetter };
  });
}
