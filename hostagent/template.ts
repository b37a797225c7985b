// mbctl's template names as overrides of the classification (`--template`; without it the classification
// decides). Each sets what mbctl's template set in the .nspawn file, and our init's role to match:
//   netns-noinit   ProcessTwo=yes, KillSignal=SIGRTMIN+3: the image's command runs as the app under our init
//                  (PID 2); an image init that would have been exec'd is run as that app instead
//   netns-init     ProcessTwo=no, KillSignal=SIGTERM: our init is the container's PID 1, the app its child
//   netns-systemd  ProcessTwo=no, KillSignal=SIGRTMIN+3: the image's command is exec'd as PID 1 (systemd)
import type { Classification } from "./classify.ts";

export const TEMPLATES = ["netns-init", "netns-noinit", "netns-systemd"] as const;
export type Template = (typeof TEMPLATES)[number];

export function applyTemplate(cls: Classification, t: Template): Classification {
  const out: Classification = { ...cls, evidence: [...cls.evidence], warnings: [...cls.warnings] };
  const was = `ProcessTwo=${cls.processTwo ? "yes" : "no"}, KillSignal=${cls.killSignal}, ${cls.mode}`;
  if (t === "netns-systemd") {
    out.processTwo = false;
    out.killSignal = "SIGRTMIN+3";
    out.mode = "pid1-exec";
    out.execInit = cls.execInit ?? cls.argv;
  } else {
    out.processTwo = t === "netns-noinit";
    out.killSignal = t === "netns-noinit" ? "SIGRTMIN+3" : "SIGTERM";
    if (cls.mode === "pid1-exec") out.mode = "pid2";
    delete out.execInit;
  }
  out.evidence.push({ decision: `template ${t} (given)`, source: "--template", detail: `overrides the classification (${was})` });
  return out;
}
