// Per-layer progress of a pull. skopeo shows bars only on a terminal (the agent has none), so the agent
// learns each layer's size from the manifest (`skopeo inspect --raw`, before the copy) and watches the
// store while skopeo copies: its temp files (oci-put-blob*) grow, and a layer is done when its blob
// appears under blobs/sha256. Temp files do not name their layer: they are matched to the layers skopeo
// announced ("Copying blob sha256:…"), in order — exact when one layer is in flight, an estimate of
// which one is which when several are. Bounded: one poll per POLL_MS, one event per layer per poll at most.
import { readdirSync, statSync } from "node:fs";
import { join } from "node:path";

export const POLL_MS = 200;
/** a manifest with more layers than this gets no per-layer progress (skopeo's own lines instead) */
const MAX_LAYERS = 1024;
const TEMP = /^oci-put-blob/;

export interface LayerProgress {
  /** 1-based position in the manifest, and the manifest's count */
  index: number;
  count: number;
  digest: string;
  /** the manifest's size of the (compressed) blob */
  size: number;
  bytes: number;
  state: "fetching" | "done" | "stored";
  /** bytes per second since this layer started (0 while unknown) */
  rate: number;
  /** seconds left at that rate, null while unknown */
  eta: number | null;
}

interface Layer {
  index: number;
  digest: string;
  size: number;
  bytes: number;
  state: "pending" | "fetching" | "done" | "stored";
  started: number;
  temp: string | null;
  reported: number;
}

/** The layers a manifest lists ({digest, size}), or null when it is not an image manifest we can read. */
export function manifestLayers(manifest: unknown): { digest: string; size: number }[] | null {
  const layers = (manifest as { layers?: unknown } | null)?.layers;
  if (!Array.isArray(layers) || layers.length === 0 || layers.length > MAX_LAYERS) return null;
  const out: { digest: string; size: number }[] = [];
  for (const l of layers as { digest?: unknown; size?: unknown }[]) {
    if (typeof l?.digest !== "string" || !/^sha256:[0-9a-f]{64}$/.test(l.digest)) return null;
    if (typeof l.size !== "number" || !Number.isSafeInteger(l.size) || l.size < 0) return null;
    out.push({ digest: l.digest, size: l.size });
  }
  return out;
}

export class PullWatcher {
  private layers: Layer[];
  private timer: ReturnType<typeof setInterval> | null = null;

  constructor(
    private store: string,
    layers: { digest: string; size: number }[],
    stored: Set<string>,
    private emit: (p: LayerProgress) => void,
  ) {
    this.layers = layers.map((l, i) => ({ index: i + 1, digest: l.digest, size: l.size, bytes: 0, state: "pending", started: 0, temp: null, reported: -1 }));
    // what the store already holds is reported at once (skopeo skips it)
    for (const l of this.layers) {
      if (stored.has(l.digest.slice(7))) {
        l.state = "stored";
        l.bytes = l.size;
        this.report(l);
      }
    }
  }

  start(): void {
    this.timer = setInterval(() => this.poll(), POLL_MS);
  }

  /** skopeo's line "Copying blob sha256:…" (its order decides which temp file is whose) */
  line(l: string): void {
    const m = /^Copying blob (sha256:[0-9a-f]{64})/.exec(l);
    if (!m) return;
    for (const x of this.layers) {
      if (x.digest === m[1] && x.state === "pending") {
        x.state = "fetching";
        x.started = performance.now();
      }
    }
  }

  /** The copy ended: a last poll, then layers left fetching are reported as they are. */
  stop(ok: boolean): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    if (ok) this.poll();
  }

  private tempFiles(): Map<string, number> {
    const sizes = new Map<string, number>();
    for (const dir of [this.store, join(this.store, "blobs", "sha256")]) {
      let names: string[];
      try {
        names = readdirSync(dir).filter((n) => TEMP.test(n)).slice(0, MAX_LAYERS);
      } catch {
        continue;
      }
      for (const n of names) {
        try {
          sizes.set(join(dir, n), statSync(join(dir, n)).size);
        } catch {
          // renamed into place meanwhile
        }
      }
    }
    return sizes;
  }

  private poll(): void {
    const temps = this.tempFiles();
    for (const l of this.layers) {
      if (l.state !== "pending" && l.state !== "fetching") continue;
      let have = false;
      try {
        have = statSync(join(this.store, "blobs", "sha256", l.digest.slice(7))).isFile();
      } catch {
        // not yet
      }
      if (have) {
        if (l.state === "pending") l.started = performance.now();
        l.state = "done";
        l.bytes = l.size;
        l.temp = null;
        this.report(l);
      }
    }
    // temp files not yet matched go to the announced layers without one, in order
    const taken = new Set(this.layers.map((l) => l.temp).filter((t): t is string => t !== null));
    const free = [...temps.keys()].filter((t) => !taken.has(t)).sort();
    for (const l of this.layers) {
      if (l.state !== "fetching") continue;
      if (l.temp !== null && !temps.has(l.temp)) l.temp = null;
      if (l.temp === null && free.length) l.temp = free.shift()!;
      if (l.temp !== null) l.bytes = Math.min(l.size, temps.get(l.temp) ?? l.bytes);
      if (l.bytes !== l.reported) this.report(l);
    }
  }

  private report(l: Layer): void {
    l.reported = l.bytes;
    const secs = (performance.now() - l.started) / 1000;
    const rate = l.state === "stored" || secs <= 0 ? 0 : Math.round(l.bytes / secs);
    const eta = l.state !== "fetching" ? 0 : rate > 0 ? Math.ceil((l.size - l.bytes) / rate) : null;
    this.emit({ index: l.index, count: this.layers.length, digest: l.digest, size: l.size, bytes: l.bytes, state: l.state as LayerProgress["state"], rate, eta });
  }
}

function human(n: number): string {
  if (n < 1024) return `${n} B`;
  const u = ["KiB", "MiB", "GiB", "TiB"];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < u.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(1)} ${u[i]}`;
}

/** One line for a layer's state: what a log (one line per layer) and a terminal (updated in place) show. */
export function layerLine(p: LayerProgress): string {
  const head = `layer ${p.index}/${p.count} ${p.digest.slice(7, 19)} ${human(p.size)} (${p.size} bytes)`;
  if (p.state === "stored") return `${head}: already stored`;
  const rate = p.rate > 0 ? `, ${human(p.rate)}/s` : "";
  if (p.state === "done") return `${head}: fetched${rate}`;
  const pct = p.size > 0 ? Math.floor((p.bytes * 100) / p.size) : 0;
  return `${head}: ${human(p.bytes)} ${pct}%${rate}, ETA ${p.eta === null ? "?" : `${p.eta} s`}`;
}
