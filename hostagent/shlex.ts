// POSIX shell quoting exactly like Python's shlex.quote, which mbctl uses for MAN8S_APPLICATION_ARGS
// (docs/notes.md §9): safe words stay bare, others go in '...' with ' written as '"'"'.
const SAFE = /^[\w@%+=:,./-]+$/;

export function shlexQuote(s: string): string {
  if (s.length === 0) return "''";
  // Python's \w with re.ASCII: [A-Za-z0-9_]; JS \w is the same set
  if (SAFE.test(s)) return s;
  return `'${s.replaceAll("'", `'"'"'`)}'`;
}

export function shlexJoin(argv: readonly string[]): string {
  return argv.map(shlexQuote).join(" ");
}
