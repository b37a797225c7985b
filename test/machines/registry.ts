// A real registry for the machine tests: Debian's docker-registry (the CNCF distribution registry) on a
// loopback port with a temporary config (plain HTTP), its access log kept to count blob fetches; images
// built with umoci from Debian's busybox and pushed with skopeo; and a throttling TCP proxy in front of
// it, so a pull can be interrupted half-way. Everything started is tracked by pid and ended by pid.
import type { Socket, Subprocess, TCPSocketListener } from "bun";
import { chmodSync, mkdirSync, rmSync, writeFileSync } from "node:fs";
import { scratchDir } from "../scratch.ts";
import { dirname } from "node:path";
import { randomBytes } from "node:crypto";

export function run(argv: string[]): string {
  const r = Bun.spawnSync(argv, { stdout: "pipe", stderr: "pipe" });
  if (r.exitCode !== 0) throw new Error(`${argv.join(" ")}: ${r.stderr.toString()}`);
  return r.stdout.toString();
}

async function freePort(): Promise<number> {
  const l = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
  const p = l.port;
  l.stop(true);
  return p;
}

export class Registry {
  proc!: Subprocess;
  port = 0;
  private log = "";
  private pump!: Promise<void>;
  constructor(
    readonly dir: string,
    /** a network namespace to run in (the registry, and the test's skopeo calls) */
    readonly ns?: string,
  ) {}

  private wrap(argv: string[]): string[] {
    return this.ns ? ["nsenter", `--net=/run/netns/${this.ns}`, "--", ...argv] : argv;
  }

  secure = false;

  private async answers(): Promise<boolean> {
    if (!this.ns) {
      try {
        const res = await fetch(`${this.secure ? "https" : "http"}://127.0.0.1:${this.port}/v2/`, { tls: { rejectUnauthorized: false } });
        return res.ok || res.status === 401;
      } catch {
        return false;
      }
    }
    return Bun.spawnSync(this.wrap(["busybox", "wget", "-q", "-O", "/dev/null", `http://127.0.0.1:${this.port}/v2/`])).exitCode === 0;
  }

  /** tls: serve HTTPS with this certificate; htpasswd: require basic auth from that file */
  static async start(dir: string, ns?: string, secure?: { cert: string; key: string; htpasswd: string }): Promise<Registry> {
    const r = new Registry(dir, ns);
    r.secure = secure !== undefined;
    r.port = ns ? 5000 : await freePort(); // a fresh namespace has every port free
    const cfg = `${dir}/registry.yml`;
    writeFileSync(cfg, `version: 0.1
log:
  level: error
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: ${dir}/storage
http:
  addr: 127.0.0.1:${r.port}
${secure ? `  tls:
    certificate: ${secure.cert}
    key: ${secure.key}
auth:
  htpasswd:
    realm: m8m
    path: ${secure.htpasswd}
` : ""}`);
    r.proc = Bun.spawn(r.wrap(["docker-registry", "serve", cfg]), { stdin: "ignore", stdout: "pipe", stderr: "pipe" });
    const dec = new TextDecoder();
    const pump = async (s: ReadableStream<Uint8Array>) => {
      for await (const c of s) r.log += dec.decode(c, { stream: true });
    };
    r.pump = Promise.all([pump(r.proc.stdout as ReadableStream<Uint8Array>), pump(r.proc.stderr as ReadableStream<Uint8Array>)]).then(() => {});
    const t0 = Date.now();
    for (;;) {
      if (await r.answers()) break;
      if (r.proc.exitCode !== null || Date.now() - t0 > 10_000) throw new Error(`docker-registry did not start: ${r.log}`);
      await Bun.sleep(20);
    }
    return r;
  }

  get host(): string {
    return `127.0.0.1:${this.port}`;
  }

  /** completed GETs of blob DIGEST (hex) with status 200, from the access log */
  blobGets(hex?: string): string[] {
    const re = /"GET \/v2\/[^ ]+\/blobs\/sha256:([0-9a-f]{64}) HTTP\/[0-9.]+" 200 /g;
    const out: string[] = [];
    for (const m of this.log.matchAll(re)) if (!hex || m[1] === hex) out.push(m[1]!);
    return out;
  }

  push(layout: string, tag: string, repo: string): void {
    run(this.wrap(["skopeo", "copy", "--dest-tls-verify=false", `oci:${layout}:${tag}`, `docker://${this.host}/${repo}`]));
  }

  /** the manifest digest the registry serves for repo:tag */
  digest(repo: string): string {
    return run(this.wrap(["skopeo", "inspect", "--tls-verify=false", "--format", "{{.Digest}}", `docker://${this.host}/${repo}`])).trim();
  }

