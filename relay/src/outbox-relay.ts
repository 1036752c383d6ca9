import { type EventProducer, type KafkaClient, MAX_MESSAGE_BYTES, messageBytes } from "@saga/kafka";
import { outboxMessage } from "@saga/messaging";
import type { Logger } from "@saga/observability";
import { createLingerGate, sleep, withTimeout } from "@saga/runtime";
import type { CrashPoint } from "./env.ts";
import type { Lease } from "./lease.ts";
import { RELAY_STAGES, type RelayMetrics, type RelayStage } from "./metrics.ts";
import type { Backlog, OutboxStore, PendingRow } from "./outbox-store.ts";
import type { ReplicationWakeups, StreamBatch } from "./replication-wakeups.ts";
import { endedBefore, invisibleIn } from "./visibility.ts";
import { createWakeSignal } from "./wake.ts";

export type OutboxRelayOptions = {
  /** `user` or `order`: the label of this outbox in logs and metrics. */
  name: string;
  store: OutboxStore;
  lease: Lease;
  kafka: Pick<KafkaClient, "createProducer">;
  /** Starts the wake-ups of this outbox; called when this instance becomes its owner. */
  startWakeups: (onWake: () => void, onError: (err: Error) => void) => ReplicationWakeups;
  /**
   * `table`: every round reads the oldest unpublished rows from the table. `cdc`: rows are sent as the
   * replication stream delivers them (the wake-ups keep them, see `rows` in replication-wakeups.ts), and
   * the table is read only to catch up: once per stream connection, and while the stream is down.
   */
  mode: "table" | "cdc";
  topicPrefix: string;
  batchSize: number;
  /** The safety-net poll while wake-ups work. */
  pollIntervalMs: number;
  /** Published rows are deleted this long after publication (with 0, the store deletes them at it). */
  retentionSeconds: number;
  cleanupIntervalMs: number;
  /** How long a standby waits before it asks for the outbox again after a failed attempt. */
  standbyRetryMs?: number;
  /** Rows per marking statement. */
  markChunkSize: number;
  /**
   * CDC: how long streamed rows acknowledged by Kafka may wait to be marked, so that the rows of many
   * sends are marked by one statement (0: each send's rows at once). Sooner once `markChunkSize` wait.
   */
  markIntervalMs: number;
  /**
   * CDC: how long a send waits for more streamed rows while rows arrive more often than one per
   * `2 × lingerMs` on average (0: never). Each send costs a lease check, a visibility check and a produce
   * request whatever its size: at 100 sagas/s a row or two each without it.
   */
  lingerMs?: number;
  /**
   * CDC: a lingering send goes as soon as this many streamed rows wait, without waiting the rest of
   * `lingerMs`: at a high rate the batch fills in less than the linger, which would then only add latency.
   */
  lingerRows?: number;
  /**
   * How long the relay waits for one outbox statement before it gives up on it and cancels it: the
   * client-side bound for a connection the server cannot answer on (`statement_timeout` is the server's).
   */
  queryTimeoutMs: number;
  /**
   * How long Kafka may leave this owner without an acknowledgement while rows wait to be sent (or its
   * producer connects) before it gives the outbox up to another instance (see createStallClock).
   */
  sendStallMs: number;
  logger: Logger;
  metrics: RelayMetrics;
  /** Test only: called at named points of a round with rows in hand (see crash-points.ts). */
  crashPoint?: (point: CrashPoint) => void;
};

export type OutboxRelay = {
  /** Competes for the outbox and, once its owner, publishes it until `stop()` or until its loop crashes. */
  start(): void;
  /**
   * Finishes the batch in hand, gives ownership up and stops; the batch is no longer waited for once
   * `deadline` aborts (default: 4 s from the call).
   */
  stop(deadline?: AbortSignal): Promise<void>;
  isActive(): boolean;
  /**
   * Settles with the error that crashed the loop (a defect, not a failure of the database or the broker,
   * which are retried), once ownership is given up; never settles otherwise.
   */
  readonly failed: Promise<Error>;
  /** The error that crashed the loop, if it did. */
  failure(): Error | undefined;
  /** The outbox's unpublished rows, less those this owner has on Kafka and has not marked yet. */
  backlog(signal?: AbortSignal): Promise<Backlog>;
};

