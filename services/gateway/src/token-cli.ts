// `npm run token -- --user <id>` or `npm run token -- --admin [--subject ops]`: prints a bearer token
// the gateway accepts, signed with AUTH_SECRET when it is set, else with the public development key
// (the key of a gateway in AUTH_DEV_MODE, as `npm start` runs it).
import { parseArgs } from "node:util";
import { z } from "zod";
import { DEFAULT_AUDIENCE, DEFAULT_ISSUER, DEV_AUTH_SECRET, mintToken } from "./auth/tokens.ts";

const Env = z.object({
  AUTH_SECRET: z.string().min(32, "must be at least 32 characters").optional(),
  AUTH_ISSUER: z.string().min(1).default(DEFAULT_ISSUER),
  AUTH_AUDIENCE: z.string().min(1).default(DEFAULT_AUDIENCE),
});

const USAGE =
  "usage: npm run token -- --user <user id (a UUID)> | --admin [--subject <id>] [--ttl <seconds>]";

async function run() {
  const { values } = parseArgs({
    options: {
      user: { type: "string" },
      admin: { type: "boolean", default: false },
      subject: { type: "string", default: "admin" },
      ttl: { type: "string", default: "3600" },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  if (values.help) {
    console.log(USAGE);
    return;
  }
  if (!values.admin && !z.uuid().safeParse(values.user).success) throw new Error(USAGE);
  const ttlSeconds = z.coerce.number().int().positive().parse(values.ttl);
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
