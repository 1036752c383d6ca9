import { type ParseArgsOptionDescriptor, parseArgs } from "node:util";

/** One option of a command line: what node:util's parseArgs reads, and what the usage says of it. */
type CliOption = ParseArgsOptionDescriptor & {
  /** What it does, for the usage. */
  description: string;
  /** A string option's value as the usage names it (`--rate N`); VALUE when not given. */
  value?: string;
  /** The default as the usage says it, where `default` cannot (one taken from another option, or the clock). */
  defaultText?: string;
};

type CliOptions = Record<string, CliOption>;

type CliSpec<O extends CliOptions> = {
  /** Names the program in its error lines: `chaos: --rate must be …`. */
  name: string;
  /** How it is run, up to its options: `npm run chaos --`. */
  command: string;
  /** What it does, in a sentence or two. */
  about: string;
  options: O;
  /** The arguments after the options, as the usage shows them (`<user|order> <postgres-url>`); none when absent. */
  positionals?: string;
  /** Lines after the options: the environment it reads, examples. */
  notes?: string;
};

/** A wrong command line: the program did nothing, and exits 2 with this message and its usage. */
export class UsageError extends Error {}

/** Every program answers -h and --help. */
const HELP = { type: "boolean", short: "h", description: "print this text and exit" } as const;

type Parsed<O extends CliOptions> = {
  values: ReturnType<typeof parseArgs<{ options: O & { help: typeof HELP }; strict: true }>>["values"];
  positionals: string[];
};

type Cli<O extends CliOptions> = {
  /** The text `--help` prints, made from the same options the parser reads. */
  usage: string;
  /** Reads a command line; a wrong one throws UsageError. `--help` is `values.help`. */
  parse(argv: readonly string[]): Parsed<O>;
  /**
   * Reads a command line and hands it to `read` (which checks the values: UsageError for a bad one), or
   * ends the process before anything starts: `--help` prints the usage on stdout and exits 0; a wrong
   * command line prints one line naming what is wrong, then the usage, on stderr and exits 2.
   */
  parseOrExit<T = Parsed<O>>(argv: readonly string[], read?: (parsed: Parsed<O>) => T): T;
};

/** A command line's parser and its usage, from one list of options (so that the two cannot drift). */
export function defineCli<O extends CliOptions>(spec: CliSpec<O>): Cli<O> {
  const options = { ...spec.options, help: HELP };
  const usage = usageOf(spec.command, spec.about, options, spec.positionals, spec.notes);
  const cli: Cli<O> = {
    usage,
    parse(argv) {
      try {
        return parseArgs({
          args: negativeValuesJoined(argv, options),
          options,
          strict: true,
          allowPositionals: spec.positionals !== undefined,
        }) as Parsed<O>;
      } catch (err) {
        throw new UsageError(plainMessage(err as Error & { code?: string }));
      }
    },
    parseOrExit(argv, read = (parsed) => parsed as never) {
      try {
        const parsed = cli.parse(argv);
        if ((parsed.values as { help?: boolean }).help) {
          process.stdout.write(`${usage}\n`);
          process.exit(0);
        }
        return read(parsed);
      } catch (err) {
        if (!(err instanceof UsageError)) throw err;
        process.stderr.write(`${spec.name}: ${err.message}\n\n${usage}\n`);
        process.exit(2);
      }
    },
  };
  return cli;
}

/**
 * `--duration -5` as `--duration=-5`: parseArgs takes a value that starts with a dash for another option
 * (ERR_PARSE_ARGS_INVALID_OPTION_VALUE, "ambiguous"), where the number's own check says more.
 */
function negativeValuesJoined(argv: readonly string[], options: CliOptions): string[] {
  const args: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] as string;
    if (arg === "--") {
      args.push(...argv.slice(i));
      break;
    }
    const next = argv[i + 1];
    const option = arg.startsWith("--") ? options[arg.slice(2)] : undefined;
    if (option?.type === "string" && next !== undefined && /^-\.?\d/.test(next)) {
      args.push(`${arg}=${next}`);
      i++;
    } else args.push(arg);
  }
  return args;
}

