import { defineCli, numberOption, UsageError } from "@saga/tools/cli";
import { z } from "zod";
import { DEFAULT_AUDIENCE, DEFAULT_ISSUER, DEV_AUTH_SECRET, mintToken } from "./auth/tokens.ts";

const Env = z.object({
  AUTH_SECRET: z.string().min(32, "must be at least 32 characters").optional(),
  AUTH_ISSUER: z.string().min(1).default(DEFAULT_ISSUER),
  AUTH_AUDIENCE: z.string().min(1).default(DEFAULT_AUDIENCE),
});

const tokenCli = defineCli({
  name: "token",
  command: "npm run token --",
  about:
    "Prints a bearer token the gateway accepts: a user's (--user) or an admin's (--admin), signed with\n" +
    "AUTH_SECRET when it is set, else with the public development key (the key of a gateway in\n" +
    "AUTH_DEV_MODE, as `npm start` runs it).",
  options: {
    user: { type: "string", value: "ID", description: "the user's id, a UUID: a token for that user" },
    admin: { type: "boolean", default: false, description: "an admin's token instead" },
    subject: {
      type: "string",
      value: "ID",
      default: "admin",
      description: "the admin's subject, with --admin",
    },
    ttl: { type: "string", value: "SECONDS", default: "3600", description: "how long the token is valid" },
  },
  notes: `environment: AUTH_SECRET, AUTH_ISSUER (default ${DEFAULT_ISSUER}), AUTH_AUDIENCE (default ${DEFAULT_AUDIENCE})`,
});

async function run() {
  const { values, ttlSeconds } = tokenCli.parseOrExit(process.argv.slice(2), ({ values }) => {
    if (!values.admin && !z.uuid().safeParse(values.user).success)
      throw new UsageError(
        values.user === undefined
          ? "--user <id> or --admin is needed"
          : `--user must be a user's id (a UUID), not ${JSON.stringify(values.user)}`,
      );
    return { values, ttlSeconds: numberOption("ttl", values.ttl, { integer: true, min: 1 }) };
  });
  const env = Env.parse(process.env);
  if (env.AUTH_SECRET === undefined)
    console.error(
      "token: signed with the public development key (AUTH_SECRET is not set): for AUTH_DEV_MODE only",
    );
  const token = await mintToken({
    secret: env.AUTH_SECRET ?? DEV_AUTH_SECRET,
    subject: values.admin ? values.subject : (values.user ?? "").toLowerCase(),
    role: values.admin ? "admin" : undefined,
    issuer: env.AUTH_ISSUER,
    audience: env.AUTH_AUDIENCE,
    ttlSeconds,
  });
  console.log(token);
}

run().catch((err) => {
  console.error((err as Error).message);
  process.exit(1);
});
