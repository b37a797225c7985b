// The init on a real terminal (issue 10 items 2, 3, 5): a pseudo-terminal opened by test/init/scripts/onpty.py
// is the controlling terminal of the init's session. The app must run in its own process group, be the
// terminal's foreground group, receive each Ctrl-C / Ctrl-\ / Ctrl-Z / resize exactly once (the init none:
// a Ctrl-C at a REPL-like app must not stop the container), see its kill(0, …) once, and a shell started
// with `sh -c 'exec bash -i'` must get job control. Each case also runs tini the same way, for comparison.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdirSync } from "node:fs";
import { BUNDLE, busyboxRootfs, childrenOf, ensureBuilt, fixture, WORK } from "./harness.ts";

/** sigapp's "sig N from PID" lines; on a terminal the echo of ^C can precede one on its line */
function signalCounts(text: string): Map<number, number> {
  const m = new Map<number, number>();
  for (const x of text.matchAll(/sig (\d+) from/g)) m.set(Number(x[1]), (m.get(Number(x[1])) ?? 0) + 1);
  return m;
}

const PY = "/usr/bin/python3";
const started = new Set<number>();
let sigapp = "";
let rootfs = "";
beforeAll(async () => {
  await ensureBuilt();
  sigapp = await fixture("sigapp");
  rootfs = await busyboxRootfs("rootfs-m8p-tty");
}, 120_000);
afterAll(() => {
  const tree = (pid: number): number[] => [pid, ...childrenOf(pid).flatMap(tree)];
  for (const pid of [...started].flatMap(tree)) {
    try {
      process.kill(pid, "SIGKILL");
    } catch {
      // gone
    }
  }
});

type Init = "man8s" | "man8s-pid1" | "man8s-nspawn" | "tini";
/**
 * How each init is started on the terminal, and how deep below the pty's session leader it sits. Under
 * nspawn (--console=interactive: the container gets a terminal of its own, nspawn relays it and its size)
 * the init is PID 2 below nspawn's stub; the rootfs has sigapp at /usr/local/bin and busybox's sh.
 */
