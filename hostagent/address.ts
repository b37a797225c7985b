// The `address` command's math, delegated to common/net/addrmath.ts so host and container compute the same
// mbctl-compatible yggdrasil address (docs/notes.md §10).
import { addressForName, formatIPv6, parsePrefix6 } from "../common/net/addrmath.ts";
import { AgentError, ERR } from "./errors.ts";

/** The container's address in a yggdrasil /64 (host bits of the prefix are cleared, like mbctl). */
export function containerAddress(prefix: string, name: string): string {
  const p = parsePrefix6(prefix, 64);
  if (!p) throw new AgentError(ERR.BAD_ARGS, `'${prefix}' is not an IPv6 prefix`);
  if (p.len !== 64) throw new AgentError(ERR.BAD_ARGS, `yggdrasil subnets are /64, got /${p.len}`);
  return formatIPv6(addressForName(name, p));
}

/** mbctl's `address getsuffix`: the suffix inside ::/64. */
export function suffixText(name: string): string {
  return formatIPv6(addressForName(name, { network: new Uint8Array(16), len: 64 }));
}

/** The /64 network of a prefix in text form, e.g. 300:2e98:a4b0:1789::/64. */
export function prefixText(prefix: string): string {
  const p = parsePrefix6(prefix, 64);
  if (!p || p.len !== 64) throw new AgentError(ERR.BAD_ARGS, `'${prefix}' is not an IPv6 /64 prefix`);
  return `${formatIPv6(p.network)}/64`;
}
