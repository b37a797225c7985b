// READY=1 through a real systemd-nspawn --notify-ready=yes, with a listener on nspawn's own NOTIFY_SOCKET.
// The payload is our notify code (test/probes/fixtures/notify-ready.ts, compiled with bun build --compile and
// patched to the bundle's /man8s-init/lib, in a busybox-static rootfs): it polls tcp://127.0.0.1:PORT (nspawn
// shares the host network here) and sends READY=1. The host opens PORT only after a delay.
//   PID 2 (--as-pid2): READY=1 forwarded only because we claim pid 1 with SCM_CREDENTIALS; the control run that
//   claims its real pid 2 is dropped by nspawn. PID 1: forwarded as is.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { copyFileSync, mkdirSync, symlinkSync, writeFileSync } from "node:fs";
import { NotifyListener, ROOT, freePort, isRoot, sh, tempDir } from "./helpers.ts";

const nspawn = Bun.which("systemd-nspawn");
const busybox = ["/bin/busybox", "/usr/bin/busybox"].find((p) => Bun.file(p).size > 0);
const canRun = isRoot && nspawn !== null && busybox !== undefined && Bun.which("patchelf") !== null;
const LIBS = ["ld-linux-x86-64.so.2", "libc.so.6", "libm.so.6", "libpthread.so.0", "libdl.so.2", "libgcc_s.so.1"];

let work: { path: string; remove(): void };
let rootfs = "", bundle = "";
let seq = 0;

async function ldconfigPath(lib: string): Promise<string> {
  const r = await sh(`ldconfig -p | awk -v n=${lib} '$1==n && /x86-64/ {print $NF; exit}'`);
  const p = r.out.trim();
  if (!p) throw new Error(`library ${lib} not found by ldconfig`);
  return p;
}

beforeAll(async () => {
  if (!canRun) return;
  work = tempDir("nspawn");
  rootfs = `${work.path}/root`;
  bundle = `${work.path}/bundle`;
  for (const d of ["bin", "usr/lib", "proc", "sys", "dev", "run", "tmp", "etc", "man8s-init"]) mkdirSync(`${rootfs}/${d}`, { recursive: true });
  copyFileSync(busybox!, `${rootfs}/bin/busybox`);
  for (const a of ["sh", "sleep", "cat", "ls", "echo", "true"]) symlinkSync("busybox", `${rootfs}/bin/${a}`);
  writeFileSync(`${rootfs}/usr/lib/os-release`, "ID=m8p-busybox\nNAME=m8p\n");
  mkdirSync(`${bundle}/lib`, { recursive: true });
  for (const lib of LIBS) copyFileSync(await ldconfigPath(lib), `${bundle}/lib/${lib}`);
  const build = await sh(
    `'${process.execPath}' build --compile --no-compile-autoload-dotenv --no-compile-autoload-bunfig '${ROOT}/test/probes/fixtures/notify-ready.ts' --outfile '${bundle}/notify-ready' && ` +
      `patchelf --set-interpreter /man8s-init/lib/ld-linux-x86-64.so.2 --set-rpath /man8s-init/lib '${bundle}/notify-ready'`,
  );
  if (build.code !== 0) throw new Error(`building the payload failed: ${build.out}`);
}, 60_000);

afterAll(() => {
  work?.remove();
});

interface Run {
  listener: NotifyListener;
  openedAt: number;
  exitCode: number;
  stdout: string;
  stderr: string;
}

