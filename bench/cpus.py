"""CPU placement for the benchmarks: the server under test (the emulator, the nginx null
responder, the bare aiohttp baseline) on one CPU, the measured clients on the others.

In production the client and Service Bus are on different machines. Here they share two cores,
and when the scheduler puts the server on the client's core between two requests, the server's
work evicts the client's code and data from the caches. The client then pays for cache misses
that no deployment would have. The cost grows with the code a request touches, so it lands on
peeklock more than on the smaller baseline. It also swings from round to round. With the server
held on its own CPU, every side (peeklock, the raw libcurl or C-core baseline, the peers) is
measured the same way, and the figures are steadier.

    from cpus import pin_client, pin_server, describe
    pin_client()            # this process; the threads and processes it starts later inherit it
    pin_server(pid)         # every thread of an already running server process

Off when the machine has one CPU, or with PEEKLOCK_BENCH_PIN=0 in the environment.
"""

from __future__ import annotations

import os
from typing import Optional, Set, Tuple


def _split() -> Optional[Tuple[Set[int], Set[int]]]:
    if os.environ.get("PEEKLOCK_BENCH_PIN", "1") == "0" or not hasattr(os, "sched_setaffinity"):
        return None
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None
    return set(cpus[:-1]), {cpus[-1]}


_PLACEMENT = _split()  # from the CPUs this process may use at import, before any pinning


def placement() -> Optional[Tuple[Set[int], Set[int]]]:
    """(client CPUs, server CPUs), or None when pinning is off."""
    return _PLACEMENT


def pin_client() -> None:
    p = placement()
    if p is not None:
        os.sched_setaffinity(0, p[0])


def pin_server(pid: int) -> None:
    p = placement()
    if p is None:
        return
    try:
        tids = [int(t) for t in os.listdir("/proc/%d/task" % pid)]
    except OSError:
        tids = [pid]
    for tid in tids:
        try:
            os.sched_setaffinity(tid, p[1])
        except OSError:
            pass  # a thread that ended meanwhile


def describe() -> str:
    p = placement()
    if p is None:
        return "not pinned (one CPU, or PEEKLOCK_BENCH_PIN=0)"
    return "clients on CPU %s, server under test on CPU %s (PEEKLOCK_BENCH_PIN=0 turns this off)" % (
        ",".join(map(str, sorted(p[0]))),
        ",".join(map(str, sorted(p[1]))),
    )


if __name__ == "__main__":
    # For shell scripts (bench/c/run.sh): "CLIENT_CPUS SERVER_CPUS" as taskset lists, or nothing
    # when pinning is off; with --describe, the line describe() gives.
    import sys

    if sys.argv[1:] == ["--describe"]:
        print(describe())
    elif _PLACEMENT is not None:
        print(" ".join(",".join(map(str, sorted(s))) for s in _PLACEMENT))
