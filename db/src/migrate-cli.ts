import { migrateDatabase } from "./migrate.ts";

// Usage: npm run migrate -w db -- <user|order> <url>
async function run() {
  const [which, url] = process.argv.slice(2);
  if ((which !== "user" && which !== "order") || !url) {
    throw new Error("usage: migrate <user|order> <postgres-url>");
  }
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
