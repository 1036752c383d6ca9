import { defineCli, UsageError } from "@saga/tools/cli";
import { MIGRATIONS_FOLDER, migrateDatabase, type ServiceDatabase } from "./migrate.ts";

const migrateCli = defineCli({
  name: "migrate",
  command: "npm run migrate -w db --",
  positionals: "<user|order> <postgres-url>",
  about:
    "Applies the migrations of the user-service's or the order-service's database (db/migrations/<user|order>)\n" +
    "that it has not had yet, as each service does when it starts.",
  options: {},
});

async function run() {
  const { which, url } = migrateCli.parseOrExit(process.argv.slice(2), ({ positionals }) => {
    const [which, url, ...rest] = positionals;
    if (which === undefined || !Object.hasOwn(MIGRATIONS_FOLDER, which))
      throw new UsageError(`which database: user or order, not ${JSON.stringify(which ?? "")}`);
    if (!url) throw new UsageError("the database's URL is missing");
    if (rest.length > 0) throw new UsageError(`unexpected arguments: ${rest.join(" ")}`);
    return { which: which as ServiceDatabase, url };
  });
  const { unknownMigrations } = await migrateDatabase(url, which);
  console.log(`migrated ${which} database`);
  if (unknownMigrations > 0)
    console.warn(
      `the database has ${unknownMigrations} migration(s) newer than this code's: a newer version migrated it`,
    );
}

run().catch((err) => {
  console.error(err);
  process.exit(1);
});
