import { migrateDatabase } from "./migrate.ts";

// Usage: npm run migrate -w db -- <user|order> <url>
async function run() {
  const [which, url] = process.argv.slice(2);
  if ((which !== "user" && which !== "order") || !url) {
    throw new Error("usage: migrate <user|order> <postgres-url>");
  }
  await migrateDatabase(url, which);
  console.log(`migrated ${which} database`);
}

run().catch((err) => {
  console.error(err);
  process.exit(1);
});
