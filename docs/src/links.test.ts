import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, onTestFinished, test } from "vitest";
import { checkLinks } from "./links.ts";

const repoRoot = join(dirname(fileURLToPath(import.meta.url)), "../..");

describe("the repository's Markdown", () => {
  test("every relative link names a file of the repository, inside it, and an existing heading", () => {
    const report = checkLinks(repoRoot);
    expect(report.files).toContain("README.md");
    expect(report.files).toContain("docs/design.md");
    expect(report.files.some((f) => f.includes("node_modules/") || f.startsWith(".cache/"))).toBe(false);
    expect(report.checked).toBeGreaterThan(10);
    const lines = report.problems.map((p) => `${p.file}:${p.line}: (${p.href}) ${p.problem}`);
    expect(lines).toEqual([]);
  });
});

/** A git repository in a temporary directory with these files; removed after the test. */
function repository(files: Record<string, string>): string {
  const root = mkdtempSync(join(tmpdir(), "docs-links-"));
  onTestFinished(() => rmSync(root, { recursive: true, force: true }));
  execFileSync("git", ["init", "-q"], { cwd: root });
  for (const [path, text] of Object.entries(files)) {
    mkdirSync(dirname(join(root, path)), { recursive: true });
    writeFileSync(join(root, path), text);
  }
  return root;
}

describe("checkLinks", () => {
  test("accepts links to files, directories and headings of the repository, and skips URLs and code", () => {
    const root = repository({
      "README.md": [
        "# Title",
        "See [the design](docs/design.md#the-event-contracts), [relay](relay/), [top](#title),",
        "[a chart](bench/chart.svg), ![chart](./bench/chart.svg), [with a space](docs/two%20words.md),",
        "[the web](https://example.com/x), <mailto:a@example.com>, `[code](../nowhere.md)`.",
        "",
        "```",
        "[in a fence](../outside.md)",
        "```",
        "[ref]: docs/design.md",
        "And a [reference][ref].",
      ].join("\n"),
      "docs/design.md": "# Design\n\n## The `event` contracts\n\n[back](../README.md#title)\n",
      "docs/two words.md": "x\n",
      "relay/README.md": "[up](../docs/design.md)\n",
      "bench/chart.svg": "<svg/>",
    });
    const report = checkLinks(root);
    expect(report.problems).toEqual([]);
    expect(report.files).toEqual(["README.md", "docs/design.md", "docs/two words.md", "relay/README.md"]);
    expect(report.checked).toBe(9);
  });

  test("reports a link that leaves the repository, names nothing, an ignored file or a missing heading", () => {
    const root = repository({
      ".gitignore": ".cache/\n",
      ".cache/report.md": "# Report\n",
      "docs/design.md": "# Design\n",
      "README.md": [
        "The design is in [DESIGN.md](../shared/DESIGN.md).",
        "[gone](docs/gone.md) [deep](docs/../../x.md) [abs](/etc/passwd)",
        "[report](.cache/report.md) [heading](docs/design.md#no-such-heading) [own](#nothing)",
        "",
        "| a | b |",
        "|---|---|",
        "| 1 | [in a table](docs/missing.md) |",
      ].join("\n"),
    });
    const { problems } = checkLinks(root);
    expect(problems.map(({ line, href, problem }) => ({ line, href, problem }))).toEqual([
      { line: 1, href: "../shared/DESIGN.md", problem: "leaves the repository" },
      { line: 2, href: "docs/gone.md", problem: "names no file of the repository" },
      { line: 2, href: "docs/../../x.md", problem: "leaves the repository" },
      { line: 2, href: "/etc/passwd", problem: "an absolute path; use a path relative to this file" },
      {
        line: 3,
        href: ".cache/report.md",
        problem: "names a file ignored by git, which a clone does not have",
      },
      {
        line: 3,
        href: "docs/design.md#no-such-heading",
        problem: "docs/design.md has no heading #no-such-heading",
      },
      { line: 3, href: "#nothing", problem: "README.md has no heading #nothing" },
      { line: 7, href: "docs/missing.md", problem: "names no file of the repository" },
    ]);
    expect(problems.every((p) => p.file === "README.md")).toBe(true);
  });
});
