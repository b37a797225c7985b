// The yggdrasil settings of the env file (MAN8S_YGGDRASIL_ADDRESS, _PREFIX, _GATEWAY), parsed here for the
// init's network phase (netctl/yggdrasil.ts) and for the agent's validate-env.ts. Not on the init's start-up
// path: the address math (common/net/addrmath.ts, with ip-num) is loaded with the network module only.
import { addressForName, formatIPv6, inPrefix6, parseIPv6, parsePrefix6, type Prefix6 } from "./net/addrmath.ts";
import { clip, SettingError } from "./settings.ts";

export const YGG_SPACE: Prefix6 = { network: parseIPv6("200::")!, len: 7 };

const bad = (key: string, msg: string) => new SettingError(key, msg);

export interface YggConfig {
  address: Uint8Array;
  subnet: Prefix6;
  gateway: Uint8Array;
}

/** From MAN8S_YGGDRASIL_ADDRESS, or MAN8S_CONTAINER_NAME + MAN8S_YGGDRASIL_PREFIX; undefined when neither is set. */
export function yggConfigFromEnv(env: Record<string, string | undefined>): YggConfig | undefined {
  const addrText = env.MAN8S_YGGDRASIL_ADDRESS?.trim();
  const prefixText = env.MAN8S_YGGDRASIL_PREFIX?.trim();
  const name = env.MAN8S_CONTAINER_NAME;
  let prefix: Prefix6 | undefined;
  if (prefixText) {
    const p = parsePrefix6(prefixText, 64);
    if (!p) throw bad("MAN8S_YGGDRASIL_PREFIX", `MAN8S_YGGDRASIL_PREFIX: '${clip(prefixText)}' is not an IPv6 prefix (expected e.g. 300:2e98:a4b0:1789::/64)`);
    if (p.len !== 64) throw bad("MAN8S_YGGDRASIL_PREFIX", `MAN8S_YGGDRASIL_PREFIX: '${clip(prefixText)}' must be a /64 (yggdrasil subnets are /64)`);
    if (!inPrefix6(p.network, YGG_SPACE)) throw bad("MAN8S_YGGDRASIL_PREFIX", `MAN8S_YGGDRASIL_PREFIX: '${clip(prefixText)}' is outside 200::/7, not a yggdrasil subnet`);
    prefix = p;
  }
  let address: Uint8Array | undefined;
  if (addrText) {
    const bare = addrText.replace(/\/64$/, "");
    address = parseIPv6(bare) ?? undefined;
    if (!address) throw bad("MAN8S_YGGDRASIL_ADDRESS", `MAN8S_YGGDRASIL_ADDRESS: '${clip(addrText)}' is not an IPv6 address`);
    if (!inPrefix6(address, YGG_SPACE)) throw bad("MAN8S_YGGDRASIL_ADDRESS", `MAN8S_YGGDRASIL_ADDRESS: '${clip(addrText)}' is outside 200::/7, not a yggdrasil address`);
    if (prefix && !inPrefix6(address, prefix)) throw bad("MAN8S_YGGDRASIL_ADDRESS", `MAN8S_YGGDRASIL_ADDRESS: '${clip(addrText)}' is not inside MAN8S_YGGDRASIL_PREFIX ${clip(prefixText ?? "")}`);
  } else if (prefix) {
    if (name === undefined || name === "") throw bad("MAN8S_CONTAINER_NAME", "MAN8S_YGGDRASIL_PREFIX is set but MAN8S_CONTAINER_NAME is empty: cannot compute the yggdrasil address");
    address = addressForName(name, prefix);
  }
  if (!address) return undefined;
  const subnet = parsePrefix6(`${formatIPv6(address)}/64`)!;
  let gateway: Uint8Array = new Uint8Array(subnet.network);
  gateway[15] = 1;
  const gwText = env.MAN8S_YGGDRASIL_GATEWAY?.trim();
  if (gwText) {
    const g = parseIPv6(gwText);
    if (!g) throw bad("MAN8S_YGGDRASIL_GATEWAY", `MAN8S_YGGDRASIL_GATEWAY: '${clip(gwText)}' is not an IPv6 address`);
    gateway = g;
  }
  return { address, subnet, gateway };
}
