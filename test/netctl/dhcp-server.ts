// A small hostile DHCPv4 server for the DHCP client tests: run inside a server namespace on a real UDP
// socket (port 67), it answers the client per scenario and logs every message it receives as one JSON
// line on stdout ({t, type, xid, ciaddr, requested, ...}) so the test can count DISCOVERs and REQUESTs.
// Usage: bun dhcp-server.ts '{"scenario":"noack","net":"10.99.0"}'
// Replies go to 255.255.255.255:68 (the namespace has a host route for it): the client listens on 0.0.0.0:68.

export interface ServerConfig {
  scenario: string;
  /** first three octets of the /24 the server sits in (it is .1) */
  net: string;
  /** fuzz: PRNG seed */
  seed?: number;
  /** extra knobs per scenario */
  lease?: number;
  yiaddr?: string;
  message?: string;
}

const cfg = JSON.parse(process.argv[2] ?? "{}") as ServerConfig;
const NET = cfg.net;
const SID = ip(`${NET}.1`);
const POOL = ip(`${NET}.50`);

function ip(s: string): number[] {
  return s.split(".").map(Number);
}
const u32 = (n: number) => [(n >>> 24) & 255, (n >>> 16) & 255, (n >>> 8) & 255, n & 255];
const text = (s: string) => [...new TextEncoder().encode(s)];

type Opt = [number, number[]];

/** A BOOTREPLY for `req` with the given options (each split into <=255-byte pieces, RFC 3396). */
function build(req: Uint8Array, type: number, yiaddr: number[], opts: Opt[], o: { pad?: number; sname?: number[]; file?: number[]; chunk?: number } = {}): Uint8Array {
  const body: number[] = type ? [53, 1, type] : [];
  const chunk = o.chunk ?? 255;
  for (const [code, v] of opts) {
    if (v.length === 0) body.push(code, 0);
    for (let i = 0; i < v.length; i += chunk) {
      const part = v.slice(i, i + chunk);
      body.push(code, part.length, ...part);
    }
  }
  body.push(255);
  const b = new Uint8Array(240 + body.length + (o.pad ?? 0));
  b[0] = 2;
  b[1] = 1;
  b[2] = 6;
  b.set(req.subarray(4, 8), 4); // xid
  b.set(req.subarray(10, 12), 10); // flags
  b.set(yiaddr, 16);
  b.set(SID, 20);
  b.set(req.subarray(28, 44), 28); // chaddr
  if (o.sname) b.set(o.sname.slice(0, 64), 44);
  if (o.file) b.set(o.file.slice(0, 128), 108);
  b.set([99, 130, 83, 99], 236);
  b.set(body, 240);
  return b;
}

function std(extra: { lease?: number; mask?: number[]; router?: number[] | null; dns?: number[]; sid?: number[] } = {}): Opt[] {
  const o: Opt[] = [
    [54, extra.sid ?? SID],
    [51, u32(extra.lease ?? 3600)],
    [1, extra.mask ?? [255, 255, 255, 0]],
  ];
  if (extra.router !== null) o.push([3, extra.router ?? SID]);
  o.push([6, extra.dns ?? SID]);
  return o;
}

/** Option 119 filling a 64 KiB datagram: one long real name, then compression pointers to it. */
function bomb(size = 60000): number[] {
  const v: number[] = [];
  for (let i = 0; i < 3; i++) v.push(63, ...new Array(63).fill(97));
  v.push(0);
  while (v.length < size) v.push(0xc0, 0);
  return v;
}

// ---- fuzz -------------------------------------------------------------------------------------------
let seed = (cfg.seed ?? 1) >>> 0;
function rnd(): number {
  // xorshift32: reproducible from the seed the test prints
  seed ^= seed << 13;
  seed >>>= 0;
  seed ^= seed >>> 17;
  seed ^= seed << 5;
  seed >>>= 0;
  return seed / 2 ** 32;
}
const ri = (n: number) => Math.floor(rnd() * n);
const pick = <T>(a: T[]): T => a[ri(a.length)]!;
const bytes = (n: number) => Array.from({ length: n }, () => ri(256));

function fuzzName(): number[] {
  const kinds = [
    () => text("ok.example"),
    () => text("evil\nnameserver 6.6.6.6"),
    () => text("a".repeat(ri(400))),
    () => bytes(ri(80)),
    () => text(`${"x.".repeat(ri(200))}y`),
    () => text("options ndots:15 rotate"),
  ];
  return pick(kinds)();
}

