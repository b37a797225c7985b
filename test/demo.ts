// `npm run demo`, in two parts:
// 1. the init's life cycle: boots a real systemd-nspawn container (busybox-static rootfs, the man8s bundle
//    bind-mounted read-only at /man8s-init as mbctl's .nspawn would do), lets the init bring the app up,
//    stops the container the way systemd does (SIGRTMIN+3 to its PID 1) and prints the status record;
// 2. the network: the full lab (bridge, dnsmasq with DHCPv4 + RA + DNS, two real yggdrasil nodes) and a
//    container whose init brings the network up: addresses, routes, table 199, lease, timings, reachability.
import { $ } from "zx";
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { busyboxRootfs, BUNDLE, childrenOf, ensureBuilt } from "./init/harness.ts";
import { runNetDemo } from "./netctl/demo.ts";

$.verbose = false;
const say = (s: string) => console.log(`\x1b[1m== ${s}\x1b[0m`);

await ensureBuilt();
const dir = mkdtempSync(`${tmpdir()}/m8s-demo-`);
const rootfs = await busyboxRootfs("demo-rootfs");
writeFileSync(
  `${rootfs}/app.sh`,
  `#!/bin/sh
echo "app: started as pid $$, MAN8S_CONTAINER_NAME=$MAN8S_CONTAINER_NAME"
trap 'echo "app: got SIGTERM, saving state"; sleep 0.2; echo "app: bye"; exit 0' TERM
sleep 1000 & echo "app: a background worker (pid $!) that the init will drain"
while :; do sleep 0.1; done
`,
);
chmodSync(`${rootfs}/app.sh`, 0o755);
mkdirSync(`${dir}/run-man8s`);
writeFileSync(
  `${dir}/man8env.env`,
  [
    "MAN8S_CONTAINER_NAME=demo",
    "MAN8S_APPLICATION_ARGV=[\"/app.sh\"]",
    "MAN8S_STOP_TIMEOUT=5",
    "MAN8S_NETWORK=none",
    "",
  ].join("\n"),
);

say("starting: systemd-nspawn --as-pid2 --kill-signal=SIGRTMIN+3 ... /man8s-init/init");
const nspawn = Bun.spawn(
  [
    "systemd-nspawn", "--register=no", "--keep-unit", "-q", "-M", "m8sdemo", "-D", rootfs, "--as-pid2",
    "--kill-signal=SIGRTMIN+3", "--console=pipe", "--resolv-conf=off", "--timezone=off", "--link-journal=no",
    `--bind-ro=${BUNDLE}:/man8s-init`, `--bind-ro=${dir}/man8env.env:/man8env.env`, `--bind=${dir}/run-man8s:/run/man8s`,
    "/man8s-init/init",
  ],
  { stdin: "ignore", stdout: "inherit", stderr: "inherit", env: { ...process.env, SYSTEMD_NSPAWN_LOCK: "0" } },
);
try {
  await Bun.sleep(1500);
  const stub = childrenOf(nspawn.pid)[0];
  if (!stub) throw new Error("the container did not start");
  say(`running; status record phase: ${JSON.parse(readFileSync(`${dir}/run-man8s/status.json`, "utf8")).phase}`);
  say(`stopping: SIGRTMIN+3 to the container's PID 1 (host pid ${stub}), as machinectl/systemd do`);
  process.kill(stub, 37);
  const code = await nspawn.exited;
  say(`nspawn exited with ${code} (after a stub-driven stop nspawn always reports 0: the record below is the truth)`);
  say(`/run/man8s/status.json`);
  console.log(readFileSync(`${dir}/run-man8s/status.json`, "utf8"));
} finally {
  if (nspawn.exitCode === null) nspawn.kill("SIGKILL");
  rmSync(dir, { recursive: true, force: true });
}

say("part 2: the network lab (bridge, dnsmasq, two yggdrasil nodes) and a container under the init");
await runNetDemo();
