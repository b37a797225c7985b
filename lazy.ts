// Modules loaded on demand. build.ts embeds each as its own entry point of the binary, and the path is
// computed at run time so the bundler cannot inline it: the init's start-up then never loads, or even
// deserializes, the code of the other roles. (Measured: 12 ms → 5 ms to the init's first statement.)
// Each lazy module has its own copy of common/: pass errors across by shape (isExitError), not class.
export const LAZY = {
  netctl: "netctl/cli.ts",
  hostagent: "hostagent/cli.ts",
  agent: "hostagent/client-cli.ts",
  machines: "hostagent/machines-cli.ts",
  host: "hostagent/host/cli.ts",
  network: "netctl/bringup.ts",
  probes: "init/probes/index.ts",
  notify: "init/probes/notify.ts",
  report: "hostagent/report-client.ts",
  cli: "common/cli.ts",
} as const;

interface Modules {
  netctl: typeof import("./netctl/cli.ts");
  hostagent: typeof import("./hostagent/cli.ts");
  agent: typeof import("./hostagent/client-cli.ts");
  machines: typeof import("./hostagent/machines-cli.ts");
  host: typeof import("./hostagent/host/cli.ts");
  network: typeof import("./netctl/bringup.ts");
  probes: typeof import("./init/probes/index.ts");
  notify: typeof import("./init/probes/notify.ts");
  report: typeof import("./hostagent/report-client.ts");
  /** the argument parser: node:util alone costs the init's start-up ~1 ms, so only bad usage loads it */
  cli: typeof import("./common/cli.ts");
}

/** import.meta.dir is the project root here, and /$bunfs/root inside the compiled binary. */
export function load<K extends keyof typeof LAZY>(name: K): Promise<Modules[K]> {
  return import(`${import.meta.dir}/${LAZY[name]}`) as Promise<Modules[K]>;
}