// While the wake-up stream is down, polling is the only trigger: keep latency bounded meanwhile.
const FALLBACK_POLL_MS = 100;
const CLEANUP_BATCH = 1000;
// A standby's wait for the lock on the server, asked again after it: one message every 30 s instead of an
// attempt every second, and the lock the moment it is free.
const STANDBY_WAIT_MS = 30_000;
const MAX_BACKOFF_MS = 5000;
const DEFAULT_STOP_DEADLINE_MS = 4000;
// How long the producer's close is waited for when ownership ends without a stop (a lost lease, a crash of
// the loop): the lease is released after it, and a close held up by a broker that went away must not keep it.
const PRODUCER_CLOSE_MS = 5000;
// CDC: how many ids of rows sent from the table are remembered, to skip them when streamed again.
const MAX_REMEMBERED_SENDS = 100_000;
// CDC: how long a streamed batch may wait for its transactions to become visible, and the longest pause
// between two looks. A commit is visible a moment after the stream has it (microseconds, or the time a
// descheduled writer needs to run again); one that stays invisible (a writer waiting for a synchronous
// standby, or frozen) would hold back every aggregate of the outbox behind it, so past the bound the
// relay reads the table instead, which sends what is visible and waits for nothing.
const VISIBILITY_WAIT_MS = 1000;
const VISIBILITY_MAX_PAUSE_MS = 50;

/**
 * The send-stall watchdog's clock. It runs while this owner waits for Kafka to make progress: from the
 * start of a producer's connect until it is connected, and from the first attempt to send rows in hand
 * until Kafka acknowledges a request of them (up to `batchSize` rows), through failed attempts, their
 * back-off and the re-reads between them; each acknowledged request of a batch sent in several starts it
 * again. A round with nothing to send stops it. Past `ms` it calls `onStall` once.
 */
function createStallClock(ms: number, onStall: () => void) {
  let timer: NodeJS.Timeout | undefined;
  // Rows wait for Kafka since an attempt to send them: a connect in between does not stop the clock.
  let rowsInHand = false;
  const start = () => {
    timer ??= setTimeout(() => {
      timer = undefined;
      onStall();
    }, ms);
  };
  const stop = () => {
    clearTimeout(timer);
    timer = undefined;
  };
  return {
    connecting: start,
    connected() {
      if (!rowsInHand) stop();
    },
    sending() {
      rowsInHand = true;
      start();
    },
    /** A send acknowledged, or nothing left to send. */
    settled() {
      rowsInHand = false;
      stop();
    },
    /** Kafka acknowledged a request of the batch in hand, and more of it is to be sent: progress. */
    progressed() {
      if (timer === undefined) return;
      stop();
      start();
    },
    stop,
  };
}

/** A row Kafka acknowledged, and when (`performance.now()`): its mark records that moment. */
type AcknowledgedRow = { id: string; ackedAt: number };

/**
 * CDC: streamed rows on Kafka that wait for their mark, with the stream batches they came in (confirmed
 * to the server once marked). Due `intervalMs` after the oldest was acknowledged.
 */
function createUnmarked(intervalMs: number) {
  let rows: AcknowledgedRow[] = [];
  let batches: StreamBatch[] = [];
  return {
    get size() {
      return rows.length;
    },
    add(sent: readonly PendingRow[], ackedAt: number, batch: StreamBatch): void {
      for (const row of sent) rows.push({ id: row.id, ackedAt });
      batches.push(batch);
    },
    /** Milliseconds until the oldest row is due to be marked (0: now; infinite: none waits). */
    dueInMs(): number {
      const oldest = rows[0];
      if (!oldest) return Number.POSITIVE_INFINITY;
      return Math.max(0, oldest.ackedAt + intervalMs - performance.now());
    },
    ids(): string[] {
      return rows.map((row) => row.id);
    },
    take(): { rows: AcknowledgedRow[]; batches: StreamBatch[] } {
      const taken = { rows, batches };
      rows = [];
      batches = [];
      return taken;
    },
  };
}

/**
 * A defect in the code (the relay's or a library's), not a failure of the database or the broker: retrying
 * would repeat it for ever while the lease keeps the standby out, so it crashes the loop instead.
 */
function isDefect(err: unknown): boolean {
  return (
    err instanceof TypeError ||
    err instanceof ReferenceError ||
    err instanceof RangeError ||
    err instanceof SyntaxError
  );
}

