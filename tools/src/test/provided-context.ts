// What global-setup.ts provides to every test file, typed for `inject()`. Imported by the
// harness too, so packages that use only the harness see these types.
declare module "vitest" {
  export interface ProvidedContext {
    /** A PostgreSQL URL with the right to CREATE DATABASE; tests use `freshDatabase()`, not its database. */
    postgresUrl: string;
    kafkaBrokers: string[];
  }
}

export {};
