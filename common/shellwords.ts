// POSIX shell words, both ways, for what man8s runs without a shell (docs/notes.md §9).
//
//   splitWords(text, mode?): SplitResult   one word splitter, one set of quoting rules (below)
//   shlexQuote(word) / shlexJoin(argv)     quoting exactly like Python's shlex.quote, which mbctl uses for
//                                          MAN8S_APPLICATION_ARGS; splitWords(shlexJoin(argv)) gives argv back
//
// Quoting (both modes): blanks (space, tab, newline) separate words; '...' is literal; "..." is literal but
// for \" \\ \$ \` and backslash-newline (removed); outside quotes a backslash takes the next character
// literally and backslash-newline is removed. Nothing is expanded. An unclosed quote or a trailing
// backslash is refused.
//
// mode "command" (default): the words are an argv exec'd WITHOUT a shell (MAN8S_APPLICATION_ARGS and exec:
// probes when the image has no /bin/sh). Anything that would mean something else to a shell is refused
// with a reason instead of being passed on as a word: operators | & ; < > ( ), $ and ` (outside single
// quotes). A # that starts a word begins a comment, as in sh. With /bin/sh present, the callers hand the
// text to the shell instead and never split it.
// mode "list": the words are a list of values, e.g. probe URLs in MAN8S_WAIT_FOR (an http:// query holds
// & and ;, an exec: probe is one quoted word). The shell's special characters are ordinary characters.

export type SplitResult = { ok: true; argv: string[] } | { ok: false; reason: string };
export type SplitMode = "command" | "list";

const OPERATOR = new Set(["|", "&", ";", "<", ">", "(", ")"]);

export function splitWords(line: string, mode: SplitMode = "command"): SplitResult {
  const command = mode === "command";
  const argv: string[] = [];
  let word = "";
  let inWord = false;
  let i = 0;
  const n = line.length;
  while (i < n) {
    const c = line[i]!;
    if (c === " " || c === "\t" || c === "\n") {
      if (inWord) argv.push(word);
      word = "";
      inWord = false;
      i++;
    } else if (c === "'") {
      const end = line.indexOf("'", i + 1);
      if (end < 0) return { ok: false, reason: `unterminated single quote at offset ${i}` };
      word += line.slice(i + 1, end);
      inWord = true;
      i = end + 1;
    } else if (c === '"') {
      i++;
      let closed = false;
      while (i < n) {
        const d = line[i]!;
        if (d === '"') {
          closed = true;
          i++;
          break;
        }
        if (d === "\\" && i + 1 < n && '$`"\\\n'.includes(line[i + 1]!)) {
          if (line[i + 1] !== "\n") word += line[i + 1];
          i += 2;
          continue;
        }
        if (command && (d === "$" || d === "`")) return { ok: false, reason: `expansion '${d}' inside double quotes needs a shell` };
        word += d;
        i++;
      }
      if (!closed) return { ok: false, reason: "unterminated double quote" };
      inWord = true;
    } else if (c === "\\") {
      if (i + 1 >= n) return { ok: false, reason: "trailing backslash" };
      if (line[i + 1] !== "\n") word += line[i + 1];
      inWord = inWord || line[i + 1] !== "\n";
      i += 2;
    } else if (command && c === "#" && !inWord) {
      break; // a comment runs to the end of the line
    } else if (command && OPERATOR.has(c)) {
      return { ok: false, reason: `shell operator '${c}' needs a shell` };
    } else if (command && (c === "$" || c === "`")) {
      return { ok: false, reason: `expansion '${c}' needs a shell` };
    } else {
      word += c;
      inWord = true;
      i++;
    }
  }
  if (inWord) argv.push(word);
  return { ok: true, argv };
}

// Python's \w with re.ASCII: [A-Za-z0-9_]; JS \w is the same set
const SAFE = /^[\w@%+=:,./-]+$/;

/** Python's shlex.quote: safe words stay bare, others go in '...' with ' written as '"'"'. */
export function shlexQuote(s: string): string {
  if (s.length === 0) return "''";
  if (SAFE.test(s)) return s;
  return `'${s.replaceAll("'", `'"'"'`)}'`;
}

export function shlexJoin(argv: readonly string[]): string {
  return argv.map(shlexQuote).join(" ");
}
