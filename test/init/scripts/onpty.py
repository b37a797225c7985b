# Runs a command on a new pseudo-terminal (it becomes the session's controlling terminal) and drives
# it from stdin lines: "write HEX" types bytes at the terminal, "winsize ROWS COLS" resizes it (the kernel
# sends SIGWINCH to the foreground process group), "hangup" closes the terminal (the kernel sends SIGHUP
# to the session leader and the foreground group). The terminal's output goes to stdout; at the end
# "[pty] exit N" (N = the command's exit status, -S when killed by signal S).
import fcntl, os, pty, select, struct, sys, termios

argv = sys.argv[1:]
pid, fd = pty.fork()
if pid == 0:
    os.execvp(argv[0], argv)
out = sys.stdout.buffer
ctl = sys.stdin.fileno()
hung = False
while not hung:
    fds = [fd] + ([ctl] if ctl >= 0 else [])
    r, _, _ = select.select(fds, [], [], 0.1)
    if fd in r:
        try:
            data = os.read(fd, 65536)
        except OSError:
            data = b""
        if not data:
            break
        out.write(data)
        out.flush()
    if ctl >= 0 and ctl in r:
        line = os.read(ctl, 4096)
        if not line:
            ctl = -1
            continue
        for cmd in line.decode().splitlines():
            w = cmd.split()
            if not w:
                continue
            if w[0] == "write":
                os.write(fd, bytes.fromhex(w[1]))
            elif w[0] == "hangup":
                os.close(fd)
                hung = True
            elif w[0] == "winsize":
                fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", int(w[1]), int(w[2]), 0, 0))
_, st = os.waitpid(pid, 0)
out.write(f"\n[pty] exit {os.waitstatus_to_exitcode(st)}\n".encode())
out.flush()
