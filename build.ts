#!/usr/bin/env bun
// Builds dist/man8s (the single binary) and dist/man8s-init/ (the bundle injected into containers):
//   man8s        the binary, interpreter and rpath patched to /man8s-init/lib
//   init         static launcher (init/launcher.c) that blocks signals until the init can handle them
//   00-init.sh   -> init, so .nspawn files written by mbctl 0.4.x keep working
//   lib/         the glibc loader and the libraries the binary needs
import { $ } from "zx";
import { cpSync, existsSync, mkdirSync, mkdtempSync, rmSync, statSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { LAZY } from "./lazy.ts";

/** The flags of every binary we compile (why each: docs/notes.md §1); the bench's empty baseline uses them too. */
export const COMPILE_FLAGS = ["--compile", "--minify", "--bytecode", "--format=esm", "--no-compile-autoload-dotenv", "--no-compile-autoload-bunfig"];

/**
 * Compile `entries` into `outfile`, run it once as `profileArgs` with BUN_BYTECODE_ORDER_OUT to record which
 * functions that start uses, and compile again with --bytecode-order: those functions' bytecode then lies
 * together at the front of the binary (measured: exec -> app 0.1-0.15 ms faster warm, ~4 ms cold, 0.5 MB
 * smaller, the same memory; docs/bench.md). A profile from the same sources never goes stale.
 */
export async function compile(entries: string[], outfile: string, profileArgs: string[]): Promise<void> {
  $.verbose = false;
  await $`${process.execPath} build ${COMPILE_FLAGS} ${entries} --outfile ${outfile}`;
  const scratch = mkdtempSync(`${tmpdir()}/man8s-build-`);
  try {
    const order = `${scratch}/bytecode-order`;
    // the init's start with nothing to configure: no env file, the status record in the scratch directory
    const env = { PATH: "/usr/bin:/bin", MAN8S_ENV_FILE: `${scratch}/none.env`, MAN8S_STATUS_FILE: `${scratch}/status.json`, MAN8S_REPORT_SOCKET: `${scratch}/none.sock`, BUN_BYTECODE_ORDER_OUT: order };
    const run = Bun.spawnSync([outfile, ...profileArgs], { env, stdout: "ignore", stderr: "pipe" });
    if (run.exitCode !== 0 || !existsSync(order) || statSync(order).size === 0) {
      throw new Error(`build: the start-up profile run of ${outfile} failed (exit ${run.exitCode}): ${run.stderr.toString().trim()}`);
    }
    await $`${process.execPath} build ${COMPILE_FLAGS} --bytecode-order=${order} ${entries} --outfile ${outfile}`;
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
}

if (import.meta.main) await build();

async function build(): Promise<void> {
  const root = import.meta.dir;
  const dist = `${root}/dist`;
  const bundle = `${dist}/man8s-init`;
  const BUNDLE_PATH = "/man8s-init";
  const t0 = performance.now();

  mkdirSync(dist, { recursive: true });
  rmSync(bundle, { recursive: true, force: true });
  mkdirSync(`${bundle}/lib`, { recursive: true });
  // the launcher first: the profile run below starts an app through it (dist/man8s-init/init)
  const cc = (await $`command -v musl-gcc`.nothrow()).exitCode === 0 ? "musl-gcc" : "gcc";
  await $`${cc} -static -Os -s -Wall -Werror -o ${bundle}/init ${root}/init/launcher.c`;
  symlinkSync("init", `${bundle}/00-init.sh`);
  // lazy modules are extra entry points, loaded only by the role that needs them (see lazy.ts); the profile
  // is the init's own start
  const entries = [`${root}/main.ts`, ...Object.values(LAZY).map((m) => `${root}/${m}`)];
  await compile(entries, `${dist}/man8s`, ["init", "--", "/bin/true"]);

  // libraries: what ldd lists, plus libgcc_s which glibc dlopens for unwinding (pthread_cancel, exit)
  const ldd = (await $`ldd ${dist}/man8s`).stdout;
  const libs = new Set<string>();
  for (const m of ldd.matchAll(/(\/\S+\.so[.\d]*)/g)) libs.add(m[1]!);
  for (const extra of ["libgcc_s.so.1"]) {
    const p = (await $`ldconfig -p`).stdout.match(new RegExp(`${extra.replace(/\./g, "\\.")} \\(libc6,x86-64\\) => (\\S+)`));
    if (p) libs.add(p[1]!);
  }
  let loader = "";
  for (const lib of libs) {
    const name = lib.split("/").pop()!;
    cpSync(lib, `${bundle}/lib/${name}`, { dereference: true });
    if (name.startsWith("ld-linux")) loader = name;
  }
  if (!loader) throw new Error("build: no ELF loader found in ldd output");
  // libdl/libpthread are stubs in glibc >= 2.34 but Bun's dlopen of them must still resolve
  for (const stub of ["libdl.so.2", "libpthread.so.0", "libm.so.6"]) {
    if (!existsSync(`${bundle}/lib/${stub}`)) {
      const p = (await $`ldconfig -p`).stdout.match(new RegExp(`${stub.replace(/\./g, "\\.")} \\(libc6,x86-64\\) => (\\S+)`));
      if (p) cpSync(p[1]!, `${bundle}/lib/${stub}`, { dereference: true });
    }
  }

  cpSync(`${dist}/man8s`, `${bundle}/man8s`);
  await $`patchelf --set-interpreter ${BUNDLE_PATH}/lib/${loader} --set-rpath ${BUNDLE_PATH}/lib ${bundle}/man8s`;

  // a static shell for `man8s machines shell` into images without /bin/sh (Debian's busybox-static); it is
  // bound read-only with the bundle, never copied into the image in bind mode
  if (existsSync("/bin/busybox")) cpSync("/bin/busybox", `${bundle}/busybox`, { dereference: true });

  const size = (await $`du -sh ${bundle}`).stdout.split("\t")[0];
  console.log(`built dist/man8s and dist/man8s-init/ (${size}, ${cc}) in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
}
