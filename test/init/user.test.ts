// MAN8S_APPLICATION_USER (issue 8 item 1): the app and its exec:/Healthcheck probes run as the image's
// User, resolved against the container's /etc/passwd and /etc/group, with its supplementary groups and
// HOME; an unknown name exits 67 naming the variable and the file, with nothing started. Real processes:
// the init as a subreaper (MAN8S_ETC_DIR points at a test rootfs's /etc) and in a real systemd-nspawn
// container with -U (PrivateUsers=pick), where `id` must print the image's ids.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import { EXIT, isExitError } from "../../common/log.ts";
import { resolveUser } from "../../common/user.ts";
import { busyboxRootfs, ensureBuilt, killLeftovers, runInit, WORK } from "./harness.ts";

const PASSWD = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:App:/home/app:/bin/sh\nsvc:x:998:998::/var/lib/svc:/bin/false\n";
const GROUP = "root:x:0:\napp:x:1000:\nwheel:x:10:root,app\nssl-cert:x:101:svc,app\nsvc:x:998:\nother:x:55:\n";

let etc = "";
beforeAll(async () => {
  await ensureBuilt();
  etc = `${WORK}/user-etc`;
  mkdirSync(etc, { recursive: true });
  writeFileSync(`${etc}/passwd`, PASSWD);
  writeFileSync(`${etc}/group`, GROUP);
}, 120_000);
afterAll(killLeftovers);

describe("resolution as Docker does it", () => {
  test("name, uid, name:group, uid:gid, unknown numeric ids", () => {
    expect(resolveUser("app", etc)).toMatchObject({ uid: 1000, gid: 1000, groups: [1000, 10, 101], home: "/home/app", name: "app" });
    expect(resolveUser("1000", etc)).toMatchObject({ uid: 1000, gid: 1000, groups: [1000, 10, 101], home: "/home/app" });
    expect(resolveUser("app:other", etc)).toMatchObject({ uid: 1000, gid: 55, groups: [55] });
    expect(resolveUser("svc:0", etc)).toMatchObject({ uid: 998, gid: 0, groups: [0], home: "/var/lib/svc" });
    expect(resolveUser("4242", etc)).toMatchObject({ uid: 4242, gid: 0, groups: [0], home: "/", name: null });
    expect(resolveUser("4242:4343", etc)).toMatchObject({ uid: 4242, gid: 4343, groups: [4343] });
  });

  test("an unknown name or group, or a broken spec, is exit 67 naming the variable and the file", () => {
    const code = (spec: string) => {
      try {
        resolveUser(spec, etc);
        return null;
      } catch (e) {
        return isExitError(e) ? [e.code, e.message] : ["not an ExitError", String(e)];
      }
    };
    expect(code("nosuch")).toEqual([EXIT.badUser, `MAN8S_APPLICATION_USER: user 'nosuch' not found in ${etc}/passwd; the app is not started`]);
    expect(code("app:nogroup")).toEqual([EXIT.badUser, `MAN8S_APPLICATION_USER: group 'nogroup' not found in ${etc}/group; the app is not started`]);
    expect(code(":1")?.[0]).toBe(67);
    expect(code("app:")?.[0]).toBe(67);
    expect(code("99999999999")?.[0]).toBe(67); // beyond uid_t: treated as a name, which is unknown
  });
});

describe("the init as a subreaper", () => {
  test("the app runs as the user with its groups and passwd's HOME; the image's own HOME wins", async () => {
    const [a, b] = await Promise.all([
      runInit("subreaper", () => ["sh", "-c", 'echo "ids $(id -u) $(id -g) $(id -G)"; echo "home $HOME"'], {
        envFile: "MAN8S_APPLICATION_USER=app\n", hostEnv: { MAN8S_ETC_DIR: etc, HOME: "/root" },
      }),
      runInit("subreaper", () => ["sh", "-c", 'echo "ids $(id -u) $(id -g) $(id -G)"; echo "home $HOME"'], {
        envFile: "MAN8S_APPLICATION_USER=svc:other\nHOME=/data\n", hostEnv: { MAN8S_ETC_DIR: etc },
      }),
    ]);
    expect((await a.exited).code).toBe(0);
    expect(a.stdout()).toContain("ids 1000 1000 1000 10 101\n");
    expect(a.stdout()).toContain("home /home/app\n");
    expect((await b.exited).code).toBe(0);
    expect(b.stdout()).toContain("ids 998 55 55\n");
    expect(b.stdout()).toContain("home /data\n");
  }, 30_000);

  test("an unknown user exits 67 with the variable and the file named, and nothing is started", async () => {
    const r = await runInit("subreaper", ({ dir }) => ["sh", "-c", `touch ${dir}/started`], {
      envFile: "MAN8S_APPLICATION_USER=postgres\n", hostEnv: { MAN8S_ETC_DIR: etc },
    });
    const e = await r.exited;
    expect(e.code).toBe(67);
    expect(r.stderr()).toContain(`MAN8S_APPLICATION_USER: user 'postgres' not found in ${etc}/passwd`);
    expect(existsSync(`${r.dir}/started`)).toBe(false);
    expect(r.status()?.exit?.code).toBe(67);
  }, 30_000);

  test("the Healthcheck and exec: probes run as the app's user", async () => {
    const ns = (ms: number) => ms * 1e6;
    const hc = { Test: ["CMD-SHELL", 'echo "hc $(id -u) $(id -G)"'], Interval: ns(200), Timeout: ns(5000), StartPeriod: 0, StartInterval: ns(200), Retries: 3 };
    const r = await runInit("subreaper", () => ["sh", "-c", "echo app up; exec sleep 30"], {
      // the wait passes only when its exec: probe runs as uid 1000 (else exit 75 after 5 s)
      envFile: `MAN8S_APPLICATION_USER=app\nMAN8S_HEALTHCHECK=${JSON.stringify(hc)}\nMAN8S_WAIT_FOR="exec:test $(id -u) = 1000"\nMAN8S_WAIT_TIMEOUT=5\n`,
      hostEnv: { MAN8S_ETC_DIR: etc },
    });
    await r.waitFor(/app up/);
    // the health log records the check's output
    const deadline = Date.now() + 10_000;
    let out = "";
    while (Date.now() < deadline && !out) {
      out = ((r.status()?.health as { log?: Array<{ output: string }> } | null)?.log ?? []).map((l) => l.output).join("");
      await Bun.sleep(50);
    }
    expect(out).toContain("hc 1000 1000 10 101");
    expect(r.stderr()).toMatch(/wait: exec:test .* up after/);
    await r.stop();
    expect((await r.exited).code).toBe(143);
  }, 30_000);
});

describe("the init in a real systemd-nspawn container with -U (PrivateUsers=pick)", () => {
  test("id prints the image's uid, gid and groups; HOME is passwd's", async () => {
    const rootfs = await busyboxRootfs("rootfs-m8p-user");
    writeFileSync(`${rootfs}/etc/passwd`, PASSWD);
    writeFileSync(`${rootfs}/etc/group`, GROUP);
    const r = await runInit("nspawn", () => ["sh", "-c", 'echo "ids $(id -u) $(id -g) $(id -G) $(id -un)"; echo "home $HOME"'], {
      rootfs, nspawnArgs: ["-U"], envFile: "MAN8S_APPLICATION_USER=app\n",
    });
    const e = await r.exited;
    expect([e.code, r.stdout()]).toEqual([0, expect.stringContaining("ids 1000 1000 1000 10 101 app\n")]);
    expect(r.stdout()).toContain("home /home/app\n");
  }, 60_000);
});
