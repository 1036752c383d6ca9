/** The @platformatic/kafka adapter (maintained, pure JavaScript): `KAFKA_CLIENT=platformatic`. */
import { tracingChannel } from "node:diagnostics_channel";
import { isIP } from "node:net";
import {
  Admin,
  Consumer,
  compatibilityPartitioner,
  findErrorBy,
  GenericError,
  type Message,
  type MessagesStream,
  ProduceAcks,
  Producer,
  stringDeserializers,
  stringSerializers,
} from "@platformatic/kafka";
import { createLingerGate, sleep, withTimeout } from "@saga/runtime";
import { createCommitCoalescer } from "./commits.ts";
import { createApplier } from "./handling.ts";
import {
  type ConsumerOptions,
  DEFAULT_COMMIT_INTERVAL_MS,
  DEFAULT_REQUEST_RETRY,
  DEFAULT_SESSION_TIMEOUT_MS,
  type EventConsumer,
  type EventProducer,
  type IncomingMessage,
  type KafkaClient,
  type KafkaOptions,
  type KafkaSasl,
  type KafkaTls,
  type PartitionLag,
  type SkippedRecords,
} from "./port.ts";
import { createProbes } from "./probes.ts";
import { securityRefusal } from "./refusals.ts";
import { sendRuns } from "./sizes.ts";

type StringMessage = Message<string, string, string, string>;
type StringStream = MessagesStream<string, string, string, string>;

type Log = (
  level: "error" | "warn" | "info" | "debug",
  message: string,
  extra: { err?: unknown; [key: string]: unknown },
) => void;

/**
 * A client's first connection, rejected as soon as one of its attempts is refused for its security: it
 * would be refused again and again, and a process is better told at its start than left waiting.
 */
function startOrRefuse() {
  let refuse: (refusal: Error) => void = () => {};
  const refused = new Promise<never>((_, reject) => {
    refuse = reject;
  });
  refused.catch(() => {});
  let starting = true;
  return {
    onRefused: (refusal: Error) => {
      if (starting) refuse(refusal);
    },
    async start<T>(connect: Promise<T>): Promise<T> {
      // Once a refusal has won the race, the connect's own failure (the client closed under it) is nobody's.
      connect.catch(() => {});
      try {
        return await Promise.race([connect, refused]);
      } finally {
        starting = false;
      }
    },
  };
}

/**
 * The library's TLS and SASL options for ours. The server name (SNI, which a managed Kafka may route by)
 * is each broker's host, as kafkajs sends it; not when the brokers are named by IP address, which SNI
 * forbids (RFC 6066, 3).
 */
function securityOptions(brokers: string[], tls?: KafkaTls, sasl?: KafkaSasl) {
  // An IPv6 address comes in brackets ([::1]:9092).
  const named = brokers.every((b) => isIP(b.slice(0, b.lastIndexOf(":")).replace(/^\[(.*)\]$/, "$1")) === 0);
  return {
    ...(tls && { tls: tls.ca === undefined ? {} : { ca: tls.ca }, tlsServerName: named }),
    ...(sasl && {
      sasl: {
        mechanism: sasl.mechanism.toUpperCase() as "PLAIN" | "SCRAM-SHA-256" | "SCRAM-SHA-512",
        username: sasl.username,
        password: sasl.password,
      },
    }),
  };
}

/**
 * A request the library gave up on, readable in one log line: @platformatic/kafka reports it with the
 * errors of all its attempts (MultipleErrors, nested when the request retried another: up to 15 × 15),
 * which a line would print whole, stacks and all, and a join adds their messages to its own. Kept: the
 * first sentence of its message ("joinGroup failed 15 times") and, as its cause, the last attempt's
 * innermost error.
 */
function briefly(err: unknown): unknown {
  if (!(err instanceof AggregateError) || err.errors.length === 0) return err;
  let last: unknown = err;
  while (last instanceof AggregateError && last.errors.length > 0) last = last.errors.at(-1);
  return new Error(err.message.split(". ", 1)[0], { cause: last });
}

/**
 * Whether the library gave a request up because its retries ran out (a broker away), rather than for an
 * error it never retries (a closed client, a refused authentication).
 */
const retriesRanOut = (err: unknown) =>
  err instanceof Error && GenericError.isGenericError(err) && findErrorBy(err, "canRetry", false) === null;

/**
 * How long the broker may hold a fetch when there is nothing to read: what an idle consumer costs is one
 * fetch per broker per this long (a fetch answers as soon as a message arrives, so it costs no latency).
 * stop() does not wait for it (the library fetches on connections of their own), but a partition newly
 * assigned by a rebalance waits for the fetch in flight to its broker before it is fetched: up to 2 s
 * after a rebalance, for a quarter of the idle fetches of 500 ms (bench/JOURNAL.md).
 */
const FETCH_MAX_WAIT_MS = 2000;

