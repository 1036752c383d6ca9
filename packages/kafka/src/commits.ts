import { withTimeout } from "@saga/runtime";

/**
 * Offsets to commit, one per partition, sent together at most once per `intervalMs`. A consumer that
 * committed after every batch sent one OffsetCommit per message at low rates, and each one is a write to
 * `__consumer_offsets` on the broker: the group coordinator's share of the broker's CPU. Committing later
 * is safe because offsets still only cover applied messages; a crash or a rebalance in the meantime makes
 * the next owner read up to `intervalMs` of messages again, which the inbox absorbs.
 */
export type CommitCoalescer<T> = {
  /** The next offset to commit for a partition (`topic/partition`); replaces an earlier one not sent yet. */
  mark(partition: string, offset: T): void;
  /**
   * Sends what is marked once the commit in flight is done (marks made meanwhile included); resolves once
   * the broker answered.
   */
  flush(): Promise<void>;
  /** Forgets the marks of partitions this member no longer owns: their new owner commits them. */
  retain(owned: (partition: string) => boolean): void;
  /** Stops the timer; marks not flushed are dropped. */
  close(): void;
};

/** The least wait before a failed commit is sent again, so that an interval of 0 does not spin. */
const RETRY_MIN_MS = 1000;
/**
 * How long a commit may take before it counts as failed. Commits go one at a time, so one that never
 * answers would hold back every later one for good (a client can leave a commit unsettled when its stream
 * ends in the middle of a rejoin).
 */
const COMMIT_TIMEOUT_MS = 30_000;

export function createCommitCoalescer<T>({
  intervalMs,
  commit,
  onError,
  timeoutMs = COMMIT_TIMEOUT_MS,
}: {
  /** 0 commits each mark at once. */
  intervalMs: number;
  commit: (offsets: [partition: string, offset: T][]) => Promise<void>;
  onError: (err: unknown) => void;
  timeoutMs?: number;
}): CommitCoalescer<T> {
  let pending = new Map<string, T>();
  let timer: NodeJS.Timeout | undefined;
  let inFlight: Promise<void> = Promise.resolve();
  let closed = false;

  function flush(): Promise<void> {
    clearTimeout(timer);
    timer = undefined;
    // One commit at a time, in order: a later commit of a partition never lands before an earlier one.
    // What it sends is taken when its turn comes, not now: a commit before it that fails puts its offsets
    // back only where no newer mark waits, and a newer mark taken now would already be gone from
    // `pending`, letting the failed, older offset back in behind it.
    inFlight = inFlight.then(() => {
      const offsets = [...pending];
      pending = new Map();
      if (offsets.length === 0) return;
      return withTimeout(() => commit(offsets), timeoutMs, "an offset commit").catch(retry(offsets));
    });
    return inFlight;
  }

  // A commit that failed (a rebalance, a broker away) is tried again with the next one, and on its own
  // after the interval: a partition whose last messages were applied then receives nothing more, and its
  // offset would otherwise stay behind for good (a lag that never drains, though nothing is lost).
  // A newer mark of a partition replaces the failed offset; a partition given up since is forgotten.
  function retry(offsets: [string, T][]) {
    return (err: unknown) => {
      onError(err);
      if (closed) return;
      for (const [partition, offset] of offsets) if (!pending.has(partition)) pending.set(partition, offset);
      timer ??= setTimeout(flush, Math.max(intervalMs, RETRY_MIN_MS)).unref();
    };
  }

  return {
    mark(partition, offset) {
      if (closed) return;
      pending.set(partition, offset);
      if (intervalMs === 0) void flush();
      else timer ??= setTimeout(flush, intervalMs).unref();
    },
    flush,
    retain(owned) {
      for (const partition of pending.keys()) if (!owned(partition)) pending.delete(partition);
    },
    close() {
      closed = true;
      clearTimeout(timer);
      pending.clear();
    },
  };
}
