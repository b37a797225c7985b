// rtnetlink multicast subscription read through Bun's event loop (no polling).
// The kernel drops events when the socket buffer overflows and reports ENOBUFS; the stream then ends, and
// we open a new socket and tell the owner to re-dump (`onResync`), since any event may have been lost.
import { closeFd } from "../common/libc.ts";
import { netlinkSocket } from "../common/libc-net.ts";
import { type NlMsg, splitMessages } from "./netlink.ts";

export interface Subscription {
  close(): void;
}

export function subscribe(groups: number, onMessages: (msgs: NlMsg[]) => void, onResync: (why: string) => void, rcvbuf = 1 << 20): Subscription {
  let closed = false;
  let fd = -1;
  let reader: { cancel(): Promise<void> } | undefined;

  const start = (): void => {
    fd = netlinkSocket({ groups, nonblock: true, rcvbuf });
    const myFd = fd;
    const r = Bun.file(fd).stream().getReader();
    reader = r;
    void (async () => {
      let why = "event stream ended";
      try {
        for (;;) {
          const { done, value } = await r.read();
          if (done || closed) break;
          onMessages(splitMessages(value));
        }
      } catch (e) {
        why = `event stream error: ${(e as { code?: string }).code ?? String(e)}`;
      }
      if (closed) return;
      // lost events (ENOBUFS) or a dead stream: reopen, then let the owner re-read the whole state
      closeFd(myFd);
      start();
      onResync(why);
    })();
  };
  start();
  return {
    close(): void {
      if (closed) return;
      closed = true;
      void reader?.cancel().catch(() => {});
      closeFd(fd);
    },
  };
}
