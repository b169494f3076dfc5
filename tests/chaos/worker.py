"""One chaos worker process: ``Client.process`` with auto-renewal over one queue.

Every handler execution appends JSON lines to a per-worker log, each one
flushed and fsync'd before the code goes on, so a SIGKILL loses nothing that
was written:

    {"ev": "start",   "x": exec_id, "mid", "seq", "dc", "w", "t"}
    {"ev": "end",     "x", "mid", "w", "t0", "t1", "lost_at"}   (before the handler returns)
    {"ev": "outcome", "x", "mid", "w", "outcome", "t", "remaining", "settle_s", "err"}
    {"ev": "stats",   "w", "t", "renewals", "events", "renewer", "summary"}

``outcome`` is what the settlement reported: "completed", "lost" (the renewer
reported the lock lost while the handler ran), "lost-at-settle" (complete
answered lock lost after the handler finished), "settle-error" (complete failed
for another reason, after retries), "abandoned" (the handler raised) or
"drained" (a graceful stop abandoned the message while the handler still ran).

The handler works for the message's ``work_ms`` property, polling the lock
state every 20 ms; when the lock is no longer held (the renewer reported it
lost, or a graceful stop's drain is abandoning it) it stops working at once
(that moment is ``lost_at``, the state ``released``), as a real handler that
honours lock loss would. Messages with ``poison=true`` always raise.

Run by tests/chaos/chaos.py; not meant to be started by hand.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
import time
from typing import Any, Dict, Optional

import peeklock
from peeklock.client import Message
from peeklock.errors import Error, LockLostError


class DurableLog:
    """Append-only JSON lines; every record is on disk (fsync) when write returns."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self.lock = threading.Lock()

    def write(self, rec: Dict[str, Any]) -> None:
        data = (json.dumps(rec, separators=(",", ":")) + "\n").encode()
        with self.lock:
            os.write(self.fd, data)
            os.fsync(self.fd)


class PoisonError(Exception):
    """Raised by the handler for messages marked poison (never completes)."""


class LockNoticedLost(Exception):
    """Raised by the handler when it saw the renewer report the lock lost."""


def main(argv: Optional[list] = None) -> int:
    p = argparse.ArgumentParser(description="peeklock chaos worker (started by chaos.py)")
    p.add_argument("--conn", required=True, help="connection string")
    p.add_argument("--entity", required=True)
    p.add_argument("--log", required=True, help="durable per-worker log (JSON lines)")
    p.add_argument("--worker", required=True, help="worker id written into every record")
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--max-renew", type=float, default=600.0)
    p.add_argument("--poll-timeout", type=float, default=2.0)
    p.add_argument("--drain-timeout", type=float, default=30.0)
    p.add_argument("--request-timeout", type=float, default=10.0)
    p.add_argument("--poll-ms", type=float, default=20.0, help="lock-state polling of the handler")
    a = p.parse_args(argv)

    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format=f"%(asctime)s worker {a.worker} %(levelname)s %(message)s"
    )
    out = DurableLog(a.log)
    wid = a.worker
    local = threading.local()
    counter = [0]
    counter_lock = threading.Lock()
    poll = a.poll_ms / 1000.0

    def handler(msg: Message) -> None:
        with counter_lock:
            counter[0] += 1
            xid = f"{wid}:{counter[0]}"
        local.xid = xid
        mid = msg.message_id
        props = msg.properties
        work = float(props.get("work_ms", 0)) / 1000.0
        t0 = time.time()
        out.write(
            {
                "ev": "start",
                "x": xid,
                "mid": mid,
                "seq": msg.sequence_number,
                "dc": msg.delivery_count,
                "w": wid,
                "t": t0,
            }
        )
        deadline = t0 + work
        lost_at = None
        released = None
        while True:
            now = time.time()
            st = msg.state
            if st != "held":
                # "lost": the renewer reported the lock lost; "settling"/"settled": the
                # processor's drain is abandoning it. Either way: stop working now.
                lost_at = now
                released = st
                break
            if now >= deadline:
                break
            time.sleep(min(poll, deadline - now))
        t1 = time.time()
        out.write(
            {"ev": "end", "x": xid, "mid": mid, "w": wid, "t0": t0, "t1": t1, "lost_at": lost_at, "released": released}
        )
        if lost_at is not None:
            raise LockNoticedLost(f"{mid}: lock {released}")
        if props.get("poison") is True:
            raise PoisonError(mid)

    # Record how each execution was settled: wrap the context manager's exit
    # (the processor runs every handler inside ``with msg:``).
    orig_exit = Message.__exit__

    def recording_exit(self: Message, et: Any, ev: Any, tb: Any) -> Any:
        xid = getattr(local, "xid", None)
        local.xid = None
        state_before = self.state
        remaining = self.lock_remaining
        t_s = time.time()
        rec: Dict[str, Any] = {
            "ev": "outcome",
            "x": xid,
            "mid": self.message_id,
            "w": wid,
            "state_before": state_before,
            "remaining": remaining,
        }
        try:
            r = orig_exit(self, et, ev, tb)
        except LockLostError as e:
            rec["outcome"] = "lost" if state_before == "lost" else "lost-at-settle"
            rec["err"] = str(e)
            raise
        except Error as e:
            rec["outcome"] = "settle-error"
            rec["err"] = str(e)
            raise
        except BaseException as e:
            rec["outcome"] = "exit-error"
            rec["err"] = repr(e)
            raise
        else:
            st = self.state
            if state_before in ("settled", "settling"):
                # settled by someone else before the handler returned: the processor's
                # drain abandoned it (graceful stop)
                rec["outcome"] = "drained"
            elif et is None:
                rec["outcome"] = "completed" if st == "settled" else "not-settled:" + st
            else:
                rec["outcome"] = "lost" if st == "lost" else "abandoned"
                rec["err"] = et.__name__
            return r
        finally:
            t = time.time()
            rec["t"] = t
            rec["settle_s"] = t - t_s
            if xid is not None:
                out.write(rec)

    Message.__exit__ = recording_exit  # type: ignore[assignment]

    client = peeklock.Client.from_connection_string(a.conn, request_timeout=a.request_timeout, max_renew=a.max_renew)

    def progress(s: Any) -> None:
        st = client.stats()
        ren = {k: v for k, v in st.get("renewer", {}).items() if k != "slack_buckets"}
        out.write(
            {
                "ev": "stats",
                "w": wid,
                "t": time.time(),
                "renewals": s.renewals,
                "events": st.get("events", {}),
                "renewer": ren,
                "summary": {
                    "received": s.received,
                    "processed": s.processed,
                    "failed": s.failed,
                    "lost": s.lost,
                    "errors": s.errors,
                    "redelivered": s.redelivered,
                    "abandoned_on_drain": s.abandoned_on_drain,
                },
            }
        )

    out.write({"ev": "hello", "w": wid, "t": time.time(), "pid": os.getpid()})
    summary = client.process(
        a.entity,
        handler,
        concurrency=a.concurrency,
        max_renew=a.max_renew,
        poll_timeout=a.poll_timeout,
        drain_timeout=a.drain_timeout,
        on_progress=progress,
        progress_interval=1.0,
        retry_delay=0,
    )  # failures are abandoned at once, as they were
    progress(summary)
    client.close()
    out.write({"ev": "bye", "w": wid, "t": time.time(), "stopped_by": summary.stopped_by})
    return 0


if __name__ == "__main__":
    sys.exit(main())