function initArgv(init: Init, cmd: string[]): { argv: string[]; depth: number } {
  if (init === "tini") return { argv: ["tini", "-s", "--", ...cmd], depth: 0 };
  if (init === "man8s-nspawn") {
    const inside = cmd.map((a) => (a === sigapp ? "/usr/local/bin/sigapp" : a));
    return {
      argv: [
        "systemd-nspawn", "--register=no", "--keep-unit", "-q", "-M", `m8p-tty-${process.pid}-${seq}`, "-D", rootfs, "--as-pid2",
        "--console=interactive", "--resolv-conf=off", "--timezone=off", "--link-journal=no", `--bind-ro=${BUNDLE}:/man8s-init`,
        "/man8s-init/init", "--", ...inside,
      ],
      depth: 2,
    };
  }
  if (init === "man8s") return { argv: [`${BUNDLE}/init`, "--", ...cmd], depth: 0 };
  return { argv: ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child", `${BUNDLE}/init`, "--", ...cmd], depth: 1 };
}

let seq = 0;
async function onPty(init: Init, cmd: string[]) {
  const dir = `${WORK}/m8p-pty-${++seq}`;
  mkdirSync(dir, { recursive: true });
  const { argv, depth } = initArgv(init, cmd);
  const proc = Bun.spawn([PY, `${import.meta.dir}/scripts/onpty.py`, ...argv], {
    stdin: "pipe", stdout: "pipe", stderr: "pipe",
    env: { PATH: process.env.PATH ?? "/usr/bin:/bin", TERM: "dumb", SYSTEMD_NSPAWN_LOCK: "0", PS1: "$ ", MAN8S_ENV_FILE: `${dir}/none`, MAN8S_STATUS_FILE: `${dir}/status.json` },
  });
  started.add(proc.pid);
  let out = "";
  void (async () => {
    const dec = new TextDecoder();
    for await (const c of proc.stdout) out += dec.decode(c, { stream: true });
  })();
  const waitFor = async (re: RegExp, ms = 10_000) => {
    const deadline = Date.now() + ms;
    for (;;) {
      const m = out.match(re);
      if (m) return m;
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${re}\n--- pty\n${out}`);
      await Bun.sleep(10);
    }
  };
  const send = (line: string) => {
    proc.stdin.write(`${line}\n`);
    proc.stdin.flush();
  };
  const type = (text: string) => send(`write ${Buffer.from(text).toString("hex")}`);
  const initPid = () => {
    let pids = childrenOf(proc.pid);
    for (let d = 0; d < depth; d++) pids = pids.flatMap(childrenOf);
    return pids[0]!;
  };
  const exit = async () => Number((await waitFor(/\[pty\] exit (-?\d+)/, 15_000))[1]);
  return { out: () => out, waitFor, send, type, initPid, exit };
}

const INITS: Init[] = ["man8s", "man8s-pid1", "man8s-nspawn", "tini"];

describe("a REPL-like app on the terminal", () => {
  test("own process group; each key and resize reaches the app once; Ctrl-C does not stop the init; same as tini", async () => {
    const counts = new Map<Init, Record<number, number>>();
    await Promise.all(INITS.map(async (init) => {
      const t = await onPty(init, [sigapp, "-x", "15"]);
      const m = await t.waitFor(/ready pid=(\d+) ppid=(\d+) pgid=(\d+)/);
      const [pid, pgid] = [Number(m[1]), Number(m[3])];
      expect([init, pgid]).toEqual([init, pid]); // a process group of its own
      for (const n of [1, 2, 3]) {
        t.send(`winsize ${29 + n} ${99 + n}`);
        await t.waitFor(new RegExp(`(sig 28 from[^]*){${n}}`));
      }
      t.type("\x03"); // Ctrl-C
      await t.waitFor(/sig 2 from/);
      t.type("\x1c"); // Ctrl-\
      await t.waitFor(/sig 3 from/);
      t.type("\x1a"); // Ctrl-Z
      await t.waitFor(/sig 20 from/);
      await Bun.sleep(300); // a second copy, if the init forwarded one, would have arrived by now
      expect([init, t.out()]).not.toEqual([init, expect.stringContaining("stopping the app")]);
      const c = signalCounts(t.out());
      counts.set(init, Object.fromEntries([...c].sort((a, b) => a[0] - b[0])));
      process.kill(t.initPid(), "SIGTERM");
      expect([init, await t.exit()]).toEqual([init, 143]);
    }));
    const expected = { 2: 1, 3: 1, 20: 1, 28: 3 };
    for (const init of INITS) expect([init, counts.get(init)]).toEqual([init, expected]);
  }, 60_000);

  test("the app's kill(0, SIGUSR1) reaches it once, and only its own group", async () => {
    await Promise.all(INITS.map(async (init) => {
      const t = await onPty(init, [sigapp, "-x", "15", "-k", "10"]);
      await t.waitFor(/sig 10 from/);
      await Bun.sleep(300);
      expect([init, signalCounts(t.out()).get(10)]).toEqual([init, 1]);
      process.kill(t.initPid(), "SIGTERM");
      expect([init, await t.exit()]).toEqual([init, 143]);
    }));
  }, 60_000);
});

describe("the terminal hangs up", () => {
  test("the app gets exactly one SIGHUP, as under tini", async () => {
    const got = new Map<Init, number>();
    await Promise.all((["man8s", "tini"] as Init[]).map(async (init) => {
      const log = `${WORK}/m8p-hup-${init}.log`;
      const t = await onPty(init, [sigapp, "-x", "15", "-o", log]);
      const ready = async () => (await Bun.file(log).exists()) && (await Bun.file(log).text()).includes("ready");
      for (let i = 0; i < 500 && !(await ready()); i++) await Bun.sleep(10);
      const pid = t.initPid();
      t.send("hangup");
      await Bun.sleep(500); // past the init's 50 ms SIGHUP window, and a forwarded copy's delivery
      got.set(init, signalCounts(await Bun.file(log).text()).get(1) ?? 0);
      process.kill(pid, "SIGTERM");
      expect([init, await t.exit()]).toEqual([init, 143]);
    }));
    console.log(`SIGHUP received by the app after a hangup: man8s ${got.get("man8s")}, tini ${got.get("tini")}`);
    expect(got.get("man8s")).toBe(1);
    expect(got.get("tini")).toBe(1);
  }, 60_000);
});

describe("an interactive shell as the app", () => {
  test("sh -c 'exec bash -i' (busybox sh -i in nspawn) gets job control; Ctrl-C at its prompt stops nothing; exit ends the container", async () => {
    await Promise.all(INITS.map(async (init) => {
      // the container's rootfs has busybox only: its ash stands in for bash there
      const t = await onPty(init, ["sh", "-c", init === "man8s-nspawn" ? "exec sh -i" : "exec bash --norc --noprofile -i"]);
      t.type("echo flags=$-\n");
      const flags = (await t.waitFor(/flags=(\w+)/))[1]!;
      expect([init, flags.includes("m")]).toEqual([init, true]); // monitor mode: job control on
      t.type("sleep 100 &\n");
      t.type("jobs -l\n");
      await t.waitFor(/\[1\]\+?\s+\d+ Running/);
      t.type("kill %1; wait; echo killed-$((1+1))\n");
      await t.waitFor(/killed-2/); // Ctrl-C flushes the terminal's input: nothing typed may be pending
      t.type("\x03");
      await t.waitFor(/\^C/);
      await Bun.sleep(200); // readline discards what is typed while it handles the interrupt
      t.type("echo still-$((6*7))\n");
      await t.waitFor(/still-42/);
      t.type("exit 7\n");
      expect([init, await t.exit()]).toEqual([init, 7]);
      expect([init, t.out()]).not.toEqual([init, expect.stringMatching(/no job control|cannot set terminal process group|stopping the app/)]);
    }));
  }, 60_000);
});
