// Entry point of the single man8s binary: picks the role from the first argument or the name it was
// started as. Roles are imported lazily so the init's start-up loads only the init.
import { basename } from "node:path";
import { VERSION } from "./common/version.ts";
import { installSignalIntake } from "./init/signals.ts";
import { load } from "./lazy.ts";

const INIT_NAMES = new Set(["init", "man8s-init", "00-init.sh"]);

const HELP = `man8s ${VERSION}: init and networking agent of Man8S

usage:
  man8s init [-- CMD ARGS...]   run as a container's init (also when started as init, man8s-init, 00-init.sh)
  man8s netctl COMMAND ...      networking: up, status, check, probe, address
  man8s hostagent serve         the host daemon on a unix socket
  man8s agent COMMAND ...       a client of the host daemon
  man8s machines COMMAND ...    pull, list, remove machines (mbctl's commands; through the host daemon)
  man8s oci download|man8init   pull and unpack an image only | install the init into a rootfs
  man8s cache prune             remove image blobs no machine uses
  man8s address getsuffix NAME  a machine's yggdrasil address suffix (mbctl's output)
  man8s host setup | check      prepare (networkd bridge, forwarding, the agent's units) or diagnose a host
  man8s --version | help        this text; every command takes --help
`;

/** Signal intake comes first, before the init module even loads: nothing may arrive unhandled. */
async function startInit(args: string[]): Promise<number> {
  try {
    installSignalIntake();
  } catch (e) {
    // an init that a stop signal could kill would orphan the app: refuse to start instead
    process.stderr.write(`man8s-init: ${(e as Error).message}; not starting\n`);
    return 70;
  }
  // an init must outlive its own mistakes: log them, keep supervising (the container would die with us)
  process.on("uncaughtException", (e) => process.stderr.write(`man8s-init: internal error (continuing): ${e.stack ?? e}\n`));
  process.on("unhandledRejection", (e) => process.stderr.write(`man8s-init: internal error (continuing): ${(e as Error)?.stack ?? e}\n`));
  return (await import("./init/main.ts")).runInit(args);
}

async function main(): Promise<number> {
  const args = process.argv.slice(2);
  if (INIT_NAMES.has(basename(process.argv0))) return startInit(args);
  const [role, ...rest] = args;
  switch (role) {
    case "init":
      return startInit(rest);
    case "netctl":
      return (await load("netctl")).runNetctl(rest);
    case "hostagent":
      return (await load("hostagent")).runHostagent(rest);
    case "agent":
      return (await load("agent")).runAgent(rest);
    case "machines":
    case "oci":
    case "cache":
    case "address":
      return (await load("machines")).runMachines(role, rest);
    case "host":
      return (await load("host")).runHost(rest);
    case "--version":
    case "version":
      process.stdout.write(`man8s ${VERSION}\n`);
      return 0;
    case "help":
    case "--help":
    case "-h":
      process.stdout.write(HELP);
      return 0;
    default:
      return (await load("cli")).usageExit("", role === undefined ? "no command" : `unknown command '${role}'`);
  }
}

process.exit(await main());
