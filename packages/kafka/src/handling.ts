import { sleep } from "@saga/runtime";
import type { ConsumerOptions, IncomingMessage } from "./port.ts";

/**
 * What both adapters do with the messages they fetched, whatever the library: batches first, one by one
 * when a batch fails, retries with back-off for retriable failures, dead letters for the rest.
 * `stopped` ends a back-off sleep at once, so shutdown never waits out a retry delay.
 */
export function createApplier(options: ConsumerOptions, stopped: AbortSignal) {
  const { handle, handleBatch, isRetriable, deadLetter, onRetry } = options;

  /** Applies one message, retrying transient failures; false when stopping cut it short. */
  async function apply(message: IncomingMessage, heartbeat: () => Promise<void>): Promise<boolean> {
    for (let attempt = 1; ; attempt++) {
      try {
        await handle(message);
        return true;
      } catch (handleError) {
        let error = handleError;
        if (!isRetriable(error)) {
          try {
            await deadLetter(message, error);
            return true;
          } catch (deadLetterError) {
            // The dead letter could not be recorded (its database is down, say): the message must not be
            // skipped, so it is tried again like any transient failure.
            error = deadLetterError;
          }
        }
        if (stopped.aborted) return false;
        onRetry?.(message, error, attempt);
        await sleep(Math.min(100 * 2 ** Math.min(attempt, 6), 5000), stopped);
        if (stopped.aborted) return false;
        await heartbeat().catch(() => {});
      }
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
      if (!(await apply(message, heartbeat))) return i;
    }
    return chunk.length;
  };
}
