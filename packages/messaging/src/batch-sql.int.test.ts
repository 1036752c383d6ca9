import { createPgDatabase } from "@saga/db";
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
