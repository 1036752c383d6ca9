import { describe, expect, it } from "vitest";
import { defineCli, numberListOption, numberOption, UsageError } from "./cli.ts";

const cli = defineCli({
  name: "demo",
  command: "npm run demo --",
  about: "A demonstration.",
  options: {
    rate: { type: "string", value: "N", default: "20", description: "orders per second" },
    seed: { type: "string", value: "N", defaultText: "from the clock", description: "the seed" },
    quick: { type: "boolean", default: false, description: "shorter" },
  },
});

describe("a command line defined once", () => {
  it("has a usage naming each option, its value and its default, from the parser's own definitions", () => {
    expect(cli.usage).toBe(
      [
        "usage: npm run demo -- [options]",
        "",
        "A demonstration.",
        "",
        "options:",
        "      --rate N  orders per second (default 20)",
        "      --seed N  the seed (default from the clock)",
        "      --quick   shorter",
        "  -h, --help    print this text and exit",
      ].join("\n"),
    );
    expect(cli.parse([]).values).toEqual({ rate: "20", quick: false });
    expect(cli.parse(["-h"]).values.help).toBe(true);
  });

  it("refuses a wrong command line in one line that names what is wrong", () => {
    const refusal = (argv: string[]) => {
      try {
        cli.parse(argv);
      } catch (err) {
        expect(err).toBeInstanceOf(UsageError);
        return (err as Error).message;
      }
      return "accepted";
    };
    expect(refusal(["--rat", "5"])).toBe("unknown option --rat");
    expect(refusal(["--rate"])).toBe("--rate needs a value");
    expect(refusal(["--rate", "--quick"])).toBe("--rate needs a value");
    expect(refusal(["--quick=yes"])).toBe("--quick takes no value");
    expect(refusal(["fast"])).toBe("unexpected argument fast: this command takes none");
    // A negative number is the option's value, for its own check to refuse.
    expect(cli.parse(["--rate", "-5"]).values.rate).toBe("-5");
  });

  it("reads numbers by a rule, and says the rule when a value breaks it", () => {
    expect(numberOption("rate", "2.5", { above: 0 })).toBe(2.5);
    expect(() => numberOption("rate", "-5", { above: 0 })).toThrow(
      '--rate must be a positive number, not "-5"',
    );
    expect(() => numberOption("seed", "x", { integer: true })).toThrow(
      '--seed must be a whole number, not "x"',
    );
    expect(() => numberOption("n", "", { integer: true, min: 1 })).toThrow(
      '--n must be a whole number from 1, not ""',
    );
    expect(numberListOption("rates", "50,,100", { above: 0 })).toEqual([50, 100]);
    expect(() => numberListOption("rates", "50,x", { above: 0 })).toThrow(
      '--rates must be a comma-separated list, each a positive number, not "50,x"',
    );
  });
});
