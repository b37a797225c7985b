// Three-way merge of a rendered file with what the user made of it: base = the last rendering (kept in the
// generation as *.rendered), ours = the new rendering, theirs = the file on disk. Per entry:
//   unchanged by the user      -> the new rendering's value (or its removal)
//   unchanged by the rendering -> the user's value (or the user's removal)
//   changed the same way       -> that value
//   changed differently        -> a conflict: the user's value wins and the conflict is reported.
// An entry is a line with an identity: for man8env.env the key; for container.nspawn the section plus the
// key for single-valued settings, plus the destination for Bind=/BindReadOnly=, plus the variable for
// Environment=, the whole line for other repeatable settings; comments by their text.
// Blank lines are layout, not content: the output has one blank line between sections.

export interface Conflict {
  file: string;
  /** the entry's identity, e.g. "MAN8S_READY" or "[Files] Bind /data" */
  entry: string;
  base: string | null;
  rendered: string | null;
  yours: string | null;
}

interface Entry {
  id: string;
  text: string;
}

interface Doc {
  /** section names in order ("" for lines before the first section) */
  order: string[];
  sections: Map<string, Entry[]>;
}

/** nspawn settings that may appear more than once (systemd.nspawn(5)); all others: the last one wins. */
const NSPAWN_MULTI = new Set([
  "Bind", "BindReadOnly", "BindUser", "TemporaryFileSystem", "Inaccessible", "Overlay", "OverlayReadOnly", "Environment",
  "Port", "Capability", "DropCapability", "SystemCallFilter", "Property", "VirtualEthernetExtra", "Interface", "MACVLAN",
  "IPVLAN", "Zone", "Limit", "DeviceAllow", "Parameters",
]);

function occurrence(seen: Map<string, number>, id: string): string {
  const n = (seen.get(id) ?? 0) + 1;
  seen.set(id, n);
  return n === 1 ? id : `${id} #${n}`;
}

export function parseEnvDoc(text: string): Doc {
  const entries: Entry[] = [];
  const seen = new Map<string, number>();
  for (const line of text.split("\n")) {
    if (line.trim() === "") continue;
    const i = line.indexOf("=");
    const isKey = !line.trimStart().startsWith("#") && i > 0;
    // a repeated key: the init takes the last value, so the later line is the key's entry
    const id = isKey ? line.slice(0, i).trim() : occurrence(seen, line.trimStart().startsWith("#") ? line : `line ${line}`);
    if (isKey) {
      const prev = entries.findIndex((e) => e.id === id);
      if (prev >= 0) entries.splice(prev, 1);
    }
    entries.push({ id, text: line });
  }
  return { order: [""], sections: new Map([["", entries]]) };
}

export function parseNspawnDoc(text: string): Doc {
  const doc: Doc = { order: [""], sections: new Map([["", []]]) };
  let sec = "";
  const seen = new Map<string, number>();
  for (const raw of text.split("\n")) {
    const line = raw.trimEnd();
    if (line.trim() === "") continue;
    const m = /^\s*\[([^\]]*)\]\s*$/.exec(line);
    if (m) {
      sec = m[1]!;
      if (!doc.sections.has(sec)) {
        doc.sections.set(sec, []);
        doc.order.push(sec);
      }
      continue;
    }
    const list = doc.sections.get(sec)!;
    const t = line.trimStart();
    let id: string;
    if (t.startsWith("#") || t.startsWith(";") || !t.includes("=")) id = occurrence(seen, `[${sec}] ${t}`);
    else {
      const key = t.slice(0, t.indexOf("=")).trim();
      const value = t.slice(t.indexOf("=") + 1).trim();
      if (key === "Bind" || key === "BindReadOnly") id = `[${sec}] Bind ${bindDest(value)}`;
      else if (key === "Environment") id = `[${sec}] Environment ${envVar(value)}`;
      else if (NSPAWN_MULTI.has(key)) id = occurrence(seen, `[${sec}] ${t}`);
      else id = `[${sec}] ${key}`;
      const prev = list.findIndex((e) => e.id === id);
      if (prev >= 0 && !NSPAWN_MULTI.has(key)) list.splice(prev, 1);
    }
    list.push({ id, text: line });
  }
  return doc;
}

