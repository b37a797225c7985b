// Error codes of the agent protocol. Every failed request gets exactly one of these, so clients can
// branch on the code and humans read the message. The list is part of the public interface (docs/protocol.md).
export const ERR = {
  /** frame length above MAX_FRAME; the connection is closed after the reply */
  FRAME_TOO_LARGE: "E_FRAME_TOO_LARGE",
  /** the frame's payload is not exactly one msgpack value */
  BAD_MSGPACK: "E_BAD_MSGPACK",
  /** a msgpack value that is not a request map {id, cmd, args} */
  BAD_REQUEST: "E_BAD_REQUEST",
  UNKNOWN_COMMAND: "E_UNKNOWN_COMMAND",
  /** an argument is missing, of the wrong type or out of range */
  BAD_ARGS: "E_BAD_ARGS",
  /** a path that is relative, not normalised, or escapes where it must stay */
  BAD_PATH: "E_BAD_PATH",
  /** a container name that is not a valid machine name */
  BAD_NAME: "E_BAD_NAME",
  /** the image config could not be read or understood */
  BAD_CONFIG: "E_BAD_CONFIG",
  /** a value that cannot be written to the env file (newline, NUL, bad key) */
  BAD_ENV: "E_BAD_ENV",
  NOT_FOUND: "E_NOT_FOUND",
  /** install target exists and force was not given */
  EXISTS: "E_EXISTS",
  /** the peer may not use this socket or this command */
  FORBIDDEN: "E_FORBIDDEN",
  /** a container sent more reports (or connections) than its rate allows; the connection is closed */
  RATE_LIMITED: "E_RATE_LIMITED",
  /** a container already has its maximum of open report connections; the new one is closed */
  TOO_MANY_CONNECTIONS: "E_TOO_MANY_CONNECTIONS",
  /** injected bundle differs from its source after the copy */
  VERIFY_FAILED: "E_VERIFY_FAILED",
  /** something to copy (a volume seed, /run content) is larger than the agent's bound */
  TOO_LARGE: "E_TOO_LARGE",
  /** skopeo could not copy the image (unknown image, unauthorized, TLS, network): one line naming the reference */
  PULL: "E_PULL",
  /** umoci could not unpack a stored image */
  UNPACK: "E_UNPACK",
  /** the client went away (Ctrl-C) during a pull: everything it made was removed */
  CANCELLED: "E_CANCELLED",
  /** the machine is running: stop it first */
  RUNNING: "E_RUNNING",
  /** the machine is not running (stop) */
  NOT_RUNNING: "E_NOT_RUNNING",
  /** systemd-nspawn (or systemctl) could not start the machine: the message carries its last lines */
  START_FAILED: "E_START_FAILED",
  /** a filesystem operation failed (message carries the errno text) */
  IO: "E_IO",
  /** a bug: the message says where */
  INTERNAL: "E_INTERNAL",
} as const;
export type ErrorCode = (typeof ERR)[keyof typeof ERR];

export class AgentError extends Error {
  constructor(
    readonly code: ErrorCode | string,
    message: string,
  ) {
    super(message);
  }
}

/** Wrap a thrown filesystem error as E_IO / E_NOT_FOUND with the path in the message. */
export function ioError(e: unknown, what: string): AgentError {
  if (e instanceof AgentError) return e;
  const err = e as NodeJS.ErrnoException;
  const code = err?.code === "ENOENT" ? ERR.NOT_FOUND : ERR.IO;
  return new AgentError(code, `${what}: ${err?.code ?? ""} ${err?.message ?? String(e)}`.trim());
}
