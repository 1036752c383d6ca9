/**
 * A service that refuses some kind of new work past a bound of its own (the order-service: new orders
 * past its saga backlog bound) says on every answer how much of it it would still admit now. A proxy
 * in front of it then refuses at its edge, without a round trip, what the service would refuse anyway.
 * The header is between the gateway and the services only: the gateway does not pass it on.
 */
export const HEADROOM_HEADER = "x-headroom";

/** The headroom an answer reports, or undefined when it reports none (or nonsense). */
export function parseHeadroom(value: string | string[] | undefined | null): number | undefined {
  if (typeof value !== "string" || !/^\d{1,9}$/.test(value)) return undefined;
  return Number(value);
}
