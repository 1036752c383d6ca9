/**
 * The share of a lifetime bound over which connections' own lifetimes are spread. With one lifetime for
 * all, the connections opened together (at start, after a failover or a burst) end together, every
 * lifetime: a whole pool reconnects at once, each connection preparing and planning its statements again,
 * a step in latency under load.
 */
const LIFETIME_SPREAD = 0.2;

/**
 * A connection's own lifetime under the bound `max` (in its unit): between `1 - LIFETIME_SPREAD` and 1
 * times it, drawn anew for each connection, so that those opened together do not all end together. A
 * connection is bounded at all because it stays with the server it reached: after a failover that left
 * the old primary up (demoted, read only, or cut off from the failover manager but not from us), only a
 * new connection looks the host name up again and reaches whatever it names now.
 */
export function connectionLifetime(max: number): number {
  return max * (1 - LIFETIME_SPREAD * Math.random());
}
