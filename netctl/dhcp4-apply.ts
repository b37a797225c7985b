// Putting a DHCPv4 lease on the kernel and resolv.conf, apart from the protocol (as systemd's
// networkd-dhcp4.c is apart from sd-dhcp-client.c): netctl/dhcp4-machine.ts decides, netctl/dhcp4.ts
// runs it and calls this for its `newTransaction`, `apply` and `deconfigure` outputs.
import { EEXIST } from "../common/libc.ts";
import { addAddress, delAddress } from "./address.ts";
import type { Lease } from "./dhcp4-machine.ts";
import { NetlinkError, type Rtnl } from "./netlink.ts";
import { addRoute, delRoute, RTPROT_BOOT, RTPROT_DHCP, RT_SCOPE_LINK } from "./route.ts";
import { renderResolvConf, writeResolvConf } from "./resolvconf.ts";

/** What the runner needs from the kernel side: a fake in unit tests. */
export interface LeaseApplier {
  /** a route for 255.255.255.255, so a plain UDP socket can broadcast before there is an address */
  broadcastRoute(): void;
  /** all or nothing: on failure what the call added is removed again and the error thrown */
  apply(l: Lease, cur: Lease | undefined, lifetime: number | "infinite"): void;
  deconfigure(l: Lease): void;
}

export interface KernelApplierOptions {
  nl: Rtnl;
  link: { index: number };
  /** where resolv.conf goes; undefined = do not write it */
  resolvConf?: string;
  /** give the address no lifetime: for a caller that will exec another program and cannot renew */
  keepAddress?: boolean;
  log: (msg: string) => void;
}

const sameAddr = (a?: Uint8Array, b?: Uint8Array) => !!a && !!b && a.length === b.length && a.every((x, i) => x === b[i]);

export class KernelApplier implements LeaseApplier {
  constructor(private readonly o: KernelApplierOptions) {}

  /**
   * A host route for the limited broadcast lets a plain UDP socket send before we have an address. The kernel
   * flushes every IPv4 route of a device when its last IPv4 address goes, so this is redone before each INIT.
   */
  broadcastRoute(): void {
    try {
      addRoute(this.o.nl, { dst: new Uint8Array([255, 255, 255, 255]), dstLen: 32, oif: this.o.link.index, scope: RT_SCOPE_LINK, protocol: RTPROT_BOOT });
    } catch (e) {
      this.o.log(`dhcp4: ${(e as Error).message}`);
    }
  }

  /**
   * Address (lifetime = what is left of the lease), a link route to the router when it is outside the
   * subnet (a /32 lease, a cloud gateway: as systemd-networkd does), the default route, resolv.conf.
   * All or nothing: on any failure what this call added is removed again and the error rethrown.
   */
  apply(l: Lease, cur: Lease | undefined, lifetime: number | "infinite"): void {
    const { nl, link } = this.o;
    const undo: (() => void)[] = [];
    try {
      const life = this.o.keepAddress || lifetime === "infinite" ? {} : { valid: lifetime, preferred: lifetime };
      const isNew = !cur || !sameAddr(cur.address, l.address) || cur.prefixlen !== l.prefixlen;
      addAddress(nl, { index: link.index, bytes: l.address, prefixlen: l.prefixlen, ...life, replace: true, ...(l.broadcast ? { broadcast: l.broadcast } : {}) });
      if (isNew) undo.push(() => delAddress(nl, { index: link.index, bytes: l.address, prefixlen: l.prefixlen }));
      const gw = l.routers[0];
      if (cur?.routers[0] && !sameAddr(cur.routers[0], gw)) this.dropRoutes(cur);
      if (gw) {
        if (!inSubnet(gw, l.address, l.prefixlen)) {
          const host = { dst: gw, dstLen: 32, oif: link.index, prefsrc: l.address, scope: RT_SCOPE_LINK, protocol: RTPROT_DHCP };
          addRoute(nl, host);
          undo.push(() => delRoute(nl, host));
        }
        const def = { dst: new Uint8Array(4), dstLen: 0, gateway: gw, oif: link.index, prefsrc: l.address, protocol: RTPROT_DHCP };
        addRoute(nl, def);
        undo.push(() => delRoute(nl, def));
      }
    } catch (e) {
      for (const u of undo.reverse()) {
        try {
          u();
        } catch {
          // already gone (the kernel drops routes with their address)
        }
      }
      throw e;
    }
    if (this.o.resolvConf && (l.dns.length || l.domain)) {
      const text = renderResolvConf(l.dns, l.domain, l.search);
      const before = cur ? renderResolvConf(cur.dns, cur.domain, cur.search) : "";
      if (text !== before) {
        try {
          writeResolvConf(this.o.resolvConf, text);
        } catch (e) {
          this.o.log(`dhcp4: cannot write ${this.o.resolvConf}: ${(e as Error).message}`);
        }
      }
    }
  }

  /** The default route and the link route to the router of a lease. */
  private dropRoutes(l: Lease): void {
    const gw = l.routers[0];
    if (!gw) return;
    const tries = [
      { dst: new Uint8Array(4), dstLen: 0, gateway: gw, oif: this.o.link.index },
      ...(inSubnet(gw, l.address, l.prefixlen) ? [] : [{ dst: gw, dstLen: 32, oif: this.o.link.index }]),
    ];
    for (const r of tries) {
      try {
        delRoute(this.o.nl, r);
      } catch (e) {
        if (!(e instanceof NetlinkError)) throw e; // already gone with the address: fine
      }
    }
  }

  /** Removes what the lease configured; the kernel drops routes through the address with it. */
  deconfigure(l: Lease): void {
    this.dropRoutes(l);
    try {
      delAddress(this.o.nl, { index: this.o.link.index, bytes: l.address, prefixlen: l.prefixlen });
    } catch (e) {
      if (!(e instanceof NetlinkError) || e.errno === EEXIST) throw e;
      // EADDRNOTAVAIL: the kernel removed it already when its lifetime ran out
    }
  }
}

function inSubnet(a: Uint8Array, net: Uint8Array, len: number): boolean {
  for (let i = 0; i < 4; i++) {
    const bits = Math.max(0, Math.min(8, len - i * 8));
    const mask = bits === 0 ? 0 : (0xff << (8 - bits)) & 0xff;
    if ((a[i]! & mask) !== (net[i]! & mask)) return false;
  }
  return len < 32 || sameAddr(a, net);
}