/**
 * One outbox's relay. On standby it waits on the server for the outbox's advisory lock, granted the
 * moment the owner's session ends; as owner it
 * loops: read the oldest unpublished rows, send them (resolves once acknowledged by all in-sync
 * replicas), mark them published, and when nothing is left wait for a wake-up or the poll timer.
 * Losing the lock stops the loop before its next send.
 *
 * Why this keeps per-aggregate order, with and without crashes: writers lock the aggregate before they
 * insert, so one aggregate's rows commit in position order; a read therefore never sees a row of an
 * aggregate without every earlier unpublished row of it, and the batch sends them in position order on
 * one partition (same key) through an idempotent producer with one request in flight. A row is marked
 * only after its acknowledgement, so a row that is skipped by a read is either unpublished (and comes
 * first in that batch) or already on Kafka. Crashes only add re-sends, later than the first copy.
 *
 * Failures of the database or the broker are retried with back-off. Anything else (a defect) crashes the
 * loop: it gives the outbox up at once, so a standby takes over, and settles `failed`, on which the
 * process reports not ready and exits non-zero to be restarted. It never sits on a lease it cannot use:
 * nor while Kafka leaves it without an answer (the clients retry, and a send or connect a client gives
 * up is tried again here, so a send to a broker this instance cannot reach never succeeds and never
 * ends), which after `sendStallMs` gives the outbox up too.
 */
