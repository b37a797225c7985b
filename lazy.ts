// Modules loaded on demand. build.ts embeds each as its own entry point of the binary, and the path is
// computed at run time so the bundler cannot inline it: the init's start-up then never loads, or even
// deserializes, the code of the other roles. (Measured: 12 ms → 5 ms to the init's first statement.)
// Each lazy module has its own copy of common/: pass errors across by shape (isExitError), not class.
//
// Roles (init/, netctl/, hostagent/) never import each other (test/boundaries.test.ts). main.ts loads each
// role's CLI; the leaves (probes/, common/) are shared by import, some of them lazily (probes, notify, cli:
// off the init's start-up path, not edges between roles). The only edges between roles are these load()
// calls at run time, listed in RUNTIME_EDGES (the test refuses any other):
//   init -> network (netctl/bringup.ts)       the init brings the container's network up in its own process:
//                                             one binary, no second exec, and netctl's exit code and log are
//                                             the init's (a failed network phase ends the container)
// The init's client of its report socket (common/report-client.ts, lazily: off the start-up path) shares the
// agent's frames (common/frame.ts) and record schema (common/report.ts) without loading the agent.
export const LAZY = {
  netctl: "netctl/cli.ts",
  hostagent: "hostagent/cli.ts",
  agent: "hostagent/client-cli.ts",
  machines: "hostagent/machines-cli.ts",
  host: "hostagent/host/cli.ts",
  network: "netctl/bringup.ts",
  probes: "probes/index.ts",
  notify: "common/sd-notify.ts",
  report: "common/report-client.ts",
  cli: "common/cli.ts",
} as const;

/** Lazy modules a role loads from another role, by the loading role (see above). */
export const RUNTIME_EDGES: Partial<Record<"init" | "netctl" | "hostagent", readonly (keyof typeof LAZY)[]>> = {
  init: ["network"],
};

interface Modules {
  netctl: typeof import("./netctl/cli.ts");
  hostagent: typeof import("./hostagent/cli.ts");
  agent: typeof import("./hostagent/client-cli.ts");
  machines: typeof import("./hostagent/machines-cli.ts");
  host: typeof import("./hostagent/host/cli.ts");
  network: typeof import("./netctl/bringup.ts");
  probes: typeof import("./probes/index.ts");
  notify: typeof import("./common/sd-notify.ts");
  report: typeof import("./common/report-client.ts");
  /** the argument parser: node:util alone costs the init's start-up ~1 ms, so only bad usage loads it */
  cli: typeof import("./common/cli.ts");
}

/** import.meta.dir is the project root here, and /$bunfs/root inside the compiled binary. */
export function load<K extends keyof typeof LAZY>(name: K): Promise<Modules[K]> {
  return import(`${import.meta.dir}/${LAZY[name]}`) as Promise<Modules[K]>;
}
