/**
 * Settings every session we open sets for itself, over the server's, database's and role's own. Both
 * drivers read a timestamptz from its text with `new Date(text)`, which reads DateStyle ISO right in any
 * zone, but reads `SQL, DMY` with day and month swapped and a zone abbreviation such as CET not at all
 * (Invalid Date). Neither is rare on a server of one's own: initdb sets TimeZone to the host's zone, and
 * the SQL, German and Postgres styles are legitimate settings.
 * https://www.postgresql.org/docs/current/datatype-datetime.html#DATATYPE-DATETIME-OUTPUT
 */
export const SESSION_SETTINGS = { DateStyle: "ISO", TimeZone: "UTC" } as const;

/**
 * The startup parameters of a postgres.js session (its `connection` option): `parameters` and
 * `SESSION_SETTINGS`, which win.
 */
export function sessionParameters<T extends Record<string, string | number | boolean>>(
  parameters: T = {} as T,
): T & typeof SESSION_SETTINGS {
  return { ...parameters, ...SESSION_SETTINGS };
}

/**
 * `settings` and `SESSION_SETTINGS` as the `options` startup parameter of node-postgres (`-c name=value`
 * each), which it has no parameter of its own for. A space or backslash in a value is escaped, as the
 * server splits the string at spaces (https://www.postgresql.org/docs/current/libpq-connect.html#LIBPQ-CONNECT-OPTIONS).
 */
export function sessionOptions(settings: Record<string, string> = {}): string {
  return Object.entries({ ...settings, ...SESSION_SETTINGS })
    .map(([name, value]) => `-c ${name}=${value.replace(/[\\ ]/g, "\\$&")}`)
    .join(" ");
}
