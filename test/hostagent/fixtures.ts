// Fixture images, built for real with umoci from Debian's binaries (tini, dumb-init, catatonit,
// busybox-static, systemd) and hand-made layouts (s6-overlay v3, entrypoint scripts), in
// the scratch directory (test/scratch.ts).
import { chmodSync, chownSync, copyFileSync, mkdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { labDir, scratchDir } from "../scratch.ts";
import { dirname } from "node:path";

export interface Fixture {
  tag: string;
  layout: string;
  /** umoci unpack output: rootfs/ and the runtime config.json */
  bundle: string;
  rootfs: string;
  runtimeConfig: string;
  /** the OCI image config blob (Entrypoint/Cmd split, StopSignal) */
  imageConfig: string;
}

interface Spec {
  tag: string;
  files: (r: string) => void;
  entrypoint?: string[];
  cmd?: string[];
  stopSignal?: string;
  env?: string[];
  user?: string;
  volumes?: string[];
  ports?: string[];
}

function run(argv: string[]): void {
  const r = Bun.spawnSync(argv, { stdout: "pipe", stderr: "pipe" });
  if (r.exitCode !== 0) throw new Error(`${argv.join(" ")}: ${r.stderr.toString()}`);
}

function put(r: string, path: string, from: string, mode = 0o755): void {
  mkdirSync(dirname(r + path), { recursive: true });
  copyFileSync(from, r + path);
  chmodSync(r + path, mode);
}

function write(r: string, path: string, text: string, mode = 0o755): void {
  mkdirSync(dirname(r + path), { recursive: true });
  writeFileSync(r + path, text);
  chmodSync(r + path, mode);
}

function link(r: string, path: string, target: string): void {
  mkdirSync(dirname(r + path), { recursive: true });
  symlinkSync(target, r + path);
}

function own(r: string, path: string, uid: number, gid: number, mode: number): void {
  chownSync(r + path, uid, gid);
  chmodSync(r + path, mode);
}

/** Host directory the user-app image's symlinks point at: its content must never reach a container. */
export const HOST_SECRET = labDir("m8g-host-secret");

/** Docker-style image with USER app, a VOLUME with content, /run content (via /var/run -> /run) and a port. */
function userApp(r: string): void {
  busybox(r);
  for (const a of ["id", "ls", "touch", "su", "stat", "mkdir", "rm", "ln", "chmod", "grep"]) link(r, `/bin/${a}`, "busybox");
  write(r, "/usr/lib/os-release", "ID=m8g-user-app\nNAME=m8g\n", 0o644);
  write(r, "/etc/passwd", "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n", 0o644);
  write(r, "/etc/group", "root:x:0:\napp:x:1000:\nmedia:x:2000:app\n", 0o644);
  mkdirSync(`${r}/home/app`, { recursive: true });
  own(r, "/home/app", 1000, 1000, 0o755);
  // /run content, reached in the image through its /var/run link (absolute, as Debian has it)
  mkdirSync(`${r}/run/app`, { recursive: true });
  writeFileSync(`${r}/run/app/marker`, "image-run-content\n");
  own(r, "/run/app/marker", 1000, 1000, 0o640);
  own(r, "/run/app", 1000, 1000, 0o750);
  link(r, "/run/app/link", "marker");
  link(r, "/var/run", "/run");
  mkdirSync(`${r}/tmp`, { recursive: true });
  writeFileSync(`${r}/tmp/keep.txt`, "tmp-content\n");
  own(r, "/tmp", 0, 0, 0o1777);
  // the volume's content, owned by the image's user
  mkdirSync(`${r}/data/sub`, { recursive: true });
  writeFileSync(`${r}/data/seed.txt`, "seeded-from-image\n");
  own(r, "/data/seed.txt", 1000, 1000, 0o600);
  own(r, "/data/sub", 1000, 1000, 0o700);
  own(r, "/data", 1000, 1000, 0o700);
  link(r, "/data/escape", "/etc/shadow-of-the-host");
  write(r, "/etc/app.conf", "setting=image\n", 0o644);
  // a declared volume whose path is an absolute link to a host directory: resolved inside the image
  link(r, "/escape", HOST_SECRET);
}

/** A busybox-static userland: /bin/busybox plus applet links. */
function busybox(r: string): void {
  put(r, "/bin/busybox", "/bin/busybox");
  for (const a of ["sh", "sleep", "echo", "cat", "true", "false", "kill"]) link(r, `/bin/${a}`, "busybox");
}

const S6_INIT = `#!/bin/sh -e
# s6-overlay v3 entry point (layout as in just-containers/s6-overlay: /init -> suexec -> preinit, stage0)
PATH=/command:/usr/bin:/bin
export PATH
exec /package/admin/s6-overlay-helpers/command/s6-overlay-suexec \\
  ' /package/admin/s6-overlay/libexec/preinit' \\
  '' \\
  /package/admin/s6-overlay/libexec/stage0 \\
  "$@"
`;

export const SPECS: Spec[] = [
  { tag: "user-app", files: userApp, cmd: ["/bin/sleep", "1000"], user: "app", volumes: ["/data", "/escape"], ports: ["8080/tcp"] },
  { tag: "busybox-app", files: busybox, cmd: ["/bin/sleep", "1000"] },
  { tag: "no-entrypoint", files: busybox, cmd: ["sleep", "5"] },
  { tag: "empty", files: busybox },
  { tag: "tini", files: (r) => (busybox(r), put(r, "/usr/bin/tini", "/usr/bin/tini")), entrypoint: ["/usr/bin/tini", "-g", "-e", "143", "--"], cmd: ["/bin/sleep", "1000"] },
  { tag: "dumb-init", files: (r) => (busybox(r), put(r, "/usr/bin/dumb-init", "/usr/bin/dumb-init")), entrypoint: ["dumb-init", "-c", "--"], cmd: ["sleep", "1000"] },
  { tag: "catatonit", files: (r) => (busybox(r), put(r, "/usr/libexec/podman/catatonit", "/usr/bin/catatonit")), entrypoint: ["/usr/libexec/podman/catatonit", "-g", "--"], cmd: ["/bin/sleep", "1000"] },
  {
    tag: "systemd",
    files: (r) => (busybox(r), put(r, "/lib/systemd/systemd", "/lib/systemd/systemd"), link(r, "/sbin/init", "/lib/systemd/systemd")),
    cmd: ["/sbin/init"],
    stopSignal: "SIGRTMIN+3",
    env: ["container=docker"],
  },
  {
    tag: "busybox-init",
    files: (r) => (busybox(r), link(r, "/sbin/init", "/bin/busybox"), write(r, "/etc/inittab", "::sysinit:/bin/true\n", 0o644)),
    cmd: ["/sbin/init"],
  },
  {
    tag: "s6-overlay-v3",
    files: (r) => {
      busybox(r);
      write(r, "/init", S6_INIT);
      put(r, "/package/admin/s6-overlay-helpers-0.1.0.1/command/s6-overlay-suexec", "/bin/busybox");
      link(r, "/package/admin/s6-overlay-helpers", "s6-overlay-helpers-0.1.0.1");
      write(r, "/package/admin/s6-overlay-3.2.0.0/libexec/stage0", "#!/bin/sh\nexec /run/s6/basedir/bin/init \"$@\"\n");
      write(r, "/package/admin/s6-overlay-3.2.0.0/libexec/preinit", "#!/bin/sh\n:\n");
      link(r, "/package/admin/s6-overlay", "s6-overlay-3.2.0.0");
      link(r, "/command/s6-overlay-suexec", "../package/admin/s6-overlay-helpers/command/s6-overlay-suexec");
      mkdirSync(`${r}/etc/s6-overlay/s6-rc.d/user/contents.d`, { recursive: true });
    },
    entrypoint: ["/init"],
    cmd: ["/bin/sleep", "1000"],
    env: ["S6_KEEP_ENV=1"],
  },
  {
    tag: "nginx-like",
    files: (r) => {
      busybox(r);
      put(r, "/usr/sbin/nginx", "/bin/busybox");
      write(r, "/docker-entrypoint.sh", '#!/bin/sh\nset -e\nif [ -z "${NGINX_ENTRYPOINT_QUIET_LOGS:-}" ]; then\n  echo "$0: configuring" >&2\nfi\n\nexec "$@"\n');
    },
    entrypoint: ["/docker-entrypoint.sh"],
    cmd: ["nginx", "-g", "daemon off;"],
    stopSignal: "SIGQUIT",
    env: ["NGINX_VERSION=1.27.0"],
  },
  { tag: "shell-form", files: busybox, entrypoint: ["/bin/sh", "-c"], cmd: ["sleep 1000 & sleep 1000; wait"] },
  {
    tag: "script-exec-tini",
    files: (r) => (busybox(r), put(r, "/usr/bin/tini", "/usr/bin/tini"), write(r, "/entrypoint.sh", '#!/bin/sh\n# hand over to the command\nexport FOO=1\nexec "$@"\n')),
    entrypoint: ["/entrypoint.sh"],
    cmd: ["tini", "-s", "--", "/bin/sleep", "1000"],
  },
  {
    tag: "script-calls-tini",
    files: (r) => (busybox(r), put(r, "/usr/bin/tini", "/usr/bin/tini"), write(r, "/entrypoint.sh", '#!/bin/bash\nset -e\nexec /usr/bin/tini -g -- "$@"\n')),
    entrypoint: ["/entrypoint.sh"],
    cmd: ["/bin/sleep", "1000"],
  },
  {
    tag: "script-noexec",
    files: (r) => (busybox(r), write(r, "/start.sh", "#!/bin/sh\n/bin/sleep 1000 &\n/bin/sleep 1000 &\nwait\n")),
    entrypoint: ["/start.sh"],
  },
  {
    // an absolute symlink and a relative one with too many '..': both must resolve inside the rootfs
    tag: "symlink-entrypoint",
    files: (r) => {
      busybox(r);
      put(r, "/opt/init/catatonit-bin", "/usr/bin/catatonit");
      link(r, "/usr/local/bin/start", "../../../../../../../opt/init/catatonit-bin");
      link(r, "/entry", "/usr/local/bin/start");
    },
    entrypoint: ["/entry", "--"],
    cmd: ["/bin/sleep", "1000"],
  },
  {
    // points at a path that exists on the host but not in the image: must not be found
    tag: "host-escape",
    files: (r) => (busybox(r), link(r, "/entry", "/usr/bin/dumb-init"), link(r, "/entry2", "../../../../usr/bin/tini")),
    entrypoint: ["/entry"],
    cmd: ["/bin/sleep", "1000"],
  },
];

let built: Promise<Map<string, Fixture>> | null = null;
let base = "";
let users = 0;

/**
 * The fixtures, built on first use. bun test runs files one after another in one process and gives no
 * exit hook, so users count themselves: each file calls fixtures() in beforeAll and releaseFixtures()
 * in afterAll, and the last release removes the directory. Leftovers of killed runs go with their scratch (test/scratch.ts).
 */
export function fixtures(): Promise<Map<string, Fixture>> {
  users++;
  built ??= (async () => {
    base = scratchDir("m8a-fixtures");
    const layout = `${base}/layout`;
    run(["umoci", "init", "--layout", layout]);
    const out = new Map<string, Fixture>();
    for (const s of SPECS) out.set(s.tag, buildOne(layout, s));
    return out;
  })();
  return built;
}

export function releaseFixtures(): void {
  if (--users > 0 || !base) return;
  rmSync(base, { recursive: true, force: true });
  base = "";
  built = null;
}

function buildOne(layout: string, s: Spec): Fixture {
  const img = `${layout}:${s.tag}`;
  const work = `${base}/work-${s.tag}`;
  run(["umoci", "new", "--image", img]);
  run(["umoci", "unpack", "--image", img, work]);
  s.files(`${work}/rootfs`);
  run(["umoci", "repack", "--image", img, work]);
  rmSync(work, { recursive: true, force: true });
  const cfg = ["umoci", "config", "--image", img];
  for (const e of s.entrypoint ?? []) cfg.push(`--config.entrypoint=${e}`);
  for (const c of s.cmd ?? []) cfg.push(`--config.cmd=${c}`);
  if (s.stopSignal) cfg.push(`--config.stopsignal=${s.stopSignal}`);
  for (const e of s.env ?? []) cfg.push(`--config.env=${e}`);
  if (s.user) cfg.push(`--config.user=${s.user}`);
  for (const v of s.volumes ?? []) cfg.push(`--config.volume=${v}`);
  for (const p of s.ports ?? []) cfg.push(`--config.exposedports=${p}`);
  if (cfg.length > 4) run(cfg);
  const bundle = `${base}/bundle-${s.tag}`;
  run(["umoci", "unpack", "--image", img, bundle]);
  return { tag: s.tag, layout, bundle, rootfs: `${bundle}/rootfs`, runtimeConfig: `${bundle}/config.json`, imageConfig: imageConfigBlob(layout, s.tag) };
}

/** index.json -> manifest (by ref name) -> config blob path. */
export function imageConfigBlob(layout: string, tag: string): string {
  const index = JSON.parse(readFileSync(`${layout}/index.json`, "utf8")) as { manifests: { digest: string; annotations?: Record<string, string> }[] };
  const m = index.manifests.find((x) => x.annotations?.["org.opencontainers.image.ref.name"] === tag);
  if (!m) throw new Error(`no manifest for ${tag}`);
  const manifest = JSON.parse(readFileSync(`${layout}/blobs/sha256/${m.digest.split(":")[1]}`, "utf8")) as { config: { digest: string } };
  return `${layout}/blobs/sha256/${manifest.config.digest.split(":")[1]}`;
}
