import { createPgDatabase } from "@saga/db";
import { setDatabaseDefaults } from "@saga/tools/infra";
import { freshDatabase } from "@saga/tools/test/harness";
import { describe, expect, it, onTestFinished } from "vitest";
import { inTransaction } from "./batch-sql.ts";

describe("inTransaction with queryThenCommit", () => {
  it("commits with the last statement, and commits nothing when that statement fails", async () => {
    // One connection: a transaction left open or a client lost would show in the next one.
    const db = createPgDatabase(await freshDatabase("batch_sql"), {}, { max: 1 });
    onTestFinished(() => db.close());
    await db.pool.query("create table t (id int primary key)");
    const ids = async () => (await db.pool.query("select id from t order by id")).rows.map((r) => r.id);

    const written = await inTransaction(db.pool, async (tx) => {
      await tx.query({ text: "insert into t values (1)" });
      return tx.queryThenCommit<{ id: number }>({ text: "insert into t values (2) returning id" });
    });
    expect(written.rows).toEqual([{ id: 2 }]);
    expect(await ids()).toEqual([1, 2]);

    // The COMMIT sent behind a failed statement answers ROLLBACK: the statement's own error is the one
    // seen, and the row written before it is gone.
    const failing = inTransaction(db.pool, async (tx) => {
      await tx.query({ text: "insert into t values (3)" });
      return tx.queryThenCommit({ text: "insert into t values (1)" });
    });
    await expect(failing).rejects.toMatchObject({ code: "23505" });
    expect(await ids()).toEqual([1, 2]);

    // The connection is back outside any transaction.
    await inTransaction(db.pool, (tx) => tx.queryThenCommit({ text: "insert into t values (4)" }));
    expect(await ids()).toEqual([1, 2, 4]);
  });
});

describe("inTransaction on a server that refuses writes", () => {
  it("does not give back a client whose write was refused as read only: the next transaction gets a new connection", async () => {
    // A primary demoted by a failover, or made read-only for a switchover, keeps the connections made to
    // it. One connection: given back to the pool, the refused client would be the next transaction's too.
    const url = await freshDatabase("batch_sql_read_only");
    const admin = createPgDatabase(url, {}, { max: 1 });
    onTestFinished(() => admin.close());
    await admin.pool.query("create table t (id int primary key)");
    const readOnly = (on: boolean) =>
      setDatabaseDefaults(url, { default_transaction_read_only: on ? "on" : "off" });
    await readOnly(true);
    const db = createPgDatabase(url, {}, { max: 1 });
    onTestFinished(() => db.close());

    const refused = inTransaction(db.pool, (tx) => tx.queryThenCommit({ text: "insert into t values (1)" }));
    await expect(refused).rejects.toMatchObject({ code: "25006" });
    // Refused without the last statement carrying COMMIT, too.
    await expect(
      inTransaction(db.pool, (tx) => tx.query({ text: "insert into t values (1)" })),
    ).rejects.toMatchObject({ code: "25006" });

    // The server takes writes again (as the new primary a new connection reaches would): the next
    // transaction writes at once, on a connection made after the refusal; the old one was read only for good.
    await readOnly(false);
    await inTransaction(db.pool, (tx) => tx.queryThenCommit({ text: "insert into t values (2)" }));
    expect((await admin.pool.query("select id from t")).rows).toEqual([{ id: 2 }]);
  });
});
