import { createPgDatabase, orderSchema, userSchema } from "@saga/db";
import { rootCause } from "@saga/observability";
import { dlqCli, dlqCommand, runDlq } from "./commands.ts";
import { parseDlqEnv } from "./env.ts";

// `npm run dlq -- list | show <id> | replay <id> | replay --topic <t> --since <time>` (see commands.ts).
async function run(): Promise<number> {
  // The command line first: a wrong one is told so, whatever the environment.
  const command = dlqCli.parseOrExit(process.argv.slice(2), dlqCommand);
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
    return await runDlq(command, {
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