function fuzz119(): number[] {
  const kinds = [
    bomb,
    () => bytes(ri(2000)),
    () => [3, 97, 98, 99, 0xc0, 0], // a loop through a pointer to itself
    () => [0xc0, 2, 0xc0, 0], // pointers to pointers
    () => {
      const v: number[] = [];
      for (let i = 0; i < ri(40); i++) v.push(...[ri(64), ...text("abcdefghijklmnopqrstuvwxyz0123456789-_.\n ").slice(0, ri(40))]);
      return v;
    },
    () => [7, ...text("example"), 3, ...text("com"), 0, 3, ...text("foo"), 0xc0, 0],
  ];
  return pick(kinds)();
}

const badAddrs = [[0, 0, 0, 0], [127, 0, 0, 1], [255, 255, 255, 255], [224, 0, 0, 5], [239, 1, 2, 3], [240, 0, 0, 1]];

function fuzzReply(req: Uint8Array): Uint8Array {
  const type = pick([2, 2, 5, 5, 5, 6, 0, ri(256)]);
  const yi = rnd() < 0.7 ? [...POOL.slice(0, 3), 50 + ri(10)] : rnd() < 0.6 ? pick(badAddrs) : bytes(4);
  const opts: Opt[] = [];
  if (rnd() < 0.85) opts.push([54, rnd() < 0.8 ? SID : bytes(ri(6))]);
  if (rnd() < 0.9) opts.push([51, u32(pick([0, 1, 2, 30, 59, 3600, 0x7fffffff, 0x80000000, 0xfffffffe, 0xffffffff, ri(2 ** 32)]))]);
  if (rnd() < 0.3) opts.push([58, u32(rnd() < 0.5 ? pick([0, 1, 2, 5]) : ri(2 ** 32))], [59, u32(rnd() < 0.5 ? pick([0, 2, 3, 8]) : ri(2 ** 32))]);
  if (rnd() < 0.9) opts.push([1, rnd() < 0.8 ? [255, 255, 255, pick([0, 0, 128, 255, 254, 7])] : bytes(ri(6))]);
  if (rnd() < 0.8) opts.push([3, rnd() < 0.6 ? SID : rnd() < 0.5 ? pick(badAddrs) : bytes(ri(12))]);
  if (rnd() < 0.8) opts.push([6, bytes(4 * ri(20))]);
  if (rnd() < 0.5) opts.push([15, fuzzName()]);
  if (rnd() < 0.6) opts.push([119, fuzz119()]);
  if (rnd() < 0.2) opts.push([56, fuzzName()]);
  if (rnd() < 0.2) opts.push([ri(256), bytes(ri(300))]);
  const extra: { pad?: number; sname?: number[]; file?: number[]; chunk?: number } = {};
  if (rnd() < 0.15) {
    // option overload: more options in the file and sname fields
    opts.push([52, [pick([1, 2, 3, ri(256)])]]);
    extra.file = [119, 5, 3, 98, 97, 100, 0, 15, 3, 120, 10, 121, 255];
    extra.sname = bytes(64);
  }
  if (rnd() < 0.1) extra.pad = ri(60000); // big, fragmented datagrams
  if (rnd() < 0.1) extra.chunk = 1 + ri(8); // options split into many RFC 3396 fragments
  let b = build(req, type, yi, opts, extra);
  if (b.length > 65000) b = b.slice(0, 65000); // the largest UDP datagram IPv4 can carry is 65507 bytes
  if (rnd() < 0.3) {
    // mutate: flip bytes after the fixed header (keep xid and chaddr so the client reads it)
    b = new Uint8Array(b);
    for (let i = 0; i < 1 + ri(8); i++) b[236 + ri(b.length - 236)] = ri(256);
  }
  if (rnd() < 0.05) b = b.slice(0, ri(b.length)); // truncated
  return b;
}

// ---- scenarios --------------------------------------------------------------------------------------
const O = 2, A = 5, N = 6;

