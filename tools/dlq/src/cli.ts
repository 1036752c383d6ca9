import { createPgDatabase, orderSchema, userSchema } from "@saga/db";
import { rootCause } from "@saga/observability";
import { runDlq, USAGE } from "./commands.ts";
import { parseDlqEnv } from "./env.ts";

// `npm run dlq -- list | show <id> | replay <id> | replay --topic <t> --since <time>` (see commands.ts).
async function run(): Promise<number> {
  const argv = process.argv.slice(2);
  if (argv.includes("--help") || argv.includes("-h")) {
    console.log(USAGE);
    return 0;
  }
  if (argv.length === 0) {
    console.error(USAGE);
    return 2;
  }
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
    return await runDlq(argv, {
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
    const cause = rootCause(err);
    console.error(`dlq: ${cause instanceof Error ? cause.message : String(cause)}`);
    process.exit(1);
  },
);
