// Timers for any delay. Bun (like Node) stores a timer's delay as a signed 32-bit count of milliseconds:
// anything above 2^31-1 ms (24.8 days) fires after 1 ms. A DHCP lease of a month, an infinite lease, a
// Healthcheck Interval of 30 days or MAN8S_WAIT_TIMEOUT=1000h must wait, not fire at once, so every
// delay that comes from outside goes through here: long delays are chained in steps below the limit.

/** the largest delay a single setTimeout honours */
export const MAX_TIMER_MS = 2 ** 31 - 1;

export interface LongTimer {
  /** cancel; safe to call more than once, and after the timer fired */
  clear(): void;
  /** false once it fired or was cleared */
  readonly pending: boolean;
}

/**
 * Calls fn once after ms milliseconds. Infinity (or any non-finite delay) never fires: that is how an
 * infinite lease or "no timeout" is written. Negative and NaN delays fire on the next turn, as setTimeout's do.
 */
export function setLongTimeout(fn: () => void, ms: number): LongTimer {
  let handle: ReturnType<typeof setTimeout> | null = null;
  let pending = true;
  if (ms === Infinity) return { clear: () => void (pending = false), get pending() { return pending; } };
  const due = performance.now() + (Number.isNaN(ms) || ms < 0 ? 0 : ms);
  const arm = () => {
    const left = due - performance.now();
    if (left > MAX_TIMER_MS) {
      handle = setTimeout(arm, MAX_TIMER_MS);
      return;
    }
    handle = setTimeout(() => {
      handle = null;
      pending = false;
      fn();
    }, Math.max(0, left));
  };
  arm();
  return {
    clear() {
      if (handle) clearTimeout(handle);
      handle = null;
      pending = false;
    },
    get pending() {
      return pending;
    },
  };
}

/** A promise that resolves after ms (Infinity: never), for sleeps of any length. */
export function sleepLong(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const t = setLongTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      t.clear();
      resolve();
    };
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}