/**
 * The library traces its requests for offsets here (@platformatic/kafka's diagnostic.js,
 * https://github.com/platformatic/kafka/blob/main/docs/diagnostic.md): the context names the client and
 * the operation, and holds the answer when the callback is called. A stream reads its group's committed
 * offsets with `listCommittedOffsets` (a Map of topic to offsets by partition, -1 where nothing was
 * committed) and, in that callback, sets where it fetches from and emits "offsets".
 */
const offsetRequests = tracingChannel<unknown, { client: unknown; operation: string }>(
  "plt:kafka:consumer:offsets",
);

/**
 * Heartbeats keep a member in its group and tell it when to rejoin: a rebalance waits up to this long
 * for every member to notice. Kafka's and the library's default, a third of our session timeout.
 */
const HEARTBEAT_INTERVAL_MS = 3000;

function toIncoming(m: StringMessage): IncomingMessage {
  const headers: Record<string, string | undefined> = {};
  for (const [name, value] of m.headers) headers[name] = value;
  return {
    topic: m.topic,
    partition: m.partition,
    offset: m.offset.toString(),
    key: m.key ?? null,
    value: m.value ?? null,
    headers,
    timestamp: Number(m.timestamp),
  };
}

/** Creates a @platformatic/kafka client for one set of brokers. */
export function createPlatformaticClient({
  brokers,
  clientId,
  logger,
  connectionTimeout = 3000,
  adminTimeout = 2000,
  tls,
  sasl,
  requestRetry = DEFAULT_REQUEST_RETRY,
}: KafkaOptions): KafkaClient {
  const log: Log = (level, message, extra) =>
    logger?.[level]("err" in extra ? { ...extra, err: briefly(extra.err) } : extra, `kafka: ${message}`);
  const base = {
    clientId,
    bootstrapBrokers: brokers,
    connectTimeout: connectionTimeout,
    ...securityOptions(brokers, tls, sasl),
  };
  /** An error of the library, or what it hides: a refusal for security, named. */
  const named = (err: unknown) => securityRefusal(err, { resetHandshakes: true }) ?? err;
  // The wait after the `attempt`th failed attempt (1 for the first), the library's and the adapter's.
  const backoff = (attempt: number) =>
    Math.min(requestRetry.backoffMs * 2 ** (attempt - 1), requestRetry.maxBackoffMs);
  // Retried for a while, not for ever (see DEFAULT_REQUEST_RETRY): past it the producer's connect or send
  // fails to its caller, which tries again (the relay does), and the consumer joins its group again
  // (`startOver`, `subscribe`). A broker restart never takes a process down. The library's own default
  // is 3 retries a second apart. An attempt refused for its security (the SASL sign-in refused, the
  // broker's certificate not trusted) is retried too, as the library would, but never silently: each is
  // logged with its reason, and `onRefused` is told (a client still starting gives up on it: see
  // `startOrRefuse`).
  const requests = (onRefused: (refusal: Error) => void = () => {}) => ({
    retries: Math.max(0, requestRetry.maxAttempts - 1),
    retryDelay: (_client: unknown, operation: string, attempt: number, _retries: number, error?: unknown) => {
      const refusal = securityRefusal(error);
      if (refusal) {
        log("error", refusal.message, { operation, retrying: true });
        onRefused(refusal);
      }
      return backoff(attempt);
    },
  });
  // Aborted by close(): a consumer still joining its group for the first time gives up.
  const closing = new AbortController();

  async function createProducer(): Promise<EventProducer> {
    // Idempotent: the library then keeps one request in flight per connection and acks=all, so a retried
    // batch can neither be duplicated by the broker nor overtake the one before it.
    const first = startOrRefuse();
    const producer = new Producer({
      ...base,
      ...requests(first.onRefused),
      // At least 2: the library retries an idempotent producer's requests for ever when given fewer.
      retries: Math.max(2, requestRetry.maxAttempts - 1),
      idempotent: true,
      acks: ProduceAcks.ALL,
      // The Java client's partitioner (murmur2 & 0x7fffffff), so a key lands on the partition kafkajs, the
      // Go and the Spring versions pick; the library's default (murmur2 >>> 0) differs for half the keys.
      partitioner: compatibilityPartitioner,
      autocreateTopics: false,
      serializers: stringSerializers,
    });
    producer.on("error", (err: Error) => log("warn", "producer error", { err }));
    try {
      // Connects and gets a producer id now, as kafkajs's connect() does, rather than on the first send.
      await first.start(producer.initIdempotentProducer({}));
    } catch (err) {
      await producer.close(true).catch(() => {});
      throw briefly(err);
    }
    return {
      async send(messages) {
        if (messages.length === 0) return;
        // One request after the other, each under the broker's limit (sendRuns), so in order. A request
        // given up drops the producer id (the library gets a new one for the next send), so what was sent
        // again may land twice, as after any failed send.
        try {
          for (const run of sendRuns(messages)) await producer.send({ messages: run });
        } catch (err) {
          throw briefly(err);
        }
      },
      close: (signal) =>
        withTimeout(() => producer.close(true), Number.POSITIVE_INFINITY, "closing the producer", signal),
    };
  }

  async function createConsumer(options: ConsumerOptions): Promise<EventConsumer> {
    const { groupId, topics } = options;
    const maxBatchSize = options.maxBatchSize ?? 64;
    const lingerMs = options.lingerMs ?? 0;
    const linger = createLingerGate(lingerMs);
    const concurrency = options.partitionsConsumedConcurrently ?? 3;
    const sessionTimeout = options.sessionTimeout ?? DEFAULT_SESSION_TIMEOUT_MS;
    const first = startOrRefuse();
    const consumer = new Consumer<string, string, string, string>({
      ...base,
      ...requests(first.onRefused),
      groupId,
      sessionTimeout,
      rebalanceTimeout: sessionTimeout,
      heartbeatInterval: HEARTBEAT_INTERVAL_MS,
      autocommit: false,
      maxWaitTime: FETCH_MAX_WAIT_MS,
      deserializers: stringDeserializers,
    });
    let stopping = false;
    let joined = false;
    const stopped = new AbortController();
    // Tells which partitions have a message in its retry loop (`stuck`): their queues count apart.
    const applyChunk = createApplier(
      {
        ...options,
        onRetry(message, error, retry) {
          stuck(`${message.topic}/${message.partition}`, true);
          options.onRetry?.(message, error, retry);
        },
        onRetriesEnded(message) {
          stuck(`${message.topic}/${message.partition}`, false);
          options.onRetriesEnded?.(message);
        },
      },
      stopped.signal,
    );
    // The last applied message of each partition; committing it commits its partition up to it. The
    // stream's commit coalesces the partitions committing at the same moment into one request.
    const commits = createCommitCoalescer<StringMessage>({
      intervalMs: options.commitIntervalMs ?? DEFAULT_COMMIT_INTERVAL_MS,
      // Only through the stream that is reading now. A message's commit goes through the stream it came
      // from, and one that ended in the middle of a rejoin leaves such a commit unanswered for good; its
      // messages are read again by the stream after it, from the last commit, and committed through that.
      commit: async (offsets) => {
        await Promise.all(offsets.filter(([, m]) => origin.get(m) === stream).map(([, m]) => m.commit()));
      },
      // The library keeps a failed offset and sends it with the next commit; if the group needs a rejoin
      // it ends the stream instead, and the next stream reads again from the last commit. A commit that
      // found the group rebalancing rejoins it first, and when that join gives up the consumer is left
      // outside its group.
      onError: (err) => {
        log("warn", "offset commit failed", { err });
        if (!consumer.isActive()) startOver("the consumer is outside its group; subscribing again");
      },
    });

    // Records deleted before the group read them (a group further behind than the topic's retention.ms):
    // on OFFSET_OUT_OF_RANGE the library fetches from the partition's first record instead, and says
    // nothing (@platformatic/kafka 2.12.1, messages-stream.js, #handleOffsetOutOfRange). So the adapter
    // knows where each partition is to be read from next: from the group's committed offset as the
    // library read it for the stream (`committedAt`, until the partition's first message), then from past
    // the last message read (`nextOffset`). A message past that is a gap: the offsets of our topics are
    // consecutive (idempotent producers, no transactions, no compaction), so the records between were
    // deleted unread. A partition with nothing committed (a new group) starts wherever the library starts it.
    const committedAt = new Map<string, bigint>();
    const nextOffset = new Map<string, bigint>();
    // The gap reported last for each partition, by where it starts: a stream that starts again from the
    // same commit (a rebalance before the first message after the gap was committed) finds it again.
    const reported = new Map<string, bigint>();
    let committedRead: Map<string, bigint[]> | undefined;
    const ignore = () => {};
    const readings = {
      start: ignore,
      end: ignore,
      error: ignore,
      // Called around the stream's callback, which emits "offsets" at once (`subscribe`).
      asyncStart(context: { client: unknown; operation: string; result?: unknown }) {
        if (context.client === consumer && context.operation === "listCommittedOffsets")
          committedRead = context.result as Map<string, bigint[]> | undefined;
      },
      asyncEnd(context: { client: unknown }) {
        if (context.client === consumer) committedRead = undefined;
      },
    };
    offsetRequests.subscribe(readings);

    /** Where a partition is to be read from next, as its stream's message `m` arrives. */
    function checkGap(key: string, m: StringMessage): void {
      const expected = nextOffset.get(key) ?? committedAt.get(key);
      committedAt.delete(key);
      // Before it: read again (a rejoin fetches from the committed offset), or a fetch answered late.
      if (expected !== undefined && m.offset < expected) return;
      nextOffset.set(key, m.offset + 1n);
      if (expected === undefined || m.offset === expected || reported.get(key) === expected) return;
      reported.set(key, expected);
      const gap: SkippedRecords = {
        topic: m.topic,
        partition: m.partition,
        nextOffset: expected.toString(),
        firstRead: m.offset.toString(),
        skipped: Number(m.offset - expected),
      };
      log("error", "records deleted before the group read them were skipped", { groupId, ...gap });
      options.onSkipped?.(gap);
    }

    consumer.on("error", (err: Error) => log("warn", "consumer error", { err }));
    consumer.on("consumer:group:join", () => {
      joined = true;
      for (const key of [...committedAt.keys(), ...nextOffset.keys()]) {
        if (owns(key)) continue;
        committedAt.delete(key);
        nextOffset.delete(key);
      }
      // Partitions this member no longer owns: their queued messages are left to the new owner, which reads
      // from the last commit. Dropping the queue also tells a chunk of the partition being applied that it
      // is no longer this member's (`held`), even if a later rebalance gives the partition back.
      for (const [key, queue] of queues) {
        if (owns(key)) continue;
        forget(key, queue);
        queues.delete(key);
        overflowed.delete(key);
      }
      // Only the marks not handed to the stream yet: one the stream was given while the member rejoined
      // is sent by the library now, in the new generation, which the broker accepts whoever owns the
      // partition (never a loss; at worst the new owner's offset goes back: design.md, Offsets).
      commits.retain(owns);
      stream?.resume();
      // The batches held for a re-read of a partition given up start again.
      schedule();
    });
    consumer.on("consumer:group:leave", () => {
      joined = false;
    });
    // A heartbeat that says the group is rebalancing (or has forgotten this member) makes the library
    // rejoin; one that gives up (its retries ran out) leaves the consumer outside its group, and no
    // heartbeat is sent any more to take it back in.
    consumer.on("consumer:rejoin", () => {
      if (!consumer.isActive()) startOver("could not rejoin the consumer group; subscribing again");
    });
    consumer.on("consumer:heartbeat:error", ({ error }: { error: Error }) =>
      log("debug", "heartbeat failed", { err: error }),
    );

    // Fetched messages wait in one queue per partition. A batch takes what is queued for every partition
    // not in a batch already, up to maxBatchSize, and is applied as one (one transaction, its statements and
    // its commit shared by all its messages): at low rates it holds a message or two, under load it grows
    // with the queues, whatever the number of partitions. Up to `concurrency` batches are in flight; a
    // partition is in one at most, so its messages are applied in order. Past `maxBuffered` the stream is
    // paused until half of them are taken (the library then stops fetching every partition: @platformatic/
    // kafka 2.12 cannot pause one).
    //
    // A partition whose message is being retried (`retrying`) takes nothing from its queue for as long as
    // the failure lasts: counted with the others, its queue would reach the pause and stop every partition
    // with it. It counts apart (`stuckBuffered`) and never pauses the stream; past `maxBuffered` messages
    // of such partitions in all, a retrying partition drops its further messages (`overflowed`), and once
    // it has applied what it queued it is read again from its last commit, on a new stream (`reread`).
    // The new stream drops the commits of the messages in flight on the old one (`commits`) and reads every
    // partition again from its last commit, so it waits until no batch is in flight (`schedule`).
    const queues = new Map<string, StringMessage[]>();
    const busy = new Set<string>();
    let inFlight = 0;
    // Where the next batch starts taking, so that a full batch does not always leave the same partitions out.
    let turn = 0;
    const maxBuffered = Math.max(1024, maxBatchSize * concurrency * 4);
    let buffered = 0;
    const retrying = new Set<string>();
    let stuckBuffered = 0;
    const overflowed = new Set<string>();
    let stream: StringStream | undefined;
    let idle: (() => void) | undefined;
    // The offset of the last message queued for each partition. After a rejoin the library fetches again
    // from the committed offset while a fetch sent before it may still answer with later messages; taking
    // only offsets above this one keeps each partition's messages in order, without gaps or second copies.
    const lastQueued = new Map<string, bigint>();
    // The stream each queued message came from (see `commits`).
    const origin = new WeakMap<StringMessage, StringStream>();
    const owns = (key: string) =>
      consumer.assignments?.some((a) => a.partitions.some((p) => `${a.topic}/${p}` === key)) ?? false;
    /** Counts `n` messages queued (or, negative, taken) for a partition, where its queue counts now. */
    const count = (key: string, n: number) => {
      if (retrying.has(key)) stuckBuffered += n;
      else buffered += n;
    };
    /** A partition's message starts (or stops) being retried: its queue moves from one count to the other. */
    const stuck = (key: string, isStuck: boolean) => {
      if (retrying.has(key) === isStuck) return;
      const queued = queues.get(key)?.length ?? 0;
      count(key, -queued);
      if (isStuck) retrying.add(key);
      else retrying.delete(key);
      count(key, queued);
      if (stopping) return;
      if (buffered >= maxBuffered) stream?.pause();
      else if (buffered < maxBuffered / 2) stream?.resume();
      // Batches held for a re-read start again: the re-read now waits for this retry's end (`schedule`).
      if (isStuck) schedule();
    };
    /** Drops what is queued for a partition and the memory of it, so it is read afresh from the last commit. */
    const forget = (key: string, queue: StringMessage[]) => {
      count(key, -queue.length);
      queue.length = 0;
      lastQueued.delete(key);
      nextOffset.delete(key);
    };
    let scheduled = false;
    let lingering: NodeJS.Timeout | undefined;
    const startBatches = () => {
      scheduled = false;
      lingering = undefined;
      schedule();
    };

    const noHeartbeat = async () => {};

    /** A partition's share of a batch. */
    type Part = { key: string; queue: StringMessage[]; messages: StringMessage[] };
    /**
     * Whether a part's partition has stayed this member's since the part was taken. One that was not
     * is neither applied further nor committed: the broker checks a commit's generation, not who owns
     * the partition, so its commit would take the new owner's offset back (the messages in between read
     * again, a lag that never drains), and its messages may be applied or dead-lettered by the new owner.
     */
    const held = ({ key, queue }: Part) => owns(key) && queues.get(key) === queue;

    /** Whether a partition that dropped messages has applied everything it queued: it is to be read again. */
    const rereadDue = () => [...overflowed].some((key) => !busy.has(key) && !queues.get(key)?.length);

    function schedule(): void {
      // The re-read waits until no batch is in flight: one on the old stream would neither be committed
      // nor have its partition's later messages skipped, so they would be applied again, a message being
      // retried retried again and dead-lettered a second time. Meanwhile no batch starts, unless a message
      // is being retried: every partition would wait for its end, as long as a transient failure lasts
      // (the partition to be read again drops its messages meanwhile, within its bound).
      if (!stopping && rereadDue()) {
        if (inFlight === 0) {
          void reread();
          return;
        }
        if (retrying.size === 0) return;
      }
      while (!stopping && inFlight < concurrency) {
        const parts = take();
        if (parts.length === 0) return;
        inFlight++;
        void run(parts);
      }
    }

    /** A batch, or a partition's share of one that failed, is done: its partitions may be taken again. */
    function settle(parts: Part[]): void {
      inFlight--;
      for (const { key } of parts) busy.delete(key);
      if (inFlight === 0) idle?.();
      schedule();
    }

    /** The next batch: what is queued for the partitions not in a batch, up to maxBatchSize in all. */
    function take(): Part[] {
      const entries = [...queues];
      const parts: Part[] = [];
      let room = maxBatchSize;
      for (let i = 0; i < entries.length && room > 0; i++) {
        const [key, queue] = entries[(turn + i) % entries.length] as [string, StringMessage[]];
        if (queue.length === 0 || busy.has(key)) continue;
        const messages = queue.splice(0, room);
        room -= messages.length;
        count(key, -messages.length);
        busy.add(key);
        parts.push({ key, queue, messages });
      }
      turn = (turn + 1) % Math.max(1, entries.length);
      if (parts.length > 0 && buffered < maxBuffered / 2) stream?.resume();
      return parts;
    }

    /**
     * Applies a batch. A batch of several partitions that fails is applied again partition by partition,
     * side by side (each as a batch, then one by one: createApplier), so that a message that fails for good
     * holds up its own partition only, as if the partitions had never been batched together: each share is
     * then in flight on its own, and once it is done its partition takes its next messages, whatever the
     * others' retries.
     */
    async function run(parts: Part[]): Promise<void> {
      // The batch is one unit in flight until it falls back; then each share is one.
      let together = true;
      try {
        const incoming = parts.map((p) => p.messages.map(toIncoming));
        if (parts.length > 1 && options.handleBatch) {
          const all = incoming.flat();
          try {
            await options.handleBatch(all);
            // Offsets only ever cover messages whose effect is durable.
            for (const part of parts) {
              if (held(part)) commits.mark(part.key, part.messages.at(-1) as StringMessage);
            }
            return;
          } catch (error) {
            options.onBatchFailed?.(all, error);
          }
        }
        together = false;
        inFlight += parts.length - 1;
        await Promise.all(
          parts.map(async (part, i) => {
            try {
              const { key, queue, messages } = part;
              const keepGoing = () => !stopping && held(part);
              const done = await applyChunk(incoming[i] as IncomingMessage[], noHeartbeat, keepGoing);
              if (!held(part)) return;
              const last = messages[done - 1];
              if (last) commits.mark(key, last);
              // Stopping cut the share short: the rest is read again by whoever gets the partition.
              if (done < messages.length) forget(key, queue);
            } finally {
              settle([part]);
            }
          }),
        );
      } finally {
        if (together) settle(parts);
      }
    }

    function onMessage(from: StringStream, m: StringMessage): void {
      // A message of a stream that has failed since, or of a partition this member does not own (a fetch
      // answered after a rebalance), or already queued: the current owner reads it from the last commit.
      if (from !== stream) return;
      const key = `${m.topic}/${m.partition}`;
      if (!owns(key)) return;
      checkGap(key, m);
      const last = lastQueued.get(key);
      if (last !== undefined && m.offset <= last) return;
      // Past the bound, a retrying partition drops its messages from the first one that does not fit on,
      // so that what it queued stays consecutive; the rest is read again (`reread`).
      if (overflowed.has(key) || (retrying.has(key) && stuckBuffered >= maxBuffered)) {
        overflowed.add(key);
        return;
      }
      lastQueued.set(key, m.offset);
      origin.set(m, from);
      let queue = queues.get(key);
      if (!queue) {
        queue = [];
        queues.set(key, queue);
      }
      queue.push(m);
      count(key, 1);
      if (buffered >= maxBuffered) stream?.pause();
      linger.arrived();
      if (scheduled) {
        // A full batch waits already: the rest of the linger would add latency and nothing to the batch.
        if (lingering !== undefined && buffered >= maxBatchSize) {
          clearTimeout(lingering);
          startBatches();
        }
        return;
      }
      scheduled = true;
      // Under load, the batch waits lingerMs for the messages about to arrive (see ConsumerOptions).
      // Otherwise it starts once the rest of this fetch is queued too (the library pushes a fetch's
      // messages in one go), so the first chunk of a partition takes every message the fetch brought.
      if (linger.shouldLinger()) lingering = setTimeout(startBatches, lingerMs);
      else queueMicrotask(startBatches);
    }

    /**
     * Reads every partition from its last commit on a new stream, which replaces the one before it: what
     * was queued is read again (and the commits of messages from the stream before are not sent, `commits`).
     */
    async function subscribe(): Promise<void> {
      // consume() joins the group only when one of the topics is new to the consumer or it has no member
      // id. After a join the library gave up (`startOver`, or a consume() that failed), neither may hold,
      // and the new stream would read without being a member: no heartbeat, no commit.
      if (!consumer.isActive() && topics.every((t) => consumer.topics.has(t))) await consumer.joinGroup({});
      const s = await consumer.consume({
        topics,
        mode: "committed",
        fallbackMode: (options.fromBeginning ?? true) ? "earliest" : "latest",
        autocommit: false,
        maxWaitTime: FETCH_MAX_WAIT_MS,
      });
      const previous = stream;
      stream = s;
      for (const [key, queue] of queues) forget(key, queue);
      overflowed.clear();
      committedAt.clear();
      nextOffset.clear();
      // The group's committed offsets, as the stream read them (at its start and after each rejoin) to
      // fetch from; a partition read already on this stream keeps where it got to.
      s.on("offsets", () => {
        if (s !== stream || committedRead === undefined) return;
        for (const [topic, offsets] of committedRead) {
          offsets.forEach((offset, partition) => {
            const key = `${topic}/${partition}`;
            if (nextOffset.has(key)) return;
            if (offset >= 0n) committedAt.set(key, offset);
            else committedAt.delete(key);
          });
        }
      });
      // The new stream is opened first, so the consumer keeps its topics and does not rejoin its group.
      void previous?.close().catch(() => {});
      s.on("data", (m: StringMessage) => onMessage(s, m));
      // The library ends a stream on a fetch that fails outright (its broker stayed away through every
      // retry, say); rejoining is always safe here, because offsets only ever cover committed work.
      s.on("error", (err: Error) => {
        if (s === stream) startOver("consumer stream failed; subscribing again", err);
      });
    }

    /**
     * Drops the stream and subscribes again until it works (`resubscribe`), joining the group first if
     * the library left the consumer outside it (`subscribe`). The next stream starts from the last
     * commit: what this one queued is read again.
     */
    function startOver(message: string, err?: unknown): void {
      if (stopping || stream === undefined) return;
      log("warn", message, { err });
      const s = stream;
      stream = undefined;
      for (const [key, queue] of queues) forget(key, queue);
      void s.close().catch(() => {});
      void resubscribe();
    }

    let rereading = false;
    /**
     * Reads the partitions that dropped messages again, once no batch is in flight (`schedule`): every
     * applied message is committed first, so a new stream starts each of them at the first message it
     * dropped, and every other partition at its first message not applied.
     */
    async function reread(): Promise<void> {
      if (rereading) return;
      rereading = true;
      try {
        for (let attempt = 0; ; attempt++) {
          if (attempt > 0) await sleep(backoff(attempt), stopped.signal);
          await commits.flush();
          // A rebalance meanwhile may have taken the partition, and batches started again: the last of
          // them to settle asks again (`schedule`).
          if (stopping || stream === undefined || !rereadDue() || inFlight > 0) return;
          try {
            await subscribe();
            return;
          } catch (err) {
            log("warn", "could not subscribe again to read dropped messages; retrying", { err });
          }
        }
      } finally {
        rereading = false;
      }
    }

    async function resubscribe(): Promise<void> {
      for (let attempt = 1; !stopping; attempt++) {
        await sleep(backoff(attempt), stopped.signal);
        if (stopping) return;
        try {
          await subscribe();
          return;
        } catch (err) {
          log("warn", "could not subscribe again; retrying", { err });
        }
      }
    }

    // While the broker is away the first join is tried again, as a running consumer's is, until the join
    // succeeds or the client is closed; an error the library never retries ends it.
    const abandon = () => void consumer.close(true).catch(() => {});
    closing.signal.addEventListener("abort", abandon, { once: true });
    try {
      await first.start(
        (async () => {
          for (let attempt = 1; ; attempt++) {
            try {
              await subscribe();
              break;
            } catch (err) {
              if (closing.signal.aborted || !retriesRanOut(err)) throw briefly(err);
              log("warn", "could not join the consumer group; retrying", { err });
              await sleep(backoff(attempt), closing.signal);
            }
          }
        })(),
      );
    } catch (err) {
      offsetRequests.unsubscribe(readings);
      await consumer.close(true).catch(() => {});
      throw err;
    } finally {
      closing.signal.removeEventListener("abort", abandon);
    }

    return {
      async stop(signal) {
        if (stopping) return;
        stopping = true;
        stopped.abort();
        clearTimeout(lingering);
        stream?.pause();
        try {
          await withTimeout(
            async () => {
              // The chunks in hand finish (their handlers see stopping) and commit before the group is left.
              if (inFlight > 0) await new Promise<void>((resolve) => (idle = resolve));
              await commits.flush();
              await stream?.close().catch(() => {});
              await consumer.close().catch(() => consumer.close(true));
            },
            Number.POSITIVE_INFINITY,
            "leaving the consumer group",
            signal,
          );
        } catch (err) {
          // The deadline passed (a handler or the broker hangs): what was not committed is read again by
          // the partition's next owner once the group's session times out.
          log("warn", "consumer stop cut short; dropping its connections", { err });
          void consumer.close(true).catch(() => {});
        } finally {
          commits.close();
          offsetRequests.unsubscribe(readings);
          joined = false;
        }
      },
      isRunning: () => joined && !stopping && stream !== undefined,
    };
  }

  // Topic creation and readToEnd: retries for about 15 s, then the error goes to the caller. A broker
  // busy for a second or two (every test suite of a CI run on one broker) failed three retries 200 ms
  // apart: "metadata failed 4 times" at a service's start.
  const admin = new Admin({
    ...base,
    retries: 10,
    retryDelay: (_client: unknown, _operation: string, attempt: number) => Math.min(200 * 2 ** attempt, 2000),
  });
  admin.on("error", (err: Error) => log("warn", "admin error", { err }));

  // What /ready and the lag probe wait for gets an admin client of its own, with one retry and every
  // request bounded by `adminTimeout`, so the library ends its own work within about twice that; a probe
  // in flight is shared (createProbes), on one connection.
  const probeAdmin = new Admin({
    ...base,
    connectTimeout: Math.min(connectionTimeout, adminTimeout),
    requestTimeout: adminTimeout,
    retries: 1,
    retryDelay: 200,
  });
  probeAdmin.on("error", (err: Error) => log("debug", "probe admin error", { err }));
  const shared = createProbes(adminTimeout);
  const probe = <T>(key: string[], signal: AbortSignal | undefined, call: (a: Admin) => Promise<T>) =>
    shared(key, signal, () =>
      call(probeAdmin).catch((err: unknown) => {
        throw named(err);
      }),
    );

  /** Partition count of each topic, from a fresh metadata request. */
  async function partitionsOf(a: Admin, names: string[]): Promise<Map<string, number>> {
    const metadata = await a.metadata({ topics: names, forceUpdate: true });
    return new Map(names.map((t) => [t, metadata.topics.get(t)?.partitionsCount ?? 0]));
  }

  /** Low and high watermark of every partition of the topics. */
  async function watermarks(
    a: Admin,
    names: string[],
  ): Promise<Map<string, { low: bigint; high: bigint }[]>> {
    const counts = await partitionsOf(a, names);
    const request = (timestamp: bigint) =>
      a.listOffsets({
        topics: names.map((name) => ({
          name,
          partitions: Array.from({ length: counts.get(name) ?? 0 }, (_, partitionIndex) => ({
            partitionIndex,
            timestamp,
          })),
        })),
      });
    const [low, high] = await Promise.all([request(-2n), request(-1n)]);
    const out = new Map<string, { low: bigint; high: bigint }[]>();
    for (const name of names) out.set(name, []);
    for (const t of low) {
      for (const p of t.partitions) {
        const list = out.get(t.name);
        if (list) list[p.partitionIndex] = { low: p.offset, high: 0n };
      }
    }
    for (const t of high) {
      for (const p of t.partitions) {
        const entry = out.get(t.name)?.[p.partitionIndex];
        if (entry) entry.high = p.offset;
      }
    }
    return out;
  }

  return {
    createProducer,
    createConsumer,

    async createTopics(names, numPartitions = 6) {
      const existing = new Set(
        await admin.listTopics().catch((err: unknown) => {
          throw named(err);
        }),
      );
      const missing = names.filter((t) => !existing.has(t));
      if (missing.length === 0) return;
      // A failure may be another process creating them meanwhile, or a request that timed out (5 s) on a
      // busy controller whose creation still completes: fine, as long as they have leaders within the wait.
      // No replication factor: the library then sends -1, the broker's default.replication.factor, as the
      // kafkajs adapter does (1 here would leave a cluster's topics with one copy of each event).
      const failed = await admin.createTopics({ topics: missing, partitions: numPartitions }).then(
        () => undefined,
        (err: unknown) => err,
      );
      for (let attempt = 0; ; attempt++) {
        const ready = await admin
          .metadata({ topics: missing, forceUpdate: true })
          .then(({ topics }) =>
            missing.every((name) => {
              const t = topics.get(name);
              return t !== undefined && t.partitions.length > 0 && t.partitions.every((p) => p.leader >= 0);
            }),
          )
          .catch(() => false);
        if (ready) return;
        if (attempt === 300)
          throw failed ?? new Error(`topics without leaders after 30 s: ${missing.join(", ")}`);
        await sleep(100);
      }
    },

    async ping(signal) {
      await probe(["ping"], signal, (a) => a.metadata({ topics: [], forceUpdate: true }));
    },

    async consumerLag(groupId, topics, signal) {
      const [groups, bounds] = await probe(["consumer lag", groupId, ...topics], signal, (a) =>
        Promise.all([a.listConsumerGroupOffsets({ groups: [groupId] }), watermarks(a, topics)]),
      );
      const committed = new Map<string, bigint>();
      for (const t of groups[0]?.topics ?? []) {
        for (const p of t.partitions) committed.set(`${t.name}/${p.partitionIndex}`, p.committedOffset);
      }
      const lags: PartitionLag[] = [];
      for (const topic of topics) {
        for (const [partition, b] of (bounds.get(topic) ?? []).entries()) {
          const offset = committed.get(`${topic}/${partition}`);
          const end = Number(b.high);
          // -1 or nothing: nothing committed yet, so the group still has to read from the low watermark.
          const at = offset === undefined || offset < 0n ? Number(b.low) : Number(offset);
          lags.push({ topic, partition, committed: at, end, lag: Math.max(0, end - at) });
        }
      }
      return lags;
    },

    async readToEnd(topics, timeoutMs = 60_000) {
      const remaining = new Map<string, bigint>();
      for (const [topic, parts] of await watermarks(admin, topics)) {
        for (const [partition, b] of parts.entries()) {
          if (b.high > b.low) remaining.set(`${topic}/${partition}`, b.high);
        }
      }
      const byPartition = new Map<string, IncomingMessage[]>();
      if (remaining.size === 0) return [];
      const consumer = new Consumer<string, string, string, string>({
        ...base,
        retries: 3,
        groupId: `read-to-end-${Date.now()}-${Math.random().toString(36).slice(2)}`,
        autocommit: false,
        maxWaitTime: FETCH_MAX_WAIT_MS,
        deserializers: stringDeserializers,
      });
      consumer.on("error", () => {});
      try {
        const stream = await consumer.consume({ topics, mode: "earliest", autocommit: false });
        await new Promise<void>((resolve, reject) => {
          const timer = setTimeout(
            () => reject(new Error(`readToEnd: ${remaining.size} partitions unread after ${timeoutMs} ms`)),
            timeoutMs,
          );
          stream.on("error", (err) => {
            clearTimeout(timer);
            reject(err);
          });
          stream.on("data", (m) => {
            const key = `${m.topic}/${m.partition}`;
            const end = remaining.get(key);
            if (end === undefined || m.offset >= end) return;
            const list = byPartition.get(key) ?? [];
            // A rebalance of the throwaway group can deliver a message twice: keep offsets increasing.
            const last = list.at(-1);
            if (last && BigInt(last.offset) >= m.offset) return;
            list.push(toIncoming(m));
            byPartition.set(key, list);
            if (m.offset + 1n >= end) remaining.delete(key);
            if (remaining.size === 0) {
              clearTimeout(timer);
              resolve();
            }
          });
        });
        await stream.close().catch(() => {});
      } finally {
        await consumer.close(true).catch(() => {});
      }
      // In partition order, as kafkajs's eachMessage delivers them; the order across partitions is not part of the contract.
      return [...byPartition.values()].flat();
    },

    async close(signal) {
      closing.abort();
      const closed = [admin, probeAdmin].map((a) => a.close().catch(() => {}));
      await withTimeout(() => Promise.all(closed), Number.POSITIVE_INFINITY, "closing kafka admin", signal);
    },
  };
}
