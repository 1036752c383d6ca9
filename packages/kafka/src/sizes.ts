import type { OutgoingMessage } from "./port.ts";

/**
 * The largest message our producers send, and the most one produce request carries: the broker's
 * `message.max.bytes` (1,048,588 by default; neither compose.yaml nor the test broker changes it) bounds
 * each record batch, which is a partition's messages of one request plus 61 bytes of framing, and we
 * keep room below it. A message above it is refused by the broker (MESSAGE_TOO_LARGE) at every attempt,
 * and an outbox sent in order waits behind it for ever: the writers keep theirs smaller (a dead letter
 * is cut to `DEAD_LETTER_MAX_BYTES`, a replay that would be larger is refused).
 */
export const MAX_MESSAGE_BYTES = 1_000_000;

// A record's framing (v2): its length, attributes, timestamp and offset deltas, key and value lengths and
// the header count, as varints of at most 5 (10 for the timestamp) bytes; each header 2 lengths more.
const RECORD_OVERHEAD = 36;
const HEADER_OVERHEAD = 10;

/** Bytes a message takes in a record batch, at most (UTF-8 text, uncompressed). */
export function messageBytes(message: Pick<OutgoingMessage, "key" | "value" | "headers">): number {
  let bytes = RECORD_OVERHEAD + Buffer.byteLength(message.key) + Buffer.byteLength(message.value);
  for (const [name, value] of Object.entries(message.headers))
    bytes += HEADER_OVERHEAD + Buffer.byteLength(name) + Buffer.byteLength(value);
  return bytes;
}

/** A bound on `messageBytes` from the text's length alone (a UTF-16 unit is at most 3 bytes of UTF-8). */
function roughBytes(message: OutgoingMessage): number {
  let units = message.key.length + message.value.length;
  for (const [name, value] of Object.entries(message.headers)) units += name.length + value.length;
  return RECORD_OVERHEAD + 3 * units + HEADER_OVERHEAD * Object.keys(message.headers).length;
}

/**
 * The messages in order, in runs of at most `maxBytes` (`messageBytes`) each, to be sent one request
 * after the other: a request's messages of one partition are one record batch, which the broker refuses
 * whole when it is larger than it takes, though each of its messages alone would do. A message larger
 * than `maxBytes` goes alone. Events are small: a send of a few hundred of them is one run, found so
 * from their lengths without measuring them.
 */
export function sendRuns(messages: OutgoingMessage[], maxBytes = MAX_MESSAGE_BYTES): OutgoingMessage[][] {
  let rough = 0;
  for (const m of messages) rough += roughBytes(m);
  if (rough <= maxBytes) return [messages];
  const runs: OutgoingMessage[][] = [];
  let run: OutgoingMessage[] = [];
  let bytes = 0;
  for (const m of messages) {
    const size = messageBytes(m);
    if (run.length > 0 && bytes + size > maxBytes) {
      runs.push(run);
      run = [];
      bytes = 0;
    }
    run.push(m);
    bytes += size;
  }
  if (run.length > 0) runs.push(run);
  return runs;
}
