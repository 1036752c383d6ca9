import {
  type DeadLetterRecord,
  type Executor,
  findDeadLetter,
  listDeadLetters,
  replayDeadLetter,
} from "@saga/messaging";
import { defineCli, UsageError } from "@saga/tools/cli";
import { z } from "zod";
import { parseSince } from "./since.ts";

/** A service database holding dead letters: `user_db` or `order_db`. */
type DeadLetterStore = {
  name: string;
  db: Executor;
  transaction<T>(work: (tx: Executor) => Promise<T>): Promise<T>;
};

export type DlqDeps = {
  stores: DeadLetterStore[];
  /** Who replays, recorded with each replay. */
  operator: string;
  out: (line: string) => void;
  err: (line: string) => void;
};

export const dlqCli = defineCli({
  name: "dlq",
  command: "npm run dlq --",
  positionals: "<command> [id]",
  about: "Lists, shows and replays the dead letters of user_db and order_db.",
  options: {
    topic: { type: "string", value: "TOPIC", description: "only this topic's (order.created, …)" },
    since: { type: "string", value: "TIME", description: "only those dead-lettered since then" },
    pending: { type: "boolean", description: "only those not replayed yet" },
  },
  notes: `commands:
  list [--topic <topic>] [--since <time>] [--pending]   dead letters, oldest first
  show <id>                                             one dead letter: the message, why, its replay
  replay <id>                                           send it back to its topic, once
  replay --topic <topic> --since <time>                 every dead letter of the topic not replayed yet
<time>: an ISO 8601 time (2026-12-01T09:30:00Z) or a span ago (90s, 15m, 2h, 7d)
environment: USER_DB_URL and/or ORDER_DB_URL; DLQ_OPERATOR (who replays; default user@host)`,
});

const tooLarge = (id: string, { bytes, maxBytes }: { bytes: number; maxBytes: number }) =>
  `refused: dead letter ${id} would be a message of ${bytes} bytes, more than Kafka takes (${maxBytes}); it stays pending, whole in dead_letters (show ${id})`;

const isUuid = (s: string) => z.uuid().safeParse(s).success;

function line(store: string, d: DeadLetterRecord): string {
  const replay = d.replayedAt ? `replayed ${d.replayedAt.toISOString()} by ${d.replayedBy}` : "pending";
  const error = d.error.length > 100 ? `${d.error.slice(0, 99)}…` : d.error;
  return [
    d.id,
    d.deadLetteredAt.toISOString(),
    store,
    d.topic,
    `key=${d.messageKey ?? "-"}`,
    `${d.reason} (${d.attempts} attempt${d.attempts === 1 ? "" : "s"})`,
    replay,
    error,
  ].join("  ");
}

/** A `dlq` command line, checked whole before anything is read or written. */
type DlqCommand =
  | { command: "list"; topic?: string; since?: Date; pending?: boolean }
  /** `id` in lower case. */
  | { command: "show" | "replay"; id: string }
  | { command: "replay"; topic: string; since: Date };

/** Reads a `dlq` command line (as `dlqCli.parse` gives it); UsageError for a wrong one. */
export function dlqCommand({ values, positionals }: ReturnType<typeof dlqCli.parse>): DlqCommand {
  const [command, id, ...rest] = positionals;
  if (rest.length > 0) throw new UsageError(`unexpected arguments: ${rest.join(" ")}`);
  const since = (() => {
    try {
      return values.since === undefined ? undefined : parseSince(values.since);
    } catch (e) {
      throw new UsageError((e as Error).message);
    }
  })();
  const needsId = () => {
    if (id === undefined) throw new UsageError(`${command} needs a dead letter's id`);
    if (!isUuid(id)) throw new UsageError(`${JSON.stringify(id)} is not a dead letter's id (a UUID)`);
    if (values.topic !== undefined || values.since !== undefined || values.pending)
      throw new UsageError(`${command} <id> takes no options`);
    return id.toLowerCase();
  };
  switch (command) {
    case "list":
      if (id !== undefined) throw new UsageError("list takes no id; use show <id>");
      return { command, topic: values.topic, since, pending: values.pending };
    case "show":
      return { command, id: needsId() };
    case "replay":
      if (id !== undefined) return { command, id: needsId() };
      // Every pending dead letter of a topic since a time: both are required, so that a slip of the
      // keyboard cannot replay everything.
      if (values.topic === undefined || since === undefined)
        throw new UsageError("replay needs an id, or --topic and --since");
      if (values.pending) throw new UsageError("replay --topic replays only pending dead letters anyway");
      return { command, topic: values.topic, since };
    case undefined:
      throw new UsageError("no command");
    default:
      throw new UsageError(`unknown command ${JSON.stringify(command)}`);
  }
}

/** Runs one `dlq` command against the stores; resolves with the process's exit code: 0 done, 1 refused or not found. */
export async function runDlq(cmd: DlqCommand, { stores, operator, out, err }: DlqDeps): Promise<number> {
  /** The store that holds a dead letter, and the record. */
  const locate = async (deadLetterId: string) => {
    for (const store of stores) {
      const record = await findDeadLetter(store.db, deadLetterId);
      if (record) return { store, record };
    }
    return undefined;
  };

  if (cmd.command === "list") {
    let n = 0;
    for (const store of stores) {
      for (const d of await listDeadLetters(store.db, cmd)) {
        out(line(store.name, d));
        n++;
      }
    }
    err(`${n} dead letter${n === 1 ? "" : "s"}`);
    return 0;
  }
  if (!("id" in cmd)) {
    const { topic, since } = cmd;
    let n = 0;
    let refused = 0;
    for (const store of stores) {
      const pending = await listDeadLetters(store.db, { topic, since, pending: true });
      for (const d of pending) {
        const result = await replayDeadLetter(store, d.id, operator);
        if (result.status === "too large") {
          err(tooLarge(result.deadLetter.id, result));
          refused++;
        }
        // Replayed meanwhile by someone else: their replay stands, this one is not sent.
        if (result.status !== "replayed") continue;
        out(
          `replayed ${d.id} (${store.name}, ${d.topic}, event ${d.eventId ?? "-"}, key ${d.messageKey ?? "-"})`,
        );
        n++;
      }
    }
    err(
      `replayed ${n} dead letter${n === 1 ? "" : "s"} of ${topic} since ${since.toISOString()} as ${operator}` +
        (refused > 0 ? `; refused ${refused} too large to send` : ""),
    );
    return refused > 0 ? 1 : 0;
  }
  const { id } = cmd;
  const found = await locate(id);
  if (!found) {
    err(`no dead letter ${id} in ${stores.map((s) => s.name).join(", ")}`);
    return 1;
  }
  if (cmd.command === "show") {
    out(JSON.stringify({ database: found.store.name, ...found.record }, null, 2));
    return 0;
  }
  const result = await replayDeadLetter(found.store, id, operator);
  if (result.status === "replayed") {
    const d = result.deadLetter;
    out(
      `replayed ${d.id} (${found.store.name}, ${d.topic}, event ${d.eventId ?? "-"}, key ${d.messageKey ?? "-"}) as ${operator}: the relay sends it with outbox row ${d.replayOutboxId}`,
    );
    return 0;
  }
  if (result.status === "too large") {
    err(tooLarge(id, result));
    return 1;
  }
  if (result.status === "already replayed") {
    const d = result.deadLetter;
    err(
      `refused: dead letter ${d.id} was already replayed at ${d.replayedAt?.toISOString()} by ${d.replayedBy}; it is never sent twice`,
    );
    return 1;
  }
  err(`no dead letter ${id}`);
  return 1;
}
