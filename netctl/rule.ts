// Policy rules over rtnetlink. struct fib_rule_hdr (<linux/fib_rules.h>), 12 bytes:
// u8 family, dst_len, src_len, tos, table, res1, res2, action; u32 flags.
import { AF_INET6 } from "../common/libc-net.ts";
import { formatIP } from "../common/net/addrmath.ts";
import { Attrs, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, parseAttrs, type NlMsg, type Rtnl, RTM_DELRULE, RTM_GETRULE, RTM_NEWRULE, u32At } from "./netlink.ts";

export const FRA_DST = 1, FRA_SRC = 2, FRA_PRIORITY = 6, FRA_TABLE = 15;
export const FR_ACT_TO_TBL = 1;

export interface Rule {
  family: number;
  dst?: string;
  dstLen: number;
  table: number;
  priority: number;
  action: number;
}

export interface RuleSpec {
  dst: Uint8Array;
  dstLen: number;
  table: number;
  priority: number;
}

function hdr(family: number, dstLen: number, table: number): Uint8Array {
  const b = new Uint8Array(12);
  b[0] = family;
  b[1] = dstLen;
  b[4] = table < 256 ? table : 252;
  b[7] = FR_ACT_TO_TBL;
  return b;
}

const describe = (s: RuleSpec) => `rule to ${formatIP(s.dst)}/${s.dstLen} lookup ${s.table} priority ${s.priority}`;

export function addRule(nl: Rtnl, s: RuleSpec): void {
  const at = new Attrs().add(FRA_DST, s.dst).u32(FRA_TABLE, s.table).u32(FRA_PRIORITY, s.priority);
  nl.request(RTM_NEWRULE, NLM_F_CREATE | NLM_F_EXCL, hdr(s.dst.length === 4 ? 2 : AF_INET6, s.dstLen, s.table), at, `add ${describe(s)}`);
}

export function delRule(nl: Rtnl, s: RuleSpec): void {
  const at = new Attrs().add(FRA_DST, s.dst).u32(FRA_TABLE, s.table).u32(FRA_PRIORITY, s.priority);
  nl.request(RTM_DELRULE, 0, hdr(s.dst.length === 4 ? 2 : AF_INET6, s.dstLen, s.table), at, `delete ${describe(s)}`);
}

export function parseRule(m: NlMsg): Rule {
  const b = m.body;
  const a = parseAttrs(b, 12);
  const t = a.get(FRA_TABLE), p = a.get(FRA_PRIORITY), d = a.get(FRA_DST);
  return {
    family: b[0]!,
    dstLen: b[1]!,
    action: b[7]!,
    table: t ? u32At(t) : b[4]!,
    priority: p ? u32At(p) : 0,
    ...(d ? { dst: formatIP(d) } : {}),
  };
}

export function listRules(nl: Rtnl, family: number): Rule[] {
  return nl.request(RTM_GETRULE, NLM_F_DUMP, hdr(family, 0, 0), undefined, "dump rules").filter((m) => m.type === RTM_NEWRULE).map(parseRule);
}
