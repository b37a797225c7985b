// Real application images for the end-to-end tests: OCI layouts built with umoci from Debian's packages
// (rootfs by mmdebstrap), configured as the official Docker images are (User, Env, Volumes, StopSignal,
// ExposedPorts, Healthcheck, entry point). Built once per machine into a cache directory, one layout per
// image keyed by a hash of its recipe, so a changed recipe rebuilds that image and the rest cost nothing.
//   bun test/apps/images.ts           builds (or finds) the cache and prints where it is
// Cold build ~1-2 min (three mmdebstrap runs over the network in parallel + umoci repack); cached: a
// hash and a stat per image.
import { createHash } from "node:crypto";
import { chmodSync, chownSync, copyFileSync, existsSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";

/** the test run's cache ($MAN8S_TEST_CACHE, default /var/cache/man8s-test); these images live in its apps/ */
export const CACHE_ROOT = `${process.env.MAN8S_TEST_CACHE ?? "/var/cache/man8s-test"}/apps`;
const FILES = `${import.meta.dir}/files`;
const SUITE = "bookworm";

export interface AppImage {
  tag: string;
  layout: string;
  /** the OCI image config blob (what `skopeo inspect --config` prints), for the agent's configPath */
  config: string;
}

interface Recipe {
  tag: string;
  /** Debian packages on top of the essential set (none: no mmdebstrap, files only) */
  packages: string[];
  /** run inside mmdebstrap before the packages are installed ($1 = rootfs) */
  essentialHook?: string;
  /** shapes the finished rootfs (host paths under r) */
  files(r: string): void;
  /** `umoci config` flags */
  config: string[];
  /** files of test/apps/files/ it copies in (part of its cache key) */
  uses?: string[];
  /** fields umoci cannot set (Healthcheck) merged into the config blob's `config` */
  extra?: Record<string, unknown>;
}

function run(argv: string[], env?: Record<string, string>): string {
  const r = Bun.spawnSync(argv, { stdout: "pipe", stderr: "pipe", env: env ? { ...process.env, ...env } : undefined });
  if (r.exitCode !== 0) throw new Error(`${argv.join(" ").slice(0, 300)} → ${r.exitCode}: ${r.stderr.toString().slice(-3000)}`);
  return r.stdout.toString();
}

function write(r: string, path: string, text: string, mode = 0o644): void {
  mkdirSync(dirname(r + path), { recursive: true });
  writeFileSync(r + path, text);
  chmodSync(r + path, mode);
}

function put(r: string, path: string, from: string, mode = 0o755): void {
  mkdirSync(dirname(r + path), { recursive: true });
  copyFileSync(from, r + path);
  chmodSync(r + path, mode);
}

function dir(r: string, path: string, mode: number, uid = 0, gid = 0): void {
  mkdirSync(r + path, { recursive: true });
  chownSync(r + path, uid, gid);
  chmodSync(r + path, mode);
}

const PG_BIN = "/usr/lib/postgresql/15/bin";
const PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const NS = 1_000_000_000; // Docker's Healthcheck durations are nanoseconds

export const RECIPES: Recipe[] = [
  {
    // postgres:15 — uid/gid 999 made before the packages (as the official image does), no main cluster,
    // /var/run/postgresql (= /run/postgresql, Debian links /var/run to /run) owned by postgres, 3777
    tag: "postgres",
    uses: ["postgres-entrypoint.sh"],
    packages: ["postgresql-15"],
    essentialHook: `echo 'postgres:x:999:999::/var/lib/postgresql:/bin/bash' >> "$1/etc/passwd" && echo 'postgres:x:999:' >> "$1/etc/group" && mkdir -p "$1/etc/postgresql-common" && printf 'create_main_cluster = false\\n' > "$1/etc/postgresql-common/createcluster.conf"`,
    files(r) {
      rmSync(`${r}/var/lib/postgresql/15`, { recursive: true, force: true });
      rmSync(`${r}/etc/postgresql/15`, { recursive: true, force: true });
      dir(r, "/run/postgresql", 0o3777, 999, 999);
      dir(r, "/var/lib/postgresql/data", 0o1777, 999, 999);
      const sample = `${r}/usr/share/postgresql/15/postgresql.conf.sample`;
      writeFileSync(sample, readFileSync(sample, "utf8").replace(/^#listen_addresses = 'localhost'/m, "listen_addresses = '*'"));
      put(r, "/usr/local/bin/docker-entrypoint.sh", `${FILES}/postgres-entrypoint.sh`);
    },
    config: [
      "--config.user=postgres",
      "--config.entrypoint=docker-entrypoint.sh",
      "--config.cmd=postgres",
      `--config.env=PATH=${PATH}:${PG_BIN}`,
      "--config.env=PG_MAJOR=15",
      "--config.env=LANG=C.UTF-8",
      "--config.env=PGDATA=/var/lib/postgresql/data",
      "--config.volume=/var/lib/postgresql/data",
      "--config.exposedports=5432/tcp",
      "--config.stopsignal=SIGINT",
    ],
  },
  {
    // nginx — logs to the console, the entry point runs /docker-entrypoint.d, curl for the health check
    tag: "nginx",
    uses: ["nginx-entrypoint.sh"],
    packages: ["nginx", "curl"],
    files(r) {
      rmSync(`${r}/var/log/nginx/access.log`, { force: true });
      rmSync(`${r}/var/log/nginx/error.log`, { force: true });
      symlinkSync("/dev/stdout", `${r}/var/log/nginx/access.log`);
      symlinkSync("/dev/stderr", `${r}/var/log/nginx/error.log`);
      // the official image's conf logs notices (start, signals, worker exits) to the console
      const conf = `${r}/etc/nginx/nginx.conf`;
      writeFileSync(conf, readFileSync(conf, "utf8").replace(/^error_log (\S+);/m, "error_log $1 notice;"));
      write(r, "/var/www/html/index.html", "<h1>man8s real-apps nginx</h1>\n");
      put(r, "/docker-entrypoint.sh", `${FILES}/nginx-entrypoint.sh`);
      mkdirSync(`${r}/docker-entrypoint.d`, { recursive: true });
    },
    config: [
      "--config.entrypoint=/docker-entrypoint.sh",
      "--config.cmd=nginx",
      "--config.cmd=-g",
      "--config.cmd=daemon off;",
      `--config.env=PATH=${PATH}`,
      "--config.env=NGINX_VERSION=1.22.1",
      "--config.exposedports=80/tcp",
      "--config.stopsignal=SIGQUIT",
    ],
    extra: { Healthcheck: { Test: ["CMD", "curl", "-fsS", "-o", "/dev/null", "http://127.0.0.1/"], Interval: 1 * NS, Timeout: 3 * NS, StartPeriod: 0, Retries: 3 } },
  },
  {
    // redis:7 — data in /data (a Volume, owned by redis), protected mode off as the official image's config
    tag: "redis",
    packages: ["redis-server"],
    files(r) {
      const pw = readFileSync(`${r}/etc/passwd`, "utf8").split("\n").find((l) => l.startsWith("redis:"));
      const [uid, gid] = (pw ?? "redis:x:0:0").split(":").slice(2, 4).map(Number);
      dir(r, "/data", 0o755, uid, gid);
    },
    config: [
      "--config.user=redis",
      "--config.cmd=redis-server",
      "--config.cmd=--protected-mode",
      "--config.cmd=no",
      `--config.env=PATH=${PATH}`,
      "--config.workingdir=/data",
      "--config.volume=/data",
      "--config.exposedports=6379/tcp",
    ],
  },
  {
    // busybox with an unprivileged numeric User, supplementary groups, a Volume and content under /run
    tag: "busybox",
    uses: ["busybox-app.sh"],
    packages: [],
    files(r) {
      put(r, "/bin/busybox", "/bin/busybox");
      // nspawn refuses a directory without /usr as "not an OS tree"; busybox's own image has /usr too
      write(r, "/usr/lib/os-release", 'ID=busybox\nNAME="BusyBox (man8s test image)"\n');
      mkdirSync(`${r}/etc`, { recursive: true });
      symlinkSync("../usr/lib/os-release", `${r}/etc/os-release`);
      const applets = run(["/bin/busybox", "--list"]).split("\n").filter((a) => a && a !== "busybox");
      for (const a of applets) symlinkSync("busybox", `${r}/bin/${a}`);
      write(r, "/etc/passwd", "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n");
      write(r, "/etc/group", "root:x:0:\napp:x:1000:\naudio:x:29:app\nshared:x:2001:app,other\nunrelated:x:2002:other\nnogroup:x:65534:\n");
      dir(r, "/home/app", 0o750, 1000, 1000);
      dir(r, "/root", 0o700);
      dir(r, "/tmp", 0o1777);
      dir(r, "/run/app", 0o750, 1000, 1000);
      write(r, "/run/app/greeting", "hello from the image's /run\n");
      chownSync(`${r}/run/app/greeting`, 1000, 1000);
      symlinkSync("greeting", `${r}/run/app/current`);
      dir(r, "/data", 0o700, 1000, 1000);
      write(r, "/data/seed", "seeded by the image\n");
      chownSync(`${r}/data/seed`, 1000, 1000);
      put(r, "/app.sh", `${FILES}/busybox-app.sh`);
    },
    config: ["--config.user=1000:1000", "--config.entrypoint=/app.sh", "--config.env=PATH=/bin", "--config.env=GREETING=image default", "--config.volume=/data", "--config.workingdir=/home/app"],
  },
];

/**
 * One image's cache key: its recipe (the files() code included), the files it copies in, and the build
 * steps' code, so editing one recipe rebuilds only that image.
 */
export function recipeHash(rec: Recipe): string {
  const h = createHash("sha256");
  h.update(JSON.stringify({ tag: rec.tag, packages: rec.packages, hook: rec.essentialHook, config: rec.config, extra: rec.extra, uses: rec.uses }));
  h.update(rec.files.toString()).update(mmdebstrapArgs.toString()).update(buildOne.toString()).update(patchConfig.toString()).update(SUITE);
  for (const f of rec.uses ?? []) h.update(readFileSync(`${FILES}/${f}`));
  return h.digest("hex").slice(0, 16);
}

/** index.json → manifest (by ref name) → config blob path. */
export function configBlob(layout: string, tag: string): string {
  const m = manifestOf(layout, tag);
  return blobPath(layout, m.manifest.config.digest);
}

const blobPath = (layout: string, digest: string) => `${layout}/blobs/sha256/${digest.split(":")[1]}`;

function manifestOf(layout: string, tag: string) {
  const index = JSON.parse(readFileSync(`${layout}/index.json`, "utf8")) as { manifests: { digest: string; size: number; annotations?: Record<string, string> }[] };
  const entry = index.manifests.find((x) => x.annotations?.["org.opencontainers.image.ref.name"] === tag);
  if (!entry) throw new Error(`${layout}: no manifest for ${tag}`);
  const manifest = JSON.parse(readFileSync(blobPath(layout, entry.digest), "utf8")) as { config: { digest: string; size: number } };
  return { index, entry, manifest };
}

function putBlob(layout: string, data: string): { digest: string; size: number } {
  const hex = createHash("sha256").update(data).digest("hex");
  writeFileSync(`${layout}/blobs/sha256/${hex}`, data);
  return { digest: `sha256:${hex}`, size: Buffer.byteLength(data) };
}

/** Adds fields umoci has no flag for to the image config: new config blob, new manifest, index updated. */
function patchConfig(layout: string, tag: string, extra: Record<string, unknown>): void {
  const { index, entry, manifest } = manifestOf(layout, tag);
  const cfg = JSON.parse(readFileSync(blobPath(layout, manifest.config.digest), "utf8"));
  Object.assign(cfg.config, extra);
  manifest.config = { ...manifest.config, ...putBlob(layout, JSON.stringify(cfg)) };
  Object.assign(entry, putBlob(layout, JSON.stringify(manifest)));
  writeFileSync(`${layout}/index.json`, JSON.stringify(index));
}

function mmdebstrapArgs(rec: Recipe, target: string): string[] {
  const argv = [
    "mmdebstrap", "--quiet", "--mode=root", "--variant=essential", `--include=${rec.packages.join(",")}`,
    // what the official images leave out too; smaller layers pack and unpack faster
    "--dpkgopt=path-exclude=/usr/share/doc/*", "--dpkgopt=path-exclude=/usr/share/man/*",
    "--dpkgopt=path-exclude=/usr/share/info/*", "--dpkgopt=path-exclude=/usr/share/locale/*",
    "--aptopt=APT::Install-Recommends \"false\"",
  ];
  if (rec.essentialHook) argv.push(`--essential-hook=${rec.essentialHook}`);
  // mmdebstrap removes the downloaded packages and the apt lists itself
  argv.push(SUITE, target);
  return argv;
}

async function runAsync(argv: string[]): Promise<void> {
  const p = Bun.spawn(argv, { stdout: "pipe", stderr: "pipe", env: { ...process.env, DEBIAN_FRONTEND: "noninteractive" } });
  const [err, code] = await Promise.all([new Response(p.stderr).text(), p.exited, new Response(p.stdout).text()]);
  if (code !== 0) throw new Error(`${argv.join(" ").slice(0, 300)} → ${code}: ${err.slice(-3000)}`);
}

/** Builds one image into its own layout under dir (a fresh temporary directory). */
async function buildOne(rec: Recipe, dir: string, log: (m: string) => void): Promise<void> {
  const t0 = performance.now();
  const layout = `${dir}/layout`;
  const img = `${layout}:${rec.tag}`;
  run(["umoci", "init", "--layout", layout]);
  run(["umoci", "new", "--image", img]);
  const bundle = `${dir}/work`;
  run(["umoci", "unpack", "--image", img, bundle]);
  if (rec.packages.length > 0) {
    rmSync(`${bundle}/rootfs`, { recursive: true, force: true });
    await runAsync(mmdebstrapArgs(rec, `${bundle}/rootfs`));
  }
  const t1 = performance.now();
  rec.files(`${bundle}/rootfs`);
  await runAsync(["umoci", "repack", "--image", img, bundle]);
  rmSync(bundle, { recursive: true, force: true });
  run(["umoci", "config", "--image", img, ...rec.config]);
  if (rec.extra) patchConfig(layout, rec.tag, rec.extra);
  log(`${rec.tag}: rootfs ${((t1 - t0) / 1000).toFixed(1)} s, pack ${((performance.now() - t1) / 1000).toFixed(1)} s`);
}

/** How many layouts of one image the cache keeps (other checkouts on the machine may use older recipes). */
const KEEP_PER_TAG = 3;

/** Removes builds of tag killed half-way and all but the newest KEEP_PER_TAG complete layouts. */
function pruneTag(tag: string, keep: string): void {
  const layouts: { path: string; at: number }[] = [];
  for (const n of readdirSync(CACHE_ROOT)) {
    const path = `${CACHE_ROOT}/${n}`;
    if (n.startsWith(`.${tag}-tmp-`) && !existsSync(`/proc/${n.slice(n.lastIndexOf("-") + 1)}`)) rmSync(path, { recursive: true, force: true });
    else if (n.startsWith(`${tag}-`) && path !== keep) {
      const at = existsSync(`${path}/complete`) ? statSync(`${path}/complete`).mtimeMs : 0;
      layouts.push({ path, at });
    }
  }
  layouts.sort((a, b) => b.at - a.at);
  for (const l of layouts.slice(KEEP_PER_TAG - 1)) rmSync(l.path, { recursive: true, force: true });
}

export interface Built {
  images: Map<string, AppImage>;
  /** the tags this call built (the others came from the cache) */
  built: string[];
  seconds: number;
}

/**
 * The cached layouts for the current recipes (one per image, <cache>/<tag>-<key>/layout), built when
 * missing, the missing ones in parallel. Concurrent callers (other test files, other checkouts) serialise
 * on a lock file; a layout appears by rename, complete. A tag keeps its KEEP_PER_TAG newest layouts.
 */
export async function appImages(log: (m: string) => void = () => {}): Promise<Built> {
  const t0 = performance.now();
  const dirOf = (rec: Recipe) => `${CACHE_ROOT}/${rec.tag}-${recipeHash(rec)}`;
  const missing = () => RECIPES.filter((r) => !existsSync(`${dirOf(r)}/complete`));
  const built: string[] = [];
  if (missing().length > 0) {
    mkdirSync(CACHE_ROOT, { recursive: true });
    // the lock: flock(1) on a file, held while its stdin is open; a second builder waits, then finds the layouts
    const lock = Bun.spawn(["flock", `${CACHE_ROOT}/apps.lock`, "sh", "-c", "echo locked; read _"], { stdin: "pipe", stdout: "pipe" });
    await lock.stdout.getReader().read();
    try {
      await Promise.all(missing().map(async (rec) => {
        const final = dirOf(rec);
        const tmp = `${CACHE_ROOT}/.${rec.tag}-tmp-${process.pid}`;
        rmSync(tmp, { recursive: true, force: true });
        mkdirSync(tmp, { recursive: true });
        try {
          await buildOne(rec, tmp, log);
          writeFileSync(`${tmp}/complete`, `${new Date().toISOString()}\n`);
          rmSync(final, { recursive: true, force: true });
          renameSync(tmp, final);
        } finally {
          rmSync(tmp, { recursive: true, force: true });
        }
        built.push(rec.tag);
        pruneTag(rec.tag, final);
      }));
    } finally {
      lock.stdin.end();
      await lock.exited;
    }
  }
  const images = new Map<string, AppImage>();
  for (const rec of RECIPES) {
    const layout = `${dirOf(rec)}/layout`;
    images.set(rec.tag, { tag: rec.tag, layout, config: configBlob(layout, rec.tag) });
  }
  return { images, built, seconds: (performance.now() - t0) / 1000 };
}

if (import.meta.main) {
  const b = await appImages((m) => console.log(m));
  for (const i of b.images.values()) console.log(`${i.tag}: ${i.layout}${b.built.includes(i.tag) ? " (built)" : ""}`);
  console.log(`${b.built.length} built, ${b.images.size - b.built.length} cached, in ${b.seconds.toFixed(1)} s`);
}
