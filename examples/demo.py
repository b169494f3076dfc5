"""The peeklock demo: a worker with long handlers kept alive by auto-renewal.

Starts the local emulator, sends a few hundred messages to a queue whose lock
lasts only 5 seconds, and processes them with client.process(): most handlers
are quick, some outlast the lock several times (the C renewer keeps their locks
alive), and some fail on their first delivery (abandoned, redelivered, then
succeed). A live progress line runs meanwhile; the closing summary is checked
against the emulator's own state: every message completed exactly once, no
lock lost.

    bash scripts/demo.sh            # or: .venv/bin/python examples/demo.py [--messages N]
"""

from __future__ import annotations

import argparse
import random
import sys
import threading
import time

import peeklock
from peeklock.testing import Emulator

LOCK = 5


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=300)
    ap.add_argument("--slow", type=int, default=10, help="handlers that outlast the lock 3x")
    ap.add_argument("--fail", type=int, default=30, help="handlers that fail once")
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    rnd = random.Random(args.seed)

    print(f"peeklock {peeklock.__version__} (C core {peeklock.version()})")
    emu = Emulator.start("--queue", "orders", "--lock-duration", str(LOCK))
    print(f"emulator: {emu.endpoint} (queue 'orders', lock duration {LOCK} s)")
    try:
        client = peeklock.Client.from_connection_string(emu.connection_string, max_renew=120)
        ids = list(range(args.messages))
        slow = set(rnd.sample(ids, args.slow))
        fail = set(rnd.sample([i for i in ids if i not in slow], args.fail))
        for start in range(0, args.messages, 50):
            client.send_batch(
                "orders",
                [
                    peeklock.OutgoingMessage(
                        f"order {i}".encode(),
                        message_id=f"order-{i}",
                        properties={"kind": "slow" if i in slow else "quick"},
                    )
                    for i in ids[start : start + 50]
                ],
            )
        print(
            f"sent {args.messages} messages: {len(slow)} slow handlers "
            f"({3 * LOCK}-{3 * LOCK + 3} s, several lock durations), {len(fail)} fail once\n"
        )

        failed_once: set = set()
        lock = threading.Lock()
        stop = threading.Event()
        total = args.messages

        def handler(msg: peeklock.Message) -> None:
            i = int(msg.message_id.split("-")[1])
            if i in slow:
                time.sleep(rnd.uniform(3 * LOCK, 3 * LOCK + 3))  # outlasts the lock ~3x
            else:
                time.sleep(rnd.uniform(0.05, 0.6))
            if i in fail:
                with lock:
                    first = i not in failed_once
                    failed_once.add(i)
                if first:
                    raise RuntimeError(f"order {i}: payment service unavailable")

        tty = sys.stdout.isatty()
        last_line = [-10.0]

        def progress(s: peeklock.ProcessSummary) -> None:
            done = s.processed
            if done >= total:
                stop.set()
            # On a terminal the line is redrawn in place; in a log, one line every 5 s.
            if not tty and (last_line[0] == float("inf") or (s.elapsed - last_line[0] < 5 and done < total)):
                return
            last_line[0] = float("inf") if done >= total else s.elapsed
            bar = "#" * int(30 * done / total)
            start, end = ("\r", " ") if tty else ("", "\n")
            sys.stdout.write(
                f"{start}[{bar:<30}] {done:4d}/{total} processed  "
                f"failed {s.failed:3d}  renewals {s.renewals:3d}  "
                f"in flight {s.in_flight:2d}  lost {s.lost}  {s.elapsed:5.1f} s"
                f"{end}"
            )
            sys.stdout.flush()

        summary = client.process(
            "orders",
            handler,
            concurrency=args.concurrency,
            max_renew=120,
            poll_timeout=1,
            stop_event=stop,
            on_progress=progress,
            progress_interval=0.25,
        )
        print("\n")
        state = emu.entity_state("orders")
        completions = state["completed"]
        duplicates = sum(n - 1 for n in completions.values() if n > 1)
        stats = client.stats()
        rows = [
            ("processed (completed)", summary.processed),
            ("completed per the emulator", len(completions)),
            ("renewals (C renewer)", stats["renewer"]["renewals"]),
            ("abandoned (handler failed)", summary.failed),
            ("redelivered", summary.redelivered),
            ("lost locks", summary.lost + stats["lost"]),
            ("duplicate completions", duplicates),
            ("left in the queue", state["message_count"]),
            ("renew round trip p99", f"{stats['renewer']['rtt_p99_ms']:.1f} ms"),
            ("elapsed", f"{summary.elapsed:.1f} s"),
        ]
        width = max(len(k) for k, _ in rows)
        print("summary")
        for k, v in rows:
            print(f"  {k:<{width}}  {v}")
        ok = (
            summary.processed == total
            and len(completions) == total
            and duplicates == 0
            and summary.lost == 0
            and stats["lost"] == 0
            and state["message_count"] == 0
        )
        print("\nOK: every message completed exactly once, no lock lost" if ok else "\nFAILED")
        client.close()
        return 0 if ok else 1
    finally:
        emu.stop()


if __name__ == "__main__":
    sys.exit(main())
