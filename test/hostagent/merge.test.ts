// The three-way merge's rules on their own (the agent-level behaviour is in generations.test.ts): identities
// of nspawn settings and env keys, removals, user sections, and the byte-exact pass-through without edits.
import { describe, expect, test } from "bun:test";
import { merge3 } from "../../hostagent/merge.ts";

const BASE = `# man8s 1 hostagent
[Exec]
Boot=no
KillSignal=SIGRTMIN+3
Environment="PATH=/bin"
Timezone=copy

[Files]
Bind=/s/data:/data:idmap
BindReadOnly=/b:/man8s-init
`;

describe("merge3", () => {
  test("no edits: the new rendering byte for byte; no base known: the new rendering too", () => {
    const next = BASE.replace("SIGRTMIN+3", "SIGTERM");
    expect(merge3("f", "nspawn", BASE, next, BASE)).toEqual({ text: next, conflicts: [], kept: [] });
    expect(merge3("f", "nspawn", null, next, BASE.replace("Boot=no", "Boot=yes")).text).toBe(next);
    expect(merge3("f", "nspawn", BASE, next, null).text).toBe(next);
  });

  test("nspawn: a Bind is named by its destination, Environment= by its variable, other keys by section and key", () => {
    const next = BASE.replace("/s/data:/data", "/s2/data:/data").replace('"PATH=/bin"', '"PATH=/usr/bin:/bin"').replace("# man8s 1", "# man8s 2");
    const mine = BASE.replace("/s/data:/data", "/mnt/big:/data").replace('Environment="PATH=/bin"', 'Environment="PATH=/bin"\nEnvironment="DEBUG=1"')
      .replace("Timezone=copy\n", "") + "\n[Network]\nPort=tcp:80:8080\nPort=tcp:443:8443\n";
    const r = merge3("c", "nspawn", BASE, next, mine);
    const lines = r.text.split("\n");
    expect(lines[0]).toBe("# man8s 2 hostagent"); // the header follows the rendering: the user did not touch it
    expect(lines).toContain("Bind=/mnt/big:/data:idmap");
    expect(lines).not.toContain("Bind=/s2/data:/data:idmap");
    expect(lines).toContain('Environment="PATH=/usr/bin:/bin"');
    expect(lines).toContain('Environment="DEBUG=1"');
    expect(lines).not.toContain("Timezone=copy");
    expect(r.text).toContain("[Network]\nPort=tcp:80:8080\nPort=tcp:443:8443\n");
    expect(r.conflicts).toEqual([{ file: "c", entry: "[Files] Bind /data", base: "Bind=/s/data:/data:idmap", rendered: "Bind=/s2/data:/data:idmap", yours: "Bind=/mnt/big:/data:idmap" }]);
    // sections keep their order, one blank line between them
    expect(r.text.indexOf("[Exec]")).toBeLessThan(r.text.indexOf("[Files]"));
    expect(r.text).not.toContain("\n\n\n");
  });

  test("env: keys by name (the last of repeated keys, as the init reads them), removal by either side", () => {
    const base = "# h\nA=1\nB=2\nC=3\n";
    const next = "# h\nA=1\nC=3\nD=4\n"; // the rendering drops B, adds D
    const mine = "# h\nA=0\nA=9\nB=2\nC=3\nE=5\n"; // the user repeats A, adds E
    const r = merge3("e", "env", base, next, mine);
    expect(r.text).toBe("# h\nA=9\nC=3\nE=5\nD=4\n");
    expect(r.conflicts).toEqual([]);
    // both changed the same key the same way: no conflict
    expect(merge3("e", "env", "A=1\n", "A=2\n", "A=2\n").conflicts).toEqual([]);
    // the rendering removed a key the user changed: the user's value stays, reported
    const gone = merge3("e", "env", "A=1\nB=1\n", "A=1\n", "A=1\nB=7\n");
    expect(gone.text).toBe("A=1\nB=7\n");
    expect(gone.conflicts).toEqual([{ file: "e", entry: "B", base: "B=1", rendered: null, yours: "B=7" }]);
  });
});
