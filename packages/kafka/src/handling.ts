import { sleep } from "@saga/runtime";
import {
  type ConsumerOptions,
  DEFAULT_RETRY_POLICY,
  type DeadLetterCause,
  type FailureKind,
  type IncomingMessage,
  type RetriedKind,
} from "./port.ts";

/**
 * What both adapters do with the messages they fetched, whatever the library: batches first, one by one
 * when a batch fails, and the failure contract (`FailureKind`) for a message that fails on its own:
 * poison is dead-lettered at once, a transient failure retried with back-off until it succeeds, an
 * unexpected one retried up to the policy's budget and then dead-lettered. A message is never skipped
 * without its dead letter being durable. `stopped` ends a back-off sleep at once, so shutdown never
 * waits out a retry delay.
 */
export function createApplier(options: ConsumerOptions, stopped: AbortSignal) {
  const { handle, handleBatch, classify, deadLetter, onRetry, onRetriesEnded } = options;
  const policy = options.retry ?? DEFAULT_RETRY_POLICY;
  const backoff = (attempt: number) => Math.min(policy.backoffMs * 2 ** (attempt - 1), policy.maxBackoffMs);

  /** Why a failed message is dead-lettered now, or undefined when it is to be tried again. */
  function deadLetterCause(
    kind: FailureKind,
    error: unknown,
    unexpected: number,
  ): DeadLetterCause | undefined {
    if (kind === "poison") return { reason: "poison", error, attempts: 1 };
    if (kind === "unexpected" && unexpected >= policy.maxAttempts)
      return { reason: "retries exhausted", error, attempts: unexpected };
    return undefined;
  }

  /**
   * Applies one message under the failure contract; false when stopping, or `keepGoing` turning false (its
   * partition went to another member), cut it short.
   */
  async function apply(
    message: IncomingMessage,
    heartbeat: () => Promise<void>,
    keepGoing: () => boolean,
  ): Promise<boolean> {
    // Only unexpected failures spend the budget: a database outage in the middle of a bug's retries
    // must not turn into a dead letter.
    let unexpected = 0;
    let retried = false;
    try {
      for (let attempt = 1; ; attempt++) {
        let error: unknown;
        try {
          await handle(message);
          return true;
        } catch (handleError) {
          error = handleError;
        }
        // Stopping, or its partition went to another member: the partition's next owner retries it, or
        // dead-letters it, from the last commit.
        if (!keepGoing()) return false;
        const kind = classify(error);
        if (kind === "unexpected") unexpected++;
        let retryAs: RetriedKind = kind === "transient" ? "transient" : "unexpected";
        const cause = deadLetterCause(kind, error, unexpected);
        if (cause) {
          try {
            await deadLetter(message, cause);
            return true;
          } catch (deadLetterError) {
            // The dead letter could not be recorded (its database is down, say): the message must not
            // be skipped, so it is tried again, for as long as it takes.
            error = deadLetterError;
            retryAs = classify(deadLetterError) === "transient" ? "transient" : "unexpected";
          }
        }
        if (stopped.aborted) return false;
        retried = true;
        onRetry?.(message, error, { attempt, kind: retryAs });
        await sleep(backoff(attempt), stopped);
        if (stopped.aborted || !keepGoing()) return false;
        await heartbeat().catch(() => {});
      }
    } finally {
      if (retried) onRetriesEnded?.(message);
    }
  }

  /** Applies a chunk, as one batch if possible; returns how many of its messages were applied. */
  return async function applyChunk(
    chunk: IncomingMessage[],
    heartbeat: () => Promise<void>,
    keepGoing: () => boolean,
  ): Promise<number> {
    if (handleBatch && chunk.length > 1) {
      try {
        await handleBatch(chunk);
        return chunk.length;
      } catch (error) {
        options.onBatchFailed?.(chunk, error);
      }
    }
    for (const [i, message] of chunk.entries()) {
      if (i > 0 && !keepGoing()) return i;
      if (!(await apply(message, heartbeat, keepGoing))) return i;
    }
    return chunk.length;
  };
}
