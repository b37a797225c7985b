// The long-delay timer: delays past Bun's 2^31-1 ms limit must wait, not fire at once.
import { expect, test } from "bun:test";
import { MAX_TIMER_MS, setLongTimeout, sleepLong } from "../../common/timer.ts";

test("a plain setTimeout past the limit fires at once (the bug this module exists for)", async () => {
  let fired = false;
  const t = setTimeout(() => (fired = true), MAX_TIMER_MS + 1);
  await Bun.sleep(30);
  clearTimeout(t);
  expect(fired).toBe(true);
});

test.each([MAX_TIMER_MS + 1, 30 * 24 * 3600e3, 1000 * 3600e3, Infinity])("a delay of %d ms does not fire early", async (ms) => {
  let fired = false;
  const t = setLongTimeout(() => (fired = true), ms);
  await Bun.sleep(50);
  expect(fired).toBe(false);
  expect(t.pending).toBe(true);
  t.clear();
  expect(t.pending).toBe(false);
});

test("short delays fire once, on time; clear before firing cancels", async () => {
  let n = 0;
  const t0 = performance.now();
  const t = setLongTimeout(() => n++, 20);
  await Bun.sleep(60);
  expect(n).toBe(1);
  expect(t.pending).toBe(false);
  expect(performance.now() - t0).toBeGreaterThanOrEqual(20);
  const c = setLongTimeout(() => n++, 10);
  c.clear();
  await Bun.sleep(30);
  expect(n).toBe(1);
});

test("sleepLong ends on abort even when infinite", async () => {
  const ac = new AbortController();
  setTimeout(() => ac.abort(), 10);
  const t0 = performance.now();
  await sleepLong(Infinity, ac.signal);
  expect(performance.now() - t0).toBeLessThan(1000);
});