  async stop(): Promise<void> {
    if (this.proc.exitCode === null) this.proc.kill("SIGTERM");
    await this.proc.exited;
    await this.pump;
  }
}

/**
 * A TCP proxy to the registry that passes at most `rate` bytes per second from the registry to each client:
 * a slow registry, so a pull can be interrupted while a large blob is on its way.
 */
export class SlowProxy {
  private listener!: TCPSocketListener<{ up?: Socket<unknown>; early: Uint8Array[]; upClosed?: boolean; queue: Uint8Array[]; timer?: ReturnType<typeof setInterval> }>;
  port = 0;
  constructor(
    readonly target: number,
    readonly rate: number,
  ) {}

  async start(): Promise<this> {
    const tick = 50;
    const perTick = Math.max(1, Math.floor((this.rate * tick) / 1000));
    this.listener = Bun.listen({
      hostname: "127.0.0.1",
      port: 0,
      socket: {
        open: async (down) => {
          down.data = { queue: [], early: [] };
          const st = down.data;
          st.up = await Bun.connect({
            hostname: "127.0.0.1",
            port: this.target,
            socket: {
              data: (_u, chunk) => void st.queue.push(new Uint8Array(chunk)),
              // the client still gets what is queued, at the proxy's pace
              close: () => void (st.upClosed = true),
              error: () => void (st.upClosed = true),
            },
          });
          // what the client sent before the upstream connection was up
          for (const c of st.early.splice(0)) st.up.write(c);
          st.timer = setInterval(() => {
            let budget = perTick;
            while (budget > 0 && st.queue.length > 0) {
              const head = st.queue[0]!;
              const part = head.subarray(0, budget);
              const n = down.write(part);
              budget -= Math.max(n, 0);
              if (n < head.length) {
                st.queue[0] = head.subarray(Math.max(n, 0));
                if (n < part.length) break;
              } else st.queue.shift();
            }
            if (st.upClosed && st.queue.length === 0) {
              clearInterval(st.timer);
              down.end();
            }
          }, tick);
        },
        data: (down, chunk) => {
          if (down.data.up) down.data.up.write(chunk);
          else down.data.early.push(new Uint8Array(chunk));
        },
        close: (down) => {
          clearInterval(down.data.timer);
          down.data.up?.end();
        },
        error: (down) => {
          clearInterval(down.data.timer);
          down.data.up?.end();
        },
      },
    });
    this.port = this.listener.port;
    return this;
  }

  get host(): string {
    return `127.0.0.1:${this.port}`;
  }

  stop(): void {
    this.listener.stop(true);
  }
}

export interface Images {
  layout: string;
  /** hex digests of the layers, by role */
  baseLayer: string;
  appLayer: string;
  app2Layer: string;
  bigLayer: string;
}

function put(r: string, path: string, text: string | Uint8Array, mode = 0o644): void {
  mkdirSync(dirname(r + path), { recursive: true });
  writeFileSync(r + path, text);
  chmodSync(r + path, mode);
}

function layersOf(layout: string, tag: string): string[] {
  const idx = JSON.parse(run(["cat", `${layout}/index.json`])) as { manifests: { digest: string; annotations?: Record<string, string> }[] };
  const m = idx.manifests.find((x) => x.annotations?.["org.opencontainers.image.ref.name"] === tag)!;
  const man = JSON.parse(run(["cat", `${layout}/blobs/sha256/${m.digest.slice(7)}`])) as { layers: { digest: string }[] };
  return man.layers.map((l) => l.digest.slice(7));
}

/**
 * Three images sharing one base layer (Debian's busybox-static with its applets):
 *   app   + a layer with /srv/index.html; CMD busybox httpd on 8080 (the app that must answer)
 *   app2  + another small layer (shares the base with app)
 *   big   + a layer of incompressible data (slow through the proxy: the pull to interrupt)
 */
