import { createPgDatabase, orderSchema, userSchema } from "@saga/db";
import { runDlq } from "./commands.ts";
import { parseDlqEnv } from "./env.ts";

// `npm run dlq -- list | show <id> | replay <id> | replay --topic <t> --since <time>` (see commands.ts).
async function run(): Promise<number> {
  const env = parseDlqEnv(process.env);
  const stores = [
    env.USER_DB_URL && {
      name: "user_db",
      ...createPgDatabase(env.USER_DB_URL, userSchema, { max: 2, applicationName: "dlq" }),
    },
    env.ORDER_DB_URL && {
      name: "order_db",
      ...createPgDatabase(env.ORDER_DB_URL, orderSchema, { max: 2, applicationName: "dlq" }),
    },
  ].filter((s) => !!s);
  try {
    return await runDlq(process.argv.slice(2), {
      stores,
      operator: env.DLQ_OPERATOR,
      out: (line) => console.log(line),
      err: (line) => console.error(line),
    });
  } finally {
    await Promise.all(stores.map((s) => s.close()));
  }
}

run().then(
  (code) => {
    process.exitCode = code;
  },
  (err) => {
    console.error(err instanceof Error ? err.message : err);
    process.exit(1);
  },
);
