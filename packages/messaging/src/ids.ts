import { v7 } from "uuid";

/**
 * The id of a row the saga inserts on its hot path (an order, an outbox event, whose id the consumers'
 * inbox keys on): a UUID of version 7 (RFC 9562), whose first 48 bits are the time in milliseconds and the
 * rest random. A version 4 id is random throughout, so each insert lands on a random leaf of the B-tree
 * that indexes it (`orders_pkey`, `outbox_pkey`, `inbox`'s primary key): as the tables grow, that is a
 * page to find in the cache for every insert, and after every checkpoint a full-page image in the WAL for
 * every leaf touched for the first time. Ids made close in time sit together at the right edge instead.
 * Only the order ids reach clients; whoever learns one still needs the order's owner's token to read it.
 */
export const newRowId = (): string => v7();
