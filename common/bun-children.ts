// Pids started through Bun.spawn (the app, exec: probes, HEALTHCHECK commands): the init's reaper must never
// reap them, Bun waits for them itself through a pidfd (init/reaper.ts says why). Every Bun.spawn in the init
// registers its child here right after the call, on the JS thread where the reaper also runs.
//
// One set per process, kept on globalThis: the probes are a lazy module with their own copy of this file
// (lazy.ts), and a probe child registered only in that copy would be reaped by the init's (Bun's wait then
// fails: ECHILD). Outside the init (the probe CLI) nothing reads the set.
const shared = globalThis as typeof globalThis & { __man8sBunChildren?: Set<number> };
const bunChildren = (shared.__man8sBunChildren ??= new Set<number>());

export function trackBunChild(pid: number): void {
  bunChildren.add(pid);
}
export function untrackBunChild(pid: number): void {
  bunChildren.delete(pid);
}
export function isBunChild(pid: number): boolean {
  return bunChildren.has(pid);
}
