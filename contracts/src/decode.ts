import { z } from "zod";
import { Envelope } from "./envelope.ts";
import { EVENT_SCHEMAS, EVENT_TYPES, type EventPayload } from "./events.ts";
import { EVENT_TOPICS, type Topic } from "./topics.ts";

export type DecodedEvent<T extends Topic = Topic> = {
  topic: T;
  envelope: Envelope;
  payload: EventPayload<T>;
};

export type DecodeResult<T extends Topic> =
  | { ok: true; event: DecodedEvent<T> }
  | { ok: false; error: string };

/**
 * Validates one consumed message against its topic's contract: the envelope headers and the JSON payload.
 * Never throws; a failure says what is wrong, for the dead-letter header.
 */
export function decodeEvent<T extends Topic>(
  topic: T,
  headers: Record<string, string | undefined>,
  value: string | null,
): DecodeResult<T> {
  if (!EVENT_TOPICS.includes(topic)) return { ok: false, error: `unknown topic ${topic}` };
  const envelope = Envelope.safeParse(headers);
  if (!envelope.success) return { ok: false, error: `bad envelope: ${z.prettifyError(envelope.error)}` };
  if (envelope.data["event-type"] !== EVENT_TYPES[topic]) {
    return { ok: false, error: `event-type ${envelope.data["event-type"]} does not belong on ${topic}` };
  }
  if (value === null) return { ok: false, error: "empty message value" };
  let json: unknown;
  try {
    json = JSON.parse(value);
  } catch (err) {
    return { ok: false, error: `payload is not JSON: ${(err as Error).message}` };
  }
  const payload = EVENT_SCHEMAS[topic].safeParse(json);
  if (!payload.success) return { ok: false, error: `bad payload: ${z.prettifyError(payload.error)}` };
  // The header is what the event was keyed, so partitioned and ordered, by: one that names another
  // order came in that order's sequence. Its case may differ (other producers print UUIDs in capitals),
  // so the consumers lock by the payload's orderId, as every other writer of the order does.
  const aggregateId = envelope.data["aggregate-id"];
  if (aggregateId.toLowerCase() !== payload.data.orderId) {
    return {
      ok: false,
      error: `aggregate-id ${aggregateId} is not the payload's orderId ${payload.data.orderId}`,
    };
  }
  return { ok: true, event: { topic, envelope: envelope.data, payload: payload.data as EventPayload<T> } };
}
