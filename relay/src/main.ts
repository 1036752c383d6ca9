import { parseRelayEnv } from "./env.ts";
import { runRelay } from "./run-relay.ts";

try {
  runRelay(parseRelayEnv(process.env));
} catch (err) {
  console.error(err);
  process.exit(1);
}
