// Paths inside a container that the init and the host agent must agree on (the agent's render binds
// or writes them, the init reads them). One definition, imported by both sides.
export const IN_CONTAINER_BUNDLE = "/man8s-init";
export const IN_CONTAINER_ENV = "/man8env.env";
export const IN_CONTAINER_STATUS = "/run/man8s/status.json";
/** the agent's per-container directory, bound read-only; holds the container's report socket. Not under
 *  /run/man8s: nspawn would create that parent owned by the host's root (nobody under PrivateUsers=pick),
 *  and the init could not write its status record there. */
export const IN_CONTAINER_REPORT_DIR = "/run/man8s-agent";
export const IN_CONTAINER_REPORT_SOCKET = `${IN_CONTAINER_REPORT_DIR}/report.sock`;
