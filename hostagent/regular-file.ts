// Reading a file named by a request or left on disk, without letting it stall or flood the daemon: the
// agent runs on one thread, so a FIFO (open blocks until a writer comes), a device or a huge file at a
// path it reads would stop every client.
import { closeSync, constants, fstatSync, openSync, readSync } from "node:fs";

/**
 * Read a small regular file without ever blocking: O_NONBLOCK (a FIFO planted at the path opens at once),
 * O_NOFOLLOW unless `follow` (a path an admin named may be a link), then fstat on the open descriptor must
 * say regular file and at most `max` bytes.
 */
export function readRegular(path: string, max: number, follow = false): string {
  const fd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK | (follow ? 0 : constants.O_NOFOLLOW));
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) throw Object.assign(new Error(`${path} is not a regular file`), { code: "ENOTREG" });
    if (st.size > max) throw Object.assign(new Error(`${path} is larger than ${max} bytes`), { code: "EFBIG" });
    const buf = Buffer.alloc(st.size);
    let off = 0;
    while (off < buf.length) {
      const n = readSync(fd, buf, off, buf.length - off, off);
      if (n <= 0) break;
      off += n;
    }
    return buf.toString("utf8", 0, off);
  } finally {
    closeSync(fd);
  }
}

