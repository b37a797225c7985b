// ICMP echo ("ping") for `check` and MAN8S_CHECK_TARGETS: Bun has no ICMP, and its TCP errors hide whether a
// host refused or was unreachable, so a bare HOST is checked with a raw ICMP socket read via the event loop.
import { closeFd } from "../common/libc.ts";
import { icmpSocket, sockSendTo } from "../common/libc-net.ts";
import { type LongTimer, setLongTimeout } from "../common/timer.ts";

function checksum(b: Uint8Array): number {
  let sum = 0;
  for (let i = 0; i < b.length; i += 2) sum += (b[i]! << 8) | (b[i + 1] ?? 0);
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return ~sum & 0xffff;
}

/** Resolves null when an echo reply came back within timeoutMs, else a reason. Up to 3 requests, 1 s apart. */
export function icmpEcho(addr: Uint8Array, timeoutMs: number): Promise<string | null> {
  const v6 = addr.length === 16;
  let fd: number;
  try {
    fd = icmpSocket(v6);
  } catch (e) {
    return Promise.resolve((e as Error).message);
  }
  const id = crypto.getRandomValues(new Uint16Array(1))[0]!;
  const PAYLOAD = 8;
  const reader = Bun.file(fd).stream().getReader();
  return new Promise<string | null>((resolve) => {
    let done = false;
    const timers: ReturnType<typeof setTimeout>[] = [];
    let deadline: LongTimer | null = null;
    const finish = (v: string | null) => {
      if (done) return;
      done = true;
      for (const t of timers) clearTimeout(t);
      deadline?.clear();
      void reader.cancel().catch(() => {});
      closeFd(fd);
      resolve(v);
    };
    const isReply = (icmp: Uint8Array) => icmp.length >= 8 && icmp[0] === (v6 ? 129 : 0) && ((icmp[4]! << 8) | icmp[5]!) === id;
    void (async () => {
      try {
        for (;;) {
          const { done: end, value } = await reader.read();
          if (end || done) return;
          // the stream may join datagrams: IPv4 ones carry their length, ICMPv6 echo replies (the only
          // type the filter lets through) are 8 + PAYLOAD bytes when they are ours
          for (let o = 0; o < value.length; ) {
            if (v6) {
              if (isReply(value.subarray(o, o + 8 + PAYLOAD))) return finish(null);
              o += 8 + PAYLOAD;
            } else {
              const ihl = (value[o]! & 0x0f) * 4;
              const total = (value[o + 2]! << 8) | value[o + 3]!;
              const src = value.subarray(o + 12, o + 16);
              if (isReply(value.subarray(o + ihl, o + total)) && src.every((x, i) => x === addr[i])) return finish(null);
              if (total <= 0) break;
              o += total;
            }
          }
        }
      } catch {
        // the socket was closed by finish()
      }
    })();
    const send = (seq: number) => {
      const pkt = new Uint8Array(8 + PAYLOAD);
      pkt[0] = v6 ? 128 : 8;
      pkt[4] = id >> 8;
      pkt[5] = id & 0xff;
      pkt[7] = seq;
      if (!v6) {
        const c = checksum(pkt);
        pkt[2] = c >> 8;
        pkt[3] = c & 0xff;
      } // the kernel fills the ICMPv6 checksum (it needs the pseudo-header)
      try {
        sockSendTo(fd, pkt, addr, 0, "send ICMP echo");
      } catch (e) {
        finish((e as Error).message.replace("send ICMP echo: ", ""));
      }
    };
    for (let i = 0; i < 3; i++) timers.push(setTimeout(() => send(i + 1), i * 1000));
    // the check's timeout is what is left of MAN8S_NETWORK_TIMEOUT: it may exceed a plain setTimeout's range
    deadline = setLongTimeout(() => finish(`no echo reply within ${timeoutMs} ms`), timeoutMs);
  });
}
