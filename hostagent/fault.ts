// Fault injection for the crash tests: MAN8S_AGENT_FAULT=install:STEP makes the agent SIGKILL itself when it
// reaches STEP (a real kill -9 at a known point). Unset in production: one string compare per step.
export function fault(step: string): void {
  const f = process.env.MAN8S_AGENT_FAULT;
  if (f === `install:${step}` || f === `machines:${step}`) process.kill(process.pid, "SIGKILL");
}