export function buildImages(dir: string, bigBytes = 8 * 1024 * 1024): Images {
  const layout = `${dir}/layout`;
  run(["umoci", "init", "--layout", layout]);
  run(["umoci", "new", "--image", `${layout}:base`]);
  const b = `${dir}/b-base`;
  run(["umoci", "unpack", "--image", `${layout}:base`, b]);
  const r = `${b}/rootfs`;
  mkdirSync(`${r}/bin`, { recursive: true });
  Bun.spawnSync(["cp", "/bin/busybox", `${r}/bin/busybox`]);
  for (const a of ["sh", "sleep", "cat", "echo", "httpd", "wget", "ls", "id", "kill"]) Bun.spawnSync(["ln", "-s", "busybox", `${r}/bin/${a}`]);
  put(r, "/etc/passwd", "root:x:0:0:root:/root:/bin/sh\nwww:x:33:33:www:/srv:/bin/sh\n");
  put(r, "/etc/group", "root:x:0:\nwww:x:33:\nm8mlogs:x:4242:www\nm8mweb:x:4243:root,www\n");
  put(r, "/usr/lib/os-release", "ID=m8m-test\nNAME=m8m\n"); // nspawn --boot wants an OS tree
  run(["umoci", "repack", "--image", `${layout}:base`, b]);
  rmSync(b, { recursive: true, force: true });
  const derive = (tag: string, files: (r: string) => void, cfg: string[]) => {
    const d = `${dir}/b-${tag}`;
    run(["umoci", "unpack", "--image", `${layout}:base`, d]);
    files(`${d}/rootfs`);
    run(["umoci", "repack", "--image", `${layout}:${tag}`, d]);
    rmSync(d, { recursive: true, force: true });
    if (cfg.length) run(["umoci", "config", "--image", `${layout}:${tag}`, ...cfg]);
  };
  const httpd = ["--config.cmd=/bin/busybox", "--config.cmd=httpd", "--config.cmd=-f", "--config.cmd=-p", "--config.cmd=8080", "--config.cmd=-h", "--config.cmd=/srv", "--config.exposedports=8080/tcp"];
  derive("app", (r) => put(r, "/srv/index.html", "hello from m8m app v1\n"), [...httpd, "--config.user=www", "--config.workingdir=/srv"]);
  derive("app2", (r) => put(r, "/srv/index.html", "hello from m8m app2\n"), httpd);
  // never becomes ready: it runs, but nothing ever listens on its exposed port (renew must roll back)
  derive("broken", (r) => put(r, "/srv/index.html", "broken\n"), ["--config.cmd=/bin/sleep", "--config.cmd=1000", "--config.exposedports=8080/tcp", "--config.user=www"]);
  derive("big", (r) => put(r, "/srv/big.bin", randomBytes(bigBytes)), ["--config.cmd=/bin/sleep", "--config.cmd=1000"]);
  // distroless: no shell, no busybox; a static pause process (Debian's catatonit -P) is the app
  run(["umoci", "new", "--image", `${layout}:distroless`]);
  const dl = `${dir}/b-distroless`;
  run(["umoci", "unpack", "--image", `${layout}:distroless`, dl]);
  mkdirSync(`${dl}/rootfs/usr/bin`, { recursive: true });
  Bun.spawnSync(["cp", "/usr/bin/catatonit", `${dl}/rootfs/usr/bin/catatonit`]);
  put(`${dl}/rootfs`, "/usr/lib/os-release", "ID=m8m-distroless\n");
  run(["umoci", "repack", "--image", `${layout}:distroless`, dl]);
  rmSync(dl, { recursive: true, force: true });
  run(["umoci", "config", "--image", `${layout}:distroless`, "--config.cmd=/usr/bin/catatonit", "--config.cmd=-P"]);
  const base = layersOf(layout, "base")[0]!;
  const top = (t: string) => layersOf(layout, t).at(-1)!;
  return { layout, baseLayer: base, appLayer: top("app"), app2Layer: top("app2"), bigLayer: top("big") };
}

export function tmpDir(tag: string): string {
  return scratchDir(`m8m-${tag}`);
}

/** A test CA, a server certificate for 127.0.0.1 signed by it, an htpasswd file (bcrypt), a cert dir. */
export async function makeSecure(dir: string, user: string, password: string) {
  const d = `${dir}/tls`;
  mkdirSync(`${d}/certs`, { recursive: true });
  run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=m8m test CA", "-keyout", `${d}/ca.key`, "-out", `${d}/ca.crt`]);
  run(["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", `${d}/server.key`, "-out", `${d}/server.csr`]);
  writeFileSync(`${d}/ext.cnf`, "subjectAltName=IP:127.0.0.1\n");
  run(["openssl", "x509", "-req", "-in", `${d}/server.csr`, "-CA", `${d}/ca.crt`, "-CAkey", `${d}/ca.key`, "-CAcreateserial", "-days", "2", "-extfile", `${d}/ext.cnf`, "-out", `${d}/server.crt`]);
  // containers/image: *.crt in a cert dir are CAs
  Bun.spawnSync(["cp", `${d}/ca.crt`, `${d}/certs/ca.crt`]);
  writeFileSync(`${d}/htpasswd`, `${user}:${await Bun.password.hash(password, { algorithm: "bcrypt", cost: 5 })}\n`);
  return { cert: `${d}/server.crt`, key: `${d}/server.key`, htpasswd: `${d}/htpasswd`, certDir: `${d}/certs` };
}

/** containers-auth.json for one registry */
export function authFile(path: string, host: string, user: string, password: string): string {
  writeFileSync(path, JSON.stringify({ auths: { [host]: { auth: Buffer.from(`${user}:${password}`).toString("base64") } } }));
  return path;
}
