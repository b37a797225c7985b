// Our own Router Solicitation at carrier (RFC 4861 §6.3.7). The kernel sends its first RS only after the
// link-local address has passed DAD (1-2 s); an RS from the unspecified address `::` is allowed before any
// address exists (RFC 4861 §4.1: it then carries no source link-layer address option), and the router answers with a
// multicast RA that the kernel processes as usual. We send a short, bounded burst and then leave
// solicitation to the kernel: RS_MAX packets, RS_GAP_MS apart, stopped as soon as an RA has been seen.
// The retries cover the first frame after link-up, which the host's bridge port sometimes drops.
import { closeFd } from "../common/libc.ts";
import { ETH_P_IPV6, IPPROTO_ICMPV6, packetSendTo, packetSocket } from "../common/libc-net.ts";

/** At most this many of our own solicitations per burst (the first + 2 retries). */
export const RS_MAX = 3;
/** Gap between them: long enough for a local router's answer (< 1 ms here) to stop the next one. */
export const RS_GAP_MS = 10;

const ALL_ROUTERS = new Uint8Array([0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
/** 33:33 + the low 32 bits of ff02::2 (RFC 2464 §7) */
const ALL_ROUTERS_MAC = new Uint8Array([0x33, 0x33, 0, 0, 0, 2]);
const ND_ROUTER_SOLICIT = 133;

function checksum(parts: Uint8Array[]): number {
  let sum = 0;
  for (const b of parts) for (let i = 0; i < b.length; i += 2) sum += (b[i]! << 8) | (b[i + 1] ?? 0);
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return ~sum & 0xffff;
}

/** IPv6 header (src ::, dst ff02::2, hop limit 255 as RFC 4861 §6.1.1 requires) + an 8-byte RS without options. */
export function routerSolicitation(): Uint8Array {
  const icmp = new Uint8Array(8); // type, code, checksum, 4 reserved bytes
  icmp[0] = ND_ROUTER_SOLICIT;
  // pseudo-header (RFC 8200 §8.1): src, dst, upper-layer length (u32), 3 zero bytes, next header
  const pseudo = new Uint8Array(40);
  pseudo.set(ALL_ROUTERS, 16);
  pseudo[35] = icmp.length;
  pseudo[39] = IPPROTO_ICMPV6;
  const c = checksum([pseudo, icmp]);
  icmp[2] = c >> 8;
  icmp[3] = c & 0xff;
  const pkt = new Uint8Array(40 + icmp.length);
  pkt[0] = 0x60; // version 6, traffic class 0, flow label 0
  pkt[5] = icmp.length; // payload length
  pkt[6] = IPPROTO_ICMPV6;
  pkt[7] = 255;
  pkt.set(ALL_ROUTERS, 24);
  pkt.set(icmp, 40);
  return pkt;
}

/** One burst of solicitations on one interface: idle -> sending -> done (RS_MAX sent, stopped, or failed). */
export class RouterSolicitor {
  state: "idle" | "sending" | "done" = "idle";
  sent = 0;
  /** why the last send failed (no CAP_NET_RAW, interface gone); the kernel's own RS still comes */
  error: string | undefined;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private fd = -1;

  constructor(
    private readonly index: number,
    private readonly log: (msg: string) => void,
  ) {}

  start(): void {
    if (this.state !== "idle") return;
    try {
      this.fd = packetSocket();
    } catch (e) {
      this.fail(e);
      return;
    }
    this.state = "sending";
    this.sendOne();
  }

  private sendOne(): void {
    this.timer = undefined;
    if (this.state !== "sending") return;
    try {
      packetSendTo(this.fd, routerSolicitation(), this.index, ETH_P_IPV6, ALL_ROUTERS_MAC, "send router solicitation");
      this.sent++;
    } catch (e) {
      this.fail(e);
      return;
    }
    if (this.sent >= RS_MAX) this.stop();
    else this.timer = setTimeout(() => this.sendOne(), RS_GAP_MS);
  }

  private fail(e: unknown): void {
    this.error = (e as Error).message;
    this.log(`netctl: own router solicitation not sent (${this.error}); waiting for the kernel's`);
    this.stop();
  }

  /** An RA arrived (or we are shutting down): no more solicitations from us. */
  stop(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    if (this.fd >= 0) closeFd(this.fd);
    this.fd = -1;
    this.state = "done";
  }
}