export function createOutboxRelay(opts: OutboxRelayOptions): OutboxRelay {
  const { name, store, lease, kafka, topicPrefix, batchSize, pollIntervalMs, logger, metrics } = opts;
  const { standbyRetryMs = 1000, markChunkSize, markIntervalMs, queryTimeoutMs, crashPoint, mode } = opts;
  const { sendStallMs } = opts;
  const lingerMs = opts.lingerMs ?? 0;
  const lingerRows = Math.min(opts.lingerRows ?? batchSize, batchSize);
  const log = logger.child({ outbox: name });
  const labels = { outbox: name };
  metrics.active.set(labels, 0);
  // At 0 from the start, so that `rate()` and `increase()` see the first error of each stage.
  for (const stage of RELAY_STAGES) metrics.errors.inc({ ...labels, stage }, 0);

  const stopping = new AbortController();
  let running: Promise<void> | undefined;
  let active = false;
  let crashed: Error | undefined;
  let onCrash: (err: Error) => void = () => {};
  const failed = new Promise<Error>((resolve) => (onCrash = resolve));
  // What `stop()` waits until; the producer's close is bounded by it too.
  let stopDeadline: AbortSignal | undefined;
  // CDC: the ids of the rows on Kafka that wait for their mark, while this instance owns the outbox.
  let awaitingMark: () => string[] = () => [];
  // A producer being connected, kept across ownerships: the clients retry a connect for long (kafkajs for
  // ever, the platformatic one for about 50 s) and take no signal, so one that outlasted its ownership (a
  // broker this instance cannot reach) is taken up by the next ownership rather than started again, and a
  // long outage leaves one connect running, not one a turn.
  let connecting: Promise<EventProducer> | undefined;

  /** One outbox statement, cancelled when it outlasts `queryTimeoutMs` or `until` aborts. */
  const query = <T>(what: string, run: (signal: AbortSignal) => Promise<T>, until?: AbortSignal) =>
    withTimeout(run, queryTimeoutMs, `${name} outbox: ${what}`, until);

  const fail = (stage: RelayStage, err: unknown, message: string) => {
    metrics.errors.inc({ ...labels, stage });
    log.warn({ err, stage }, message);
  };

  async function run(): Promise<void> {
    let waitingSince: number | undefined;
    while (!stopping.signal.aborted) {
      const asked = performance.now();
      const owned = await lease.acquire(STANDBY_WAIT_MS, stopping.signal, (err) =>
        fail("lock", err, "could not wait for the outbox's lock; trying again"),
      );
      if (!owned) {
        waitingSince ??= Date.now();
        // A wait that ended early failed (the database unreachable): retried after a pause. One that
        // lasted its time is asked again at once.
        if (performance.now() - asked < standbyRetryMs) await sleep(standbyRetryMs, stopping.signal);
        continue;
      }
      log.info(
        { standbyMs: waitingSince === undefined ? 0 : Date.now() - waitingSince },
        "owner of the outbox: publishing",
      );
      waitingSince = undefined;
      active = true;
      metrics.active.set(labels, 1);
      // Said at once, even while a send that began before the loss is still blocked on a broker.
      const demote = () => {
        active = false;
        metrics.active.set(labels, 0);
      };
      owned.addEventListener("abort", demote, { once: true });
      // Kafka left this owner without an answer for `sendStallMs`: see publishWhileOwner.
      const stalled = new AbortController();
      // One signal for every reason to stop: the lease was lost, the process is stopping, or Kafka stalled.
      const until = AbortSignal.any([owned, stopping.signal, stalled.signal]);
      try {
        await publishWhileOwner(until, stalled);
      } finally {
        owned.removeEventListener("abort", demote);
        demote();
      }
      if (owned.aborted)
        log.warn({ reason: String(owned.reason) }, "lost ownership of the outbox: standing by");
      else if (stalled.signal.aborted) {
        // The session's end grants the lock to a standby waiting for it, at once; this instance then asks
        // again, behind it. Alone, it takes the outbox back with a new producer.
        await lease.release();
        log.warn("gave the outbox up: standing by");
      }
    }
    const left = connecting;
    connecting = undefined;
    void left?.then((producer) => producer.close()).catch(() => {});
    await lease.release();
  }

  /**
   * Publishes until `until` aborts. While rows wait for Kafka (or a producer connects), the stall clock
   * runs; past `sendStallMs` without an acknowledgement it counts a send error, aborts `stalled` (which
   * `until` includes) and stops waiting for the send in hand, whose producer is dropped: a broker this
   * instance cannot reach must not keep the outbox here, while the lease, healthy, keeps a standby that
   * can reach it waiting. `run` then releases the lease.
   *
   * Abandoned, that send may still reach Kafka later (its request held on the way, then delivered): as
   * copies only. When any owner's send starts, every earlier row of each of its keys is either in it,
   * ahead, or already acknowledged, hence on Kafka (see createOutboxRelay, and README.md's CDC
   * "Per-aggregate order"), so whenever it lands, it lands behind a first copy of each earlier row. And
   * none of its rows is marked, so the next owner sends them all again.
   */
  async function publishWhileOwner(until: AbortSignal, stalled: AbortController): Promise<void> {
    const wake = createWakeSignal();
    const wakeups = opts.startWakeups(
      () => {
        metrics.wakeups.inc({ ...labels, source: "replication" });
        wake.notify();
      },
      (err) => {
        fail("wakeup", err, "replication wake-ups interrupted; polling meanwhile");
        // A CDC round waiting on the stream must not wait for the slow poll to learn it is gone.
        wake.notify();
      },
    );
    // Ends the cleanup loop however this ends: a lost lease, a stop, or a crash.
    const ended = new AbortController();
    const cleanup = startCleanup(AbortSignal.any([until, ended.signal]));
    const stall = createStallClock(sendStallMs, () => {
      metrics.errors.inc({ ...labels, stage: "send" });
      log.warn(
        { stage: "send", stallMs: sendStallMs },
        "no send acknowledged by Kafka in RELAY_SEND_STALL_MS while rows wait (or a producer connects): giving the outbox up to an instance that waits for it",
      );
      stalled.abort(new Error(`Kafka acknowledged nothing for ${sendStallMs} ms`));
    });
    let producer: EventProducer | undefined;
    let backoffMs = 100;
    // CDC: the stream connection whose earlier rows the table has been read for; until then, read the table.
    let caughtUp: number | undefined;
    // CDC: the connection being caught up, and the transactions a read must see ended (see catchUpBoundary).
    let catchingUp: { generation: number; boundary: bigint } | undefined;
    // CDC: rows sent from the table reads, which the stream may carry again: skipped when it does. Rows
    // committed before a slot's starting point are never streamed, so their ids stay until the bound.
    const sentFromTable = new Set<string>();
    // CDC: streamed rows on Kafka, not marked yet; marked together by `markAcknowledged`.
    const unmarked = createUnmarked(markIntervalMs);
    // CDC: whether rows stream in fast enough for a send to wait for the next ones.
    const linger = createLingerGate(lingerMs);
    awaitingMark = () => unmarked.ids();
    // Table mode: transactions the stream announced that a read could not see yet, and how long the loop
    // waits before it looks again (doubling from 1 ms while they stay unseen; see `idle`).
    let unseen: number[] = [];
    let lookAgainMs = 1;

    /**
     * Waits for a wake-up or the poll. Table mode: the stream announces a commit a moment before other
     * sessions see it, and no later message says when they do; while a read missed announced
     * transactions, the loop looks again after 1, 2, 4, … ms instead, until the poll comes as soon.
     */
    async function idle(): Promise<void> {
      stall.settled();
      const pollMs = wakeups.connected ? pollIntervalMs : FALLBACK_POLL_MS;
      if (lookAgainMs >= pollMs) {
        unseen = [];
        lookAgainMs = 1;
      }
      const lookingAgain = unseen.length > 0;
      const how = await wake.wait(lookingAgain ? lookAgainMs : pollMs, until);
      if (how !== "timeout") return;
      if (lookingAgain) lookAgainMs *= 2;
      metrics.wakeups.inc({ ...labels, source: lookingAgain ? "visibility" : "poll" });
    }

    /**
     * Marks the acknowledged rows that wait, in one statement per chunk, then lets the slot move past
     * them. Before any read of the table (it would find them unpublished and send them again), when the
     * oldest has waited `markIntervalMs`, once a chunk's worth wait, and when this ownership ends.
     */
    async function markAcknowledged(): Promise<void> {
      const { rows, batches } = unmarked.take();
      if (rows.length > 0) {
        try {
          await markPublished(rows);
        } catch (err) {
          // Not marked: still unpublished in the table, and the stream has moved past them. A new
          // connection reads the table first, and sends them again.
          wakeups.restart();
          throw err;
        }
      }
      // Only now may the slot move past these rows (it matters while this connection lasts: the slot
      // is temporary, and the next connection starts from the table).
      wakeups.acknowledge(batches);
    }

    try {
      while (!until.aborted) {
        let stage: RelayStage = "send";
        let streamed: StreamBatch | undefined;
        try {
          if (!producer) {
            stall.connecting();
            producer = await connectProducer(until);
            if (!producer) break;
            stall.connected();
          }
          stage = "read";
          wake.clear();
          const readStarted = performance.now();
          let rows: PendingRow[];
          const streaming = mode === "cdc" && wakeups.connected && caughtUp === wakeups.generation;
          metrics.streaming.set(labels, streaming ? 1 : 0);
          if (streaming) {
            if (unmarked.dueInMs() === 0) {
              stage = "mark";
              await markAcknowledged();
              stage = "read";
            }
            // Under load, the rows about to arrive share this send (see OutboxRelayOptions.lingerMs and
            // lingerRows).
            if (linger.shouldLinger()) {
              const lingerEnds = performance.now() + lingerMs;
              // Each streamed commit wakes `wake`: the send goes once `lingerRows` wait, at the linger's
              // end, or when acknowledged rows fall due to be marked (a long linger must not hold them).
              while (wakeups.queuedRows < lingerRows && wakeups.connected && !until.aborted) {
                const leftMs = Math.min(lingerEnds - performance.now(), unmarked.dueInMs());
                if (leftMs <= 0) break;
                await wake.wait(leftMs, until);
              }
            }
            streamed = wakeups.take(batchSize, caughtUp);
            rows = streamed?.rows ?? [];
            linger.arrived(rows.length);
            if (sentFromTable.size > 0) rows = rows.filter((row) => !sentFromTable.delete(row.id));
            if (rows.length === 0) {
              if (streamed) {
                // Confirmed with the rows before it, once they are marked.
                if (unmarked.size > 0) unmarked.add([], 0, streamed);
                else wakeups.acknowledge([streamed]);
                continue;
              }
              // The stream started over meanwhile (a new connection, or its rows given up): the table first.
              if (wakeups.generation !== caughtUp) continue;
              stall.settled();
              if (unmarked.size > 0) {
                // Nothing to send: mark what waits when it is due, unless more rows come first.
                if ((await wake.wait(unmarked.dueInMs(), until)) === "timeout") {
                  stage = "mark";
                  await markAcknowledged();
                }
                continue;
              }
              const how = await wake.wait(pollIntervalMs, until);
              if (how === "timeout") {
                // Nothing streamed for a while: the slow poll reads the table anyway, as in the table mode
                // (a row it finds is sent now and again when streamed: a duplicate, never a gap).
                metrics.wakeups.inc({ ...labels, source: "poll" });
                rows = await query("read", (signal) => store.readBatch(batchSize, signal), until);
                if (rows.length === 0) continue;
              } else continue;
            }
          } else {
            // Rows on Kafka are marked before the table is read, or it would send them again.
            if (unmarked.size > 0) {
              stage = "mark";
              await markAcknowledged();
              stage = "read";
            }
            const generation = mode === "cdc" && wakeups.connected ? wakeups.generation : undefined;
            if (generation !== undefined && catchingUp?.generation !== generation) {
              // Taken after the stream is up, so after its slot's starting point: every transaction that
              // committed before that point has an id below this boundary.
              const boundary = await query("read", (signal) => store.catchUpBoundary(signal), until);
              catchingUp = { generation, boundary };
            }
            if (mode === "table") {
              // A snapshot taken before the read says which announced transactions the read will see; one
              // statement per round, only when the stream announced some. Kept if it fails, to look again.
              const announced = wakeups.takeAnnounced();
              unseen = unseen.concat(announced);
              if (unseen.length > 0) {
                stage = "visibility";
                const snapshot = await query("visibility", (signal) => store.currentSnapshot(signal), until);
                if (invisibleIn(announced, snapshot).length > 0) metrics.visibilityWaits.inc(labels);
                unseen = invisibleIn(unseen, snapshot);
                if (unseen.length === 0) lookAgainMs = 1;
                stage = "read";
              }
            }
            // A commit is in the WAL (and may precede the slot's starting point) a moment before it is
            // visible to other sessions. A read whose snapshot has every transaction below the boundary
            // ended has seen all of those; if it also took every unpublished row, the stream carries the
            // rest, in commit order.
            const snapshot =
              generation !== undefined
                ? await query("read", (signal) => store.currentSnapshot(signal), until)
                : undefined;
            rows = await query("read", (signal) => store.readBatch(batchSize, signal), until);
            if (
              rows.length < batchSize &&
              generation !== undefined &&
              snapshot !== undefined &&
              catchingUp !== undefined &&
              endedBefore(catchingUp.boundary, snapshot)
            )
              caughtUp = generation;
            if (rows.length === 0) {
              if (caughtUp === generation && generation !== undefined) continue;
              await idle();
              backoffMs = 100;
              continue;
            }
          }
          if (streamed && rows.length > 0) {
            stage = "visibility";
            await awaitVisible(streamed.xids, until);
            stage = "read";
          }
          crashPoint?.("before-send");
          // The last look before a send: a relay that lost its lock must not publish any more. Streamed
          // rows are in hand with nothing read from the lock's session before the send, so after a freeze (or a stalled
          // loop) the lock is asked for first: the rows its socket buffered meanwhile would otherwise go
          // out after a standby took over, before the lock session's end is read.
          await lease.confirm();
          if (until.aborted) break;
          stage = "send";
          const sendStarted = performance.now();
          stall.sending();
          // Not given up when the lease is lost or the relay stops (the batch in hand is finished), only
          // when Kafka stalled.
          const sending = producer;
          await withTimeout(
            (abandoned) => send(sending, rows, abandoned, stall.progressed),
            Number.POSITIVE_INFINITY,
            "send",
            stalled.signal,
          );
          stall.settled();
          const acknowledged = performance.now();
          recordAcknowledged(rows, (acknowledged - sendStarted) / 1000);
          if (mode === "cdc" && !streamed) {
            if (sentFromTable.size + rows.length > MAX_REMEMBERED_SENDS) sentFromTable.clear();
            for (const row of rows) sentFromTable.add(row.id);
          }
          crashPoint?.("after-send");
          stage = "mark";
          // Marked even if ownership was lost meanwhile: the rows are on Kafka, so marking only saves re-sends.
          if (streamed) {
            // Marked with the rows of the sends before and after it, in one statement (see markAcknowledged);
            // at once when the interval is 0, a chunk's worth waits, or this ownership is ending.
            unmarked.add(rows, acknowledged, streamed);
            if (markIntervalMs === 0 || unmarked.size >= markChunkSize || until.aborted)
              await markAcknowledged();
          } else await markPublished(rows.map((row) => ({ id: row.id, ackedAt: acknowledged })));
          if (log.isLevelEnabled("debug")) {
            const ms = (from: number, to: number) => Math.round((to - from) * 10) / 10;
            const marked = performance.now();
            log.debug(
              {
                rows: rows.length,
                streamed: streamed !== undefined,
                from: rows[0]?.position,
                to: rows.at(-1)?.position,
                readMs: ms(readStarted, sendStarted),
                sendMs: ms(sendStarted, acknowledged),
                markMs: ms(acknowledged, marked),
              },
              "batch published",
            );
          }
          backoffMs = 100;
          if (!streamed && rows.length < batchSize && caughtUp === undefined) {
            // A short read took every row visible to it; a later commit wakes us (the signal was cleared
            // before the read, so none is missed), and one it could not see yet is looked at again (idle).
            await idle();
          }
        } catch (err) {
          if (isDefect(err)) throw err;
          // A batch taken from the stream that did not get through: its rows are still unpublished in the
          // table, and the stream has moved past them. Start a new connection, which reads the table first.
          if (streamed) wakeups.restart();
          // CDC: whatever failed, the table is read again before the stream is trusted (a row left
          // unpublished behind the stream's position would otherwise wait for the idle poll).
          caughtUp = undefined;
          // A statement cancelled because ownership was lost or the relay is stopping: nothing to retry.
          if (until.aborted) break;
          fail(stage, err, `${stage} failed; retrying`);
          if (stage === "send" && producer) {
            // An idempotent producer can end in a state it never leaves (a fenced or unknown producer id):
            // start over with a new one. Re-sending the batch is allowed; the consumers' inbox absorbs it.
            // Not waited for past a stall, which must end this ownership.
            await producer.close(stalled.signal).catch(() => {});
            producer = undefined;
          }
          await sleep(backoffMs, until);
          backoffMs = Math.min(backoffMs * 2, MAX_BACKOFF_MS);
        }
      }
    } finally {
      stall.stop();
      // Rows on Kafka that wait for their mark: marking them now saves their re-sends by the next owner.
      if (unmarked.size > 0)
        await markAcknowledged().catch((err: unknown) =>
          fail("mark", err, "could not mark the acknowledged rows; the next owner sends them again"),
        );
      awaitingMark = () => [];
      metrics.streaming.set(labels, 0);
      ended.abort();
      const closeBy = stopDeadline ?? AbortSignal.timeout(PRODUCER_CLOSE_MS);
      const closing = producer?.close(closeBy).catch(() => {});
      // After a stall the producer is dropped, not waited for: its close would wait on the broker it
      // cannot reach (it ends by itself; PRODUCER_CLOSE_MS bounds it otherwise).
      await Promise.all([wakeups.stop(), cleanup(), stalled.signal.aborted ? undefined : closing]);
    }
  }

  /**
   * CDC: resolves once every one of `xids` is visible to other sessions. The stream carries a transaction
   * once its commit record is flushed; the writer makes it visible a moment later (PostgreSQL flushes the
   * commit, then takes the transaction out of the running ones). Sent in between, an event could reach
   * a consumer before the state it announces can be read (README.md, "Change data capture"). One
   * statement per batch, however many transactions it holds; more only while one is still running,
   * with short pauses, for at most VISIBILITY_WAIT_MS, after which it throws: the caller then drops the
   * stream and reads the table.
   */
  async function awaitVisible(xids: readonly number[], until: AbortSignal): Promise<void> {
    const deadline = performance.now() + VISIBILITY_WAIT_MS;
    for (let pauseMs = 1; ; pauseMs = Math.min(pauseMs * 2, VISIBILITY_MAX_PAUSE_MS)) {
      const snapshot = await query("visibility", (signal) => store.currentSnapshot(signal), until);
      const invisible = invisibleIn(xids, snapshot);
      if (invisible.length === 0) return;
      if (pauseMs === 1) metrics.visibilityWaits.inc(labels);
      if (performance.now() + pauseMs > deadline)
        throw new Error(
          `streamed transactions ${invisible.join(", ")} still not visible after ${VISIBILITY_WAIT_MS} ms`,
        );
      await sleep(pauseMs, until);
      if (until.aborted) throw new Error("stopped while waiting for streamed transactions to be visible");
    }
  }

  /**
   * Resolves with a connected producer, or undefined when `until` fired first; a connect still running
   * then is left to the next call (see `connecting`).
   */
  async function connectProducer(until: AbortSignal): Promise<EventProducer | undefined> {
    if (!connecting) {
      const attempt = kafka.createProducer();
      connecting = attempt;
      // A failed connect is seen by whoever waits for it; the next call starts a new one.
      attempt.catch(() => {
        if (connecting === attempt) connecting = undefined;
      });
    }
    const attempt = connecting;
    let onAbort: () => void = () => {};
    const aborted = new Promise<undefined>((resolve) => {
      onAbort = () => resolve(undefined);
      if (until.aborted) onAbort();
      until.addEventListener("abort", onAbort, { once: true });
    });
    try {
      const producer = await Promise.race([attempt, aborted]);
      if (producer && connecting === attempt) connecting = undefined;
      return producer;
    } finally {
      until.removeEventListener("abort", onAbort);
    }
  }

  /**
   * One producer.send per `batchSize` rows, in order: a batch is more only when the stream delivered one
   * transaction larger than that (whole transactions are taken, up to half of the stream's bound). Each
   * acknowledged request but the last is `progressed`; once the send is `abandoned` (a stall), none
   * more is sent.
   */
  async function send(
    producer: EventProducer,
    rows: PendingRow[],
    abandoned: AbortSignal,
    progressed: () => void,
  ): Promise<void> {
    const messages = rows.map((row) => outboxMessage(row, topicPrefix));
    try {
      for (let i = 0; i < messages.length; i += batchSize) {
        if (i > 0) {
          // Nobody waits for it any more: what it sent lands as copies only (see publishWhileOwner).
          if (abandoned.aborted) return;
          progressed();
        }
        await producer.send(messages.slice(i, i + batchSize));
      }
    } catch (err) {
      // The broker refuses a message larger than its message.max.bytes at every attempt (MESSAGE_TOO_LARGE),
      // and the rows behind it wait, in order: say which row it is. Measured only once a send failed.
      for (const [i, message] of messages.entries()) {
        const bytes = messageBytes(message);
        if (bytes > MAX_MESSAGE_BYTES)
          log.error(
            { row: rows[i]?.id, topic: message.topic, bytes, maxBytes: MAX_MESSAGE_BYTES },
            "an outbox row is larger than a Kafka message may be: the broker refuses it at every attempt, and the rows behind it wait until it is deleted or the topic takes messages that large",
          );
      }
      throw err;
    }
  }

  function recordAcknowledged(rows: PendingRow[], sendSeconds: number): void {
    metrics.batchSize.observe(labels, rows.length);
    metrics.published.inc(labels, rows.length);
    // Age at read time on the database's clock, plus the time since on ours: no clock skew.
    for (const row of rows) metrics.commitToAck.observe(labels, row.ageSeconds + sendSeconds);
  }

  /**
   * In order, one short statement per chunk, each row stamped with the time Kafka acknowledged it. A
   * crash between two chunks leaves a prefix marked; the rest is sent again after the restart, after its
   * first copy.
   */
  async function markPublished(rows: readonly AcknowledgedRow[]): Promise<void> {
    for (let i = 0; i < rows.length; i += markChunkSize) {
      if (i === markChunkSize) crashPoint?.("mid-mark");
      const chunk = rows.slice(i, i + markChunkSize);
      await query("mark", (signal) => {
        const now = performance.now();
        return store.markPublished(
          chunk.map((r) => r.id),
          chunk.map((r) => (now - r.ackedAt) / 1000),
          signal,
        );
      });
    }
  }

  /** Deletes expired published rows periodically, a small batch per statement; returns its stopper. */
  function startCleanup(until: AbortSignal): () => Promise<void> {
    const done = (async () => {
      while (!until.aborted) {
        await sleep(opts.cleanupIntervalMs, until);
        if (until.aborted) break;
        try {
          let deleted = 0;
          for (;;) {
            const n = await query(
              "cleanup",
              (signal) => store.deleteExpired(opts.retentionSeconds, CLEANUP_BATCH, signal),
              until,
            );
            deleted += n;
            metrics.deleted.inc(labels, n);
            if (n < CLEANUP_BATCH || until.aborted) break;
          }
          if (deleted > 0)
            log.info({ deleted, retentionSeconds: opts.retentionSeconds }, "deleted expired published rows");
        } catch (err) {
          fail("cleanup", err, "cleanup failed; will retry");
        }
      }
    })();
    return () => done;
  }

  return {
    start() {
      running ??= run().catch(async (err: unknown) => {
        crashed = err instanceof Error ? err : new Error(String(err));
        // Given up before anything else: the standby may take over while this process exits.
        await lease.release();
        log.error({ err }, "relay loop crashed: gave the outbox up");
        onCrash(crashed);
      });
    },
    async stop(deadline = AbortSignal.timeout(DEFAULT_STOP_DEADLINE_MS)) {
      stopDeadline = deadline;
      stopping.abort();
      const loop = running;
      if (loop) {
        await withTimeout(() => loop, Number.POSITIVE_INFINITY, "the batch in hand", deadline).catch(() =>
          log.warn("batch in hand did not finish in time; giving the outbox up anyway"),
        );
      }
      await lease.release();
    },
    isActive: () => active,
    failed,
    failure: () => crashed,
    // The gauges count what is not on Kafka: rows waiting for their mark would otherwise read as a
    // backlog of up to RELAY_MARK_INTERVAL_MS of sends under a steady load.
    backlog: (signal) => store.backlog(signal, awaitingMark()),
  };
}