/** Bind=SRC[:DEST[:OPTS]]: the container side names the bind (SRC alone binds to the same path). */
function bindDest(v: string): string {
  const f = v.replace(/^-/, "").split(":");
  return f[1] ?? f[0] ?? v;
}

function envVar(v: string): string {
  const u = v.replace(/^["']|["']$/g, "");
  const i = u.indexOf("=");
  return i > 0 ? u.slice(0, i) : u;
}

function index(doc: Doc): Map<string, { sec: string; text: string }> {
  const m = new Map<string, { sec: string; text: string }>();
  for (const sec of doc.order) for (const e of doc.sections.get(sec)!) m.set(e.id, { sec, text: e.text });
  return m;
}

export interface MergeResult {
  text: string;
  conflicts: Conflict[];
  /** entries kept from the file on disk that the new rendering does not have or has differently */
  kept: string[];
}

/**
 * base === null (no earlier rendering known, e.g. installed by an older agent): nothing can be told apart
 * as the user's, so the new rendering replaces the file, as before.
 */
export function merge3(file: string, kind: "env" | "nspawn", base: string | null, rendered: string, disk: string | null): MergeResult {
  // nothing the user changed: the new rendering, byte for byte
  if (disk === null || base === null || disk === base) return { text: rendered, conflicts: [], kept: [] };
  const parse = kind === "env" ? parseEnvDoc : parseNspawnDoc;
  const B = index(parse(base));
  const oursDoc = parse(rendered);
  const O = index(oursDoc);
  const diskDoc = parse(disk);
  const T = index(diskDoc);
  const conflicts: Conflict[] = [];
  const kept: string[] = [];
  const decide = (id: string): string | null => {
    const b = B.get(id)?.text ?? null;
    const o = O.get(id)?.text ?? null;
    const t = T.get(id)?.text ?? null;
    if (t === b) return o;
    if (o === b || o === t) {
      if (t !== o) kept.push(id);
      return t;
    }
    conflicts.push({ file, entry: id, base: b, rendered: o, yours: t });
    return t;
  };
  // the new rendering's order, with the user's own entries after the entry they followed on disk
  const out = new Map<string, string[]>();
  const order: string[] = [];
  const placed = new Set<string>();
  const sec = (s: string) => {
    if (!out.has(s)) {
      out.set(s, []);
      order.push(s);
    }
    return out.get(s)!;
  };
  for (const s of oursDoc.order) {
    for (const e of oursDoc.sections.get(s)!) {
      placed.add(e.id);
      const v = decide(e.id);
      if (v !== null) sec(s).push(v);
      // entries only on disk that followed this one there
      const dl = T.get(e.id) ? diskDoc.sections.get(T.get(e.id)!.sec)! : [];
      let at = dl.findIndex((x) => x.id === e.id);
      while (at >= 0 && ++at < dl.length && !O.has(dl[at]!.id)) {
        const x = dl[at]!;
        placed.add(x.id);
        const w = decide(x.id);
        if (w !== null) sec(s).push(w);
      }
    }
    sec(s);
  }
  for (const s of diskDoc.order) {
    for (const e of diskDoc.sections.get(s)!) {
      if (placed.has(e.id)) continue;
      placed.add(e.id);
      const w = decide(e.id);
      if (w !== null) sec(s).push(w);
    }
  }
  const head = out.get("") ?? [];
  const parts: string[] = [];
  for (const s of order) {
    if (s === "") continue;
    const lines = out.get(s)!;
    if (lines.length === 0 && !oursDoc.sections.has(s)) continue;
    parts.push([`[${s}]`, ...lines].join("\n"));
  }
  const text = [...head, ...(parts.length ? [parts.join("\n\n")] : [])].join("\n");
  return { text: `${text}\n`, conflicts, kept };
}
