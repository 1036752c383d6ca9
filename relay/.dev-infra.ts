import { writeFileSync } from "node:fs";
import { startInfra } from "@saga/tools/infra";

const infra = await startInfra({ env: { SAGA_INFRA: "local" } });
writeFileSync(
  "/tmp/relaydev/env",
  `POSTGRES_URL=${infra.postgresUrl}\nKAFKA_BROKERS=${infra.kafkaBrokers.join(",")}\n`,
);
console.log("ready");
process.on("SIGTERM", () => void infra.stop().then(() => process.exit(0)));
setInterval(() => {}, 1 << 30);
