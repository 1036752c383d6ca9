import { execFileSync } from "node:child_process";
import { existsSync, readFileSync, realpathSync } from "node:fs";
import { dirname, extname, isAbsolute, join, posix, relative } from "node:path";
import GithubSlugger from "github-slugger";
import MarkdownIt from "markdown-it";

/** A link of a Markdown file that does not lead to a file of the repository. */
type LinkProblem = { file: string; line: number; href: string; problem: string };

export type LinkReport = {
  /** The Markdown files read, relative to the root. */
  files: string[];
  /** Relative links checked (external URLs are not counted). */
  checked: number;
  problems: LinkProblem[];
};

type Link = { href: string; line: number };

const markdown = new MarkdownIt({ html: true });

// Directories that never belong to the repository even where .gitignore does not say so.
const NEVER = /(^|\/)(node_modules|\.cache|\.git)\//;

/**
 * The files of the repository at `root`: tracked, or new and not ignored, and present on disk. A link
 * to anything else (an ignored cache, a file outside the clone) is one a user who clones it cannot follow.
 */
function repositoryFiles(root: string): Set<string> {
  const out = execFileSync("git", ["ls-files", "--cached", "--others", "--exclude-standard", "-z"], {
    cwd: root,
    encoding: "utf8",
    maxBuffer: 64 * 1024 * 1024,
  });
  return new Set(out.split("\0").filter((f) => f && !NEVER.test(f) && existsSync(join(root, f))));
}

/** The links and images of a Markdown text, with their lines; code spans and blocks hold none. */
function markdownLinks(text: string): Link[] {
  const links: Link[] = [];
  // Table cells carry no line of their own: they are on the line of the last block that has one (their row).
  let blockLine = 1;
  for (const token of markdown.parse(text, {})) {
    if (token.map) blockLine = token.map[0] + 1;
    if (token.type !== "inline" || !token.children) continue;
    // A paragraph is one inline token: count its line breaks to name the line of each link.
    let line = blockLine;
    for (const child of token.children) {
      if (child.type === "softbreak" || child.type === "hardbreak") line++;
      const href =
        child.type === "link_open"
          ? child.attrGet("href")
          : child.type === "image"
            ? child.attrGet("src")
            : null;
      if (href !== null) links.push({ href: String(href), line });
    }
  }
  return links;
}

/** The anchors GitHub gives the headings of a Markdown text (`## Two words` → `two-words`). */
function headingAnchors(text: string): Set<string> {
  const slugger = new GithubSlugger();
  const anchors = new Set<string>();
  const tokens = markdown.parse(text, {});
  tokens.forEach((token, i) => {
    if (token.type !== "heading_open") return;
    const inline = tokens[i + 1];
    const words = (inline?.children ?? [])
      .filter((c) => c.type === "text" || c.type === "code_inline")
      .map((c) => c.content)
      .join("");
    anchors.add(slugger.slug(words));
  });
  return anchors;
}

const decode = (s: string) => {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
};

/**
 * Checks every relative link and image of every Markdown file of the repository at `root`: it must
 * name a file or directory of the repository, inside it, and an anchor into a Markdown file must name
 * one of its headings. URLs with a scheme (https:, mailto:) are not followed; absolute paths are
 * refused, since they cannot mean the same thing in another clone.
 */
export function checkLinks(root: string): LinkReport {
  const top = realpathSync(root);
  const files = repositoryFiles(top);
  const directories = new Set<string>();
  for (const f of files) {
    for (let d = posix.dirname(f); d !== "."; d = posix.dirname(d)) directories.add(d);
  }
  const anchorsOf = new Map<string, Set<string>>();
  const anchors = (file: string) => {
    let set = anchorsOf.get(file);
    if (!set) {
      set = headingAnchors(readFileSync(join(top, file), "utf8"));
      anchorsOf.set(file, set);
    }
    return set;
  };

  const markdownFiles = [...files].filter((f) => extname(f).toLowerCase() === ".md").sort();
  const problems: LinkProblem[] = [];
  let checked = 0;
  for (const file of markdownFiles) {
    for (const { href, line } of markdownLinks(readFileSync(join(top, file), "utf8"))) {
      const report = (problem: string) => problems.push({ file, line, href, problem });
      // A URL (https:, mailto:) or a protocol-relative one. markdown-it, like GitHub, makes no link of file: URLs.
      if (href.startsWith("//") || /^[a-z][a-z0-9+.-]*:/i.test(href)) continue;
      checked++;
      const [pathPart = "", fragment] = href.split("#", 2) as [string, string | undefined];
      const path = decode(pathPart.split("?", 1)[0] ?? "");
      if (isAbsolute(path)) {
        report("an absolute path; use a path relative to this file");
        continue;
      }
      const target =
        path === ""
          ? file
          : relative(top, join(top, dirname(file), path))
              .split("\\")
              .join("/");
      if (target === ".." || target.startsWith("../") || isAbsolute(target)) {
        report("leaves the repository");
        continue;
      }
      if (target === "" || directories.has(target)) continue;
      if (!files.has(target)) {
        report(
          existsSync(join(top, target))
            ? "names a file ignored by git, which a clone does not have"
            : "names no file of the repository",
        );
        continue;
      }
      if (fragment && extname(target).toLowerCase() === ".md" && !anchors(target).has(decode(fragment))) {
        report(`${target} has no heading #${decode(fragment)}`);
      }
    }
  }
  return { files: markdownFiles, checked, problems };
}
