/** A snapshot as `pg_current_snapshot()` gives it: 64-bit transaction ids (xid8). */
export type Snapshot = {
  /** The oldest transaction still running: every one before it has ended. */
  xmin: bigint;
  /**
   * One past the latest transaction to have ended: it and every later one are invisible, started or not
   * (PostgreSQL's documentation calls it the first as-yet-unassigned one; the server computes it from the
   * latest completed one, so a transaction whose commit is flushed but not yet visible can be at or past it).
   */
  xmax: bigint;
  /** The transactions between xmin and xmax still running. */
  xip: readonly bigint[];
};

/** Parses the text form of `pg_current_snapshot()`: `xmin:xmax:xip,xip,…`. */
export function parseSnapshot(text: string): Snapshot {
  const match = /^(\d+):(\d+):([\d,]*)$/.exec(text);
  if (!match) throw new Error(`not a snapshot: ${text}`);
  const [, xmin = "", xmax = "", xip = ""] = match;
  return { xmin: BigInt(xmin), xmax: BigInt(xmax), xip: xip === "" ? [] : xip.split(",").map(BigInt) };
}

/**
 * The transactions of `xids` that are not visible to `snapshot`: still running (in xip), or at or past
 * its xmax, which is one past the latest transaction to have ended (a transaction whose commit is
 * flushed but not yet visible may be that one). The ids are the 32-bit ones of the replication stream
 * (pgoutput's Begin); each is within 2^31 of the snapshot's xmax, which gives its epoch.
 */
export function invisibleIn(xids: readonly number[], snapshot: Snapshot): number[] {
  const running = new Set(snapshot.xip);
  const low = Number(snapshot.xmax & 0xffff_ffffn);
  return xids.filter((xid) => {
    // The signed 32-bit distance from xmax's low half: the wraparound-aware comparison of xids.
    const full = snapshot.xmax + BigInt(((xid - low) << 0) | 0);
    return full >= snapshot.xmax || (full >= snapshot.xmin && running.has(full));
  });
}

/**
 * Whether every transaction with an id below `boundary` has ended (committed or rolled back) in
 * `snapshot`: one still running below its xmax is in xip, so its xmin would be at most that one. Only
 * as good as the boundary: a transaction at or past xmax is in no snapshot's xip while it runs.
 */
export function endedBefore(boundary: bigint, snapshot: Snapshot): boolean {
  return snapshot.xmin >= boundary;
}