function answer(req: Uint8Array, type: number): Uint8Array[] {
  const s = cfg.scenario;
  const offerOrAck = type === 1 ? O : A;
  switch (s) {
    case "noack":
      // answers DISCOVER, never the REQUEST (a server that gave the address to another client)
      return type === 1 ? [build(req, O, POOL, std())] : [];
    case "lease":
      return [build(req, offerOrAck, POOL, std({ lease: cfg.lease ?? 0 }))];
    case "inject":
      return [build(req, offerOrAck, POOL, [
        ...std({ dns: [...SID, 10, 0, 0, 2, 10, 0, 0, 3, 10, 0, 0, 4, 10, 0, 0, 5] }),
        [15, text("good.test\nnameserver 6.6.6.6\noptions ndots:15")],
        [119, [4, ...text("ok-1"), 4, ...text("test"), 0, 10, ...text("bad\nsearch"), 0, 3, ...text("a b"), 0, 7, ...text("ok2_bad"), 0, 5, ...text("fine2"), 0]],
      ])];
    case "bomb":
      // in 2-byte fragments (RFC 3396 concatenation): ~32 KiB of pointers in a ~64 KiB datagram
      return [build(req, offerOrAck, POOL, [...std(), [119, bomb(32000)]], { chunk: 2 })];
    case "badaddr":
      // every reply offers an address no host may use
      return [build(req, offerOrAck, ip(cfg.yiaddr ?? "127.0.0.1"), std())];
    case "ackbad":
      // a good OFFER, then an ACK for an unusable address
      return [build(req, offerOrAck, type === 1 ? POOL : ip(cfg.yiaddr ?? "255.255.255.255"), std())];
    case "host32":
      // /32 with a gateway, as cloud servers hand out
      return [build(req, offerOrAck, POOL, std({ mask: [255, 255, 255, 255] }))];
    case "gwout":
      // the router is outside the /24
      return [build(req, offerOrAck, POOL, std({ router: [192, 0, 2, 1] }))];
    case "gwbcast":
      // the router is the subnet's broadcast address: the kernel refuses the default route
      return [build(req, offerOrAck, POOL, std({ router: ip(`${NET}.255`) }))];
    case "sid0":
      return [build(req, offerOrAck, POOL, std({ sid: [] }))];
    case "sid1":
      return [build(req, offerOrAck, POOL, std({ sid: [10] }))];
    case "nak":
      return type === 1 ? [build(req, O, POOL, std())] : [build(req, N, [0, 0, 0, 0], [[54, SID], [56, text(cfg.message ?? "go away")]])];
    case "fuzz": {
      const n = 1 + ri(3);
      return Array.from({ length: n }, () => fuzzReply(req));
    }
  }
  throw new Error(`unknown scenario ${s}`);
}

let last: Uint8Array | undefined;
const out = (o: unknown) => process.stdout.write(`${JSON.stringify(o)}\n`);
const t0 = performance.now();
const sock = await Bun.udpSocket({
  hostname: "0.0.0.0",
  port: 67,
  binaryType: "uint8array",
  socket: {
    data(s, req) {
      if (req.length < 240 || req[0] !== 1) return;
      // options of the request: message type (53), requested address (50)
      let type = 0;
      let requested = "";
      for (let p = 240; p < req.length && req[p] !== 255; ) {
        if (req[p] === 0) {
          p++;
          continue;
        }
        const c = req[p]!, l = req[p + 1] ?? 0;
        if (c === 53) type = req[p + 2] ?? 0;
        if (c === 50 && l === 4) requested = [...req.subarray(p + 2, p + 6)].join(".");
        p += 2 + l;
      }
      out({ t: Math.round(performance.now() - t0), wall: Date.now(), type, xid: new DataView(req.buffer, req.byteOffset).getUint32(4), ciaddr: [...req.subarray(12, 16)].join("."), requested });
      if (type !== 1 && type !== 3) return; // DECLINE, RELEASE: logged only
      last = req.slice();
      for (const r of answer(req, type)) send(r);
    },
  },
});
sock.setBroadcast(true);
function send(r: Uint8Array): void {
  try {
    sock.send(r, 68, "255.255.255.255");
  } catch (e) {
    out({ sendError: (e as Error).message, len: r.length });
  }
}
out({ listening: true, scenario: cfg.scenario, seed: cfg.seed });
if (cfg.scenario === "fuzz") {
  // besides answering, keep sending replies for the client's latest transaction (every state gets its share)
  let sent = 0;
  setInterval(() => {
    if (!last) return;
    for (let i = 0; i < 2; i++) send(fuzzReply(last));
    if ((sent += 2) % 500 === 0) out({ sent });
  }, 10);
}
