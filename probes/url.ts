// Probe URLs (DESIGN §6). Pure parsing, no I/O.
//
//   tcp://HOST:PORT             passes when a TCP connection is established
//   http://HOST[:PORT][/PATH]   passes on a 2xx or 3xx status (redirects are not followed); port 80
//   https://HOST[:PORT][/PATH]  the same over TLS (certificate not verified); port 443
//   exec:CMD                    passes when CMD exits 0; run by /bin/sh -c when the image has /bin/sh,
//                               otherwise split into words (common/shellwords.ts, command mode: a CMD that
//                               needs a shell fails the probe with the reason) and exec'd directly
//   icmp://HOST                 passes on an ICMP/ICMPv6 echo reply
//   ready://NAME[@HOST]         passes when that machine reports ready (asked of the host agent; across
//                               hosts with a cluster catalog, docs/cluster.md)
// HOST: an IPv4 address, an IPv6 address in brackets ([::1]), a DNS name, or a container name
// (resolved to its yggdrasil address, see resolve.ts); NAME@HOST is the container NAME on that host.
//
// API:
//   parseProbeUrl(text): Probe        throws ProbeUrlError naming the bad URL
//   splitProbeList(text): string[]    MAN8S_WAIT_FOR words: space-separated, '…' and "…" quote (for exec:)
//   parseProbeList(text): Probe[]     both of the above
// Reference: docs/probes.md.

import { splitWords } from "../common/shellwords.ts";

export type Probe =
  | { kind: "tcp"; url: string; host: string; port: number }
  | { kind: "http"; url: string; host: string; port: number; path: string; tls: boolean }
  | { kind: "exec"; url: string; command: string }
  | { kind: "icmp"; url: string; host: string }
  | { kind: "ready"; url: string; host: string };

export class ProbeUrlError extends Error {}

// names: DNS names and container names (mbctl accepts any UTF-8, e.g. 容器1); no URL delimiters or blanks
const HOST_NAME = /^[^\s/?#@:[\]%\\'"]{1,253}(@[A-Za-z0-9][A-Za-z0-9_.-]{0,63})?$/u;
/** NAME@HOST: a machine name and a host name of the cluster catalog */
const CLUSTER_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}@[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;

function bad(url: string, why: string): never {
  throw new ProbeUrlError(`bad probe URL '${url}': ${why} (forms: tcp://HOST:PORT, http://HOST:PORT/PATH, exec:CMD, icmp://HOST, ready://NAME)`);
}

/** Splits "HOST[:PORT]" or "[V6][:PORT]". Port is null when absent. */
function splitHostPort(url: string, hp: string): { host: string; port: number | null } {
  let host: string;
  let rest: string;
  if (hp.startsWith("[")) {
    const end = hp.indexOf("]");
    if (end < 0) bad(url, "unclosed '[' in IPv6 host");
    host = hp.slice(1, end);
    rest = hp.slice(end + 1);
    if (!/^[0-9A-Fa-f:.]+(%[A-Za-z0-9_.-]+)?$/.test(host) || !host.includes(":")) bad(url, `'${host}' is not an IPv6 address`);
  } else {
    const colon = hp.lastIndexOf(":");
    if (hp.indexOf(":") !== colon) bad(url, "an IPv6 host must be written in brackets, e.g. tcp://[::1]:80");
    host = colon < 0 ? hp : hp.slice(0, colon);
    rest = colon < 0 ? "" : hp.slice(colon);
    if (host === "") bad(url, "missing host");
    if (!HOST_NAME.test(host)) bad(url, `'${host}' is not a valid host name or address`);
  }
  if (rest === "") return { host, port: null };
  if (!/^:\d{1,5}$/.test(rest)) bad(url, `bad port '${rest.slice(1)}'`);
  const port = Number(rest.slice(1));
  if (port < 1 || port > 65535) bad(url, `port ${port} out of range 1-65535`);
  return { host, port };
}

export function parseProbeUrl(text: string): Probe {
  const url = text.trim();
  if (url === "") bad(text, "empty");
  if (url.startsWith("exec:")) {
    const command = url.slice(5).trim();
    if (command === "") bad(url, "exec: needs a command");
    return { kind: "exec", url, command };
  }
  const m = /^([a-zA-Z][a-zA-Z0-9+.-]*):\/\/([^/?#]*)(.*)$/.exec(url);
  if (!m) bad(url, "no scheme");
  const scheme = m[1]!.toLowerCase();
  const authority = m[2]!;
  const tail = m[3]!;
  // NAME@HOST: a container on a given host of the cluster; anything else with '@' would be user information
  const at = authority.indexOf("@");
  if (at >= 0 && !CLUSTER_NAME.test(authority.replace(/:\d*$/, ""))) bad(url, "user information is not supported (NAME@HOST names a container on a host)");
  switch (scheme) {
    case "tcp": {
      if (tail !== "" && tail !== "/") bad(url, "tcp:// takes no path");
      const { host, port } = splitHostPort(url, authority);
      if (port === null) bad(url, "tcp:// needs a port");
      return { kind: "tcp", url, host, port };
    }
    case "http":
    case "https": {
      const tls = scheme === "https";
      const { host, port } = splitHostPort(url, authority);
      if (tail !== "" && !tail.startsWith("/") && !tail.startsWith("?")) bad(url, "bad path");
      if (/[\s\x00-\x1f\x7f]/.test(tail)) bad(url, "the path contains spaces or control characters");
      const path = tail === "" ? "/" : tail.startsWith("?") ? `/${tail}` : tail;
      return { kind: "http", url, host, port: port ?? (tls ? 443 : 80), path: path.replace(/#.*$/, "") || "/", tls };
    }
    case "ready": {
      if (tail !== "" && tail !== "/") bad(url, "ready:// takes no path");
      const { host, port } = splitHostPort(url, authority);
      if (port !== null) bad(url, "ready:// takes no port");
      return { kind: "ready", url, host };
    }
    case "icmp": {
      if (tail !== "" && tail !== "/") bad(url, "icmp:// takes no path");
      const { host, port } = splitHostPort(url, authority);
      if (port !== null) bad(url, "icmp:// takes no port");
      return { kind: "icmp", url, host };
    }
    default:
      bad(url, `unknown scheme '${scheme}'`);
  }
}

/** MAN8S_WAIT_FOR: space-separated probe URLs; quote an exec: probe that contains spaces (shellwords.ts, list mode). */
export function splitProbeList(text: string): string[] {
  const r = splitWords(text, "list");
  if (!r.ok) throw new ProbeUrlError(`bad probe list: ${r.reason}: ${text.slice(0, 200)}`);
  return r.argv;
}

export function parseProbeList(text: string): Probe[] {
  return splitProbeList(text).map(parseProbeUrl);
}
