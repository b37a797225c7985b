// POSIX word splitting for MAN8S_APPLICATION_ARGS when the image has no /bin/sh (distroless, scratch).
// mbctl writes that value with Python's shlex.quote, so quoting is all we must undo. Anything that
// needs a real shell (operators, expansions, redirections) is refused with a reason rather than
// silently run differently.

export type SplitResult = { ok: true; argv: string[] } | { ok: false; reason: string };

const OPERATOR = new Set(["|", "&", ";", "<", ">", "(", ")"]);

export function splitWords(line: string): SplitResult {
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
        if (d === "$" || d === "`") return { ok: false, reason: `expansion '${d}' inside double quotes needs a shell` };
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
    } else if (c === "#" && !inWord) {
      break; // a comment runs to the end of the line
    } else if (OPERATOR.has(c)) {
      return { ok: false, reason: `shell operator '${c}' needs a shell` };
    } else if (c === "$" || c === "`") {
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
