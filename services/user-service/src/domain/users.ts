import type { CreateUserRequest, User } from "@saga/contracts";
import { users } from "@saga/db/user";
import type { Executor } from "@saga/messaging";
import { eq } from "drizzle-orm";

type UserRow = typeof users.$inferSelect;

const toUser = (row: UserRow): User => ({
  id: row.id,
  username: row.username,
  balance: row.balance,
  createdAt: row.createdAt.toISOString(),
});

/** Creates a user whose balance starts at the initial balance; undefined when the username is taken. */
export async function createUser(tx: Executor, { username, initialBalance }: CreateUserRequest) {
  const [row] = await tx
    .insert(users)
    .values({ username, initialBalance, balance: initialBalance })
    .onConflictDoNothing({ target: users.username })
    .returning();
  return row && toUser(row);
}

export async function findUser(db: Executor, id: string): Promise<User | undefined> {
  const [row] = await db.select().from(users).where(eq(users.id, id));
  return row && toUser(row);
}