/** parseArgs's refusals, one line each (some of its own run to three, with advice on quoting). */
function plainMessage(err: Error & { code?: string }): string {
  const named = /'([^']+)'/.exec(err.message)?.[1] ?? "";
  switch (err.code) {
    case "ERR_PARSE_ARGS_UNKNOWN_OPTION":
      return `unknown option ${named}`;
    case "ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL":
      return `unexpected argument ${named}: this command takes none`;
    case "ERR_PARSE_ARGS_INVALID_OPTION_VALUE":
      return err.message.includes("does not take an argument")
        ? `${named} takes no value`
        : `${named.replace(/ <value>$/, "")} needs a value`;
    default:
      return err.message.split("\n")[0] ?? err.message;
  }
}

function usageOf(
  command: string,
  about: string,
  options: CliOptions,
  positionals: string | undefined,
  notes: string | undefined,
): string {
  const rows = Object.entries(options).map(([name, o]) => {
    const flag = `${o.short ? `-${o.short}, ` : "    "}--${name}${o.type === "string" ? ` ${o.value ?? "VALUE"}` : ""}`;
    const fallback = o.defaultText ?? defaultOf(o.default);
    return [flag, fallback === undefined ? o.description : `${o.description} (default ${fallback})`] as const;
  });
  const width = Math.max(...rows.map(([flag]) => flag.length)) + 2;
  return [
    `usage: ${command} [options]${positionals ? ` ${positionals}` : ""}`,
    "",
    about,
    "",
    "options:",
    ...rows.map(([flag, text]) => `  ${flag.padEnd(width)}${text}`),
    ...(notes ? ["", notes] : []),
  ].join("\n");
}

/** A default worth saying: not an absent value, a false flag or an empty list. */
function defaultOf(value: ParseArgsOptionDescriptor["default"]): string | undefined {
  if (value === undefined || value === false) return undefined;
  if (Array.isArray(value)) return value.length === 0 ? undefined : value.join(",");
  return value === "" ? '""' : String(value);
}

/** What a number option takes: `{ integer: true, min: 1 }` is a whole number from 1. */
export type NumberRule = { integer?: boolean; min?: number; above?: number };

/** The number an option's value says; UsageError naming the option and what it takes when it is not one. */
export function numberOption(option: string, raw: string | undefined, rule: NumberRule = {}): number {
  const n = raw === undefined || raw.trim() === "" ? Number.NaN : Number(raw);
  const fits =
    Number.isFinite(n) &&
    (!rule.integer || Number.isInteger(n)) &&
    (rule.min === undefined || n >= rule.min) &&
    (rule.above === undefined || n > rule.above);
  if (!fits) throw new UsageError(`--${option} must be ${takes(rule)}, not ${JSON.stringify(raw ?? "")}`);
  return n;
}

/** A comma-separated list of numbers, each as `numberOption` takes it; empty items are left out. */
export function numberListOption(option: string, raw: string, rule: NumberRule = {}): number[] {
  const items = raw.split(",").filter((item) => item.trim() !== "");
  try {
    return items.map((item) => numberOption(option, item, rule));
  } catch {
    throw new UsageError(
      `--${option} must be a comma-separated list, each ${takes(rule)}, not ${JSON.stringify(raw)}`,
    );
  }
}

/** One of `choices`; UsageError naming the option and the choices otherwise. */
export function choiceOption<C extends string>(option: string, raw: string, choices: readonly C[]): C {
  if (!(choices as readonly string[]).includes(raw))
    throw new UsageError(`--${option} must be one of ${choices.join(", ")}, not ${JSON.stringify(raw)}`);
  return raw as C;
}

function takes({ integer, min, above }: NumberRule): string {
  const kind = integer ? "a whole number" : "a number";
  if (above === 0 && min === undefined) return integer ? "a whole number from 1" : "a positive number";
  if (min !== undefined) return `${kind} from ${min}`;
  if (above !== undefined) return `${kind} above ${above}`;
  return kind;
}