/** Runs the payload in nspawn; opens the TCP port on the host after openAfterMs. */
async function runContainer(opts: { asPid2: boolean; openAfterMs: number; extra?: string[] }): Promise<Run> {
  const name = `m8p${process.pid}n${++seq}`;
  const sock = `${work.path}/notify-${seq}`;
  const listener = new NotifyListener(sock);
  const port = freePort();
  const args = [
    nspawn!, "--register=no", "--keep-unit", "-q", "-M", name, "-D", rootfs,
    ...(opts.asPid2 ? ["--as-pid2"] : []),
    "--notify-ready=yes", "--resolv-conf=off", "--timezone=off", "--link-journal=no", "--console=pipe",
    "--kill-signal=SIGRTMIN+3", `--bind-ro=${bundle}:/man8s-init`,
    "/man8s-init/notify-ready", `tcp://127.0.0.1:${port}`, "--interval", "100ms", "--linger", "200ms",
    ...(opts.extra ?? []),
  ];
  const proc = Bun.spawn(args, { stdout: "pipe", stderr: "pipe", env: { ...process.env, NOTIFY_SOCKET: sock } });
  let server: Bun.TCPSocketListener<undefined> | undefined;
  let openedAt = 0;
  const opener = setTimeout(() => {
    server = Bun.listen({ hostname: "127.0.0.1", port, socket: { data() {} } });
    openedAt = performance.now();
  }, opts.openAfterMs);
  const killer = setTimeout(() => proc.kill("SIGKILL"), 30_000);
  const [stdout, stderr] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text()]);
  const exitCode = await proc.exited;
  clearTimeout(killer);
  clearTimeout(opener);
  server?.stop(true);
  await Bun.sleep(20);
  listener.close();
  return { listener, openedAt, exitCode, stdout, stderr };
}

const readyMsg = (r: Run) => r.listener.messages.find((m) => /^READY=1$/m.test(m.text));

describe.skipIf(!canRun)("READY=1 through systemd-nspawn --notify-ready=yes", () => {
  test("as PID 2 (--as-pid2): READY=1 reaches the host only after the port opens, claiming pid 1", async () => {
    const r = await runContainer({ asPid2: true, openAfterMs: 1500 });
    expect(r.exitCode).toBe(0);
    const payload = JSON.parse(r.stdout.trim().split("\n").pop()!);
    expect(payload).toMatchObject({ pid: 2, notify: { sent: true, claimedPid: 1, socket: "/run/host/notify" } });
    expect(payload.attempts).toBeGreaterThan(1);
    const ready = readyMsg(r);
    expect(ready).toBeDefined();
    expect(r.openedAt).toBeGreaterThan(0);
    expect(ready!.t).toBeGreaterThanOrEqual(r.openedAt);
    expect(ready!.t - r.openedAt).toBeLessThan(100 + 400); // one interval + slack for nspawn and a busy host
    const status = r.listener.messages.find((m) => m.text.includes("STATUS=Container running: ready:"));
    expect(status?.text).toContain("tcp://127.0.0.1:");
    // before the port opened, nspawn only relayed our waiting STATUS, never READY
    expect(r.listener.messages.filter((m) => m.t < r.openedAt).some((m) => /^READY=1$/m.test(m.text))).toBe(false);
  }, 40_000);

  test("control: as PID 2 sending with its real pid, nspawn drops READY=1", async () => {
    const r = await runContainer({ asPid2: true, openAfterMs: 0, extra: ["--claim-pid", "2"] });
    expect(r.exitCode).toBe(0);
    const payload = JSON.parse(r.stdout.trim().split("\n").pop()!);
    expect(payload).toMatchObject({ pid: 2, notify: { sent: true, claimedPid: 2 } });
    expect(readyMsg(r)).toBeUndefined();
    expect(r.listener.messages.some((m) => m.text.includes("X_NSPAWN_LEADER_PID"))).toBe(true); // the listener did work
  }, 40_000);

  test("as PID 1: READY=1 reaches the host only after the port opens", async () => {
    const r = await runContainer({ asPid2: false, openAfterMs: 1500 });
    expect(r.exitCode).toBe(0);
    const payload = JSON.parse(r.stdout.trim().split("\n").pop()!);
    expect(payload).toMatchObject({ pid: 1, notify: { sent: true, claimedPid: 1 } });
    const ready = readyMsg(r);
    expect(ready).toBeDefined();
    expect(ready!.t).toBeGreaterThanOrEqual(r.openedAt);
    expect(ready!.t - r.openedAt).toBeLessThan(100 + 400);
  }, 40_000);
});
