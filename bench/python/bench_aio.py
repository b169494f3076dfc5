"""peeklock.aio figures, each printed beside baselines measured in the same run (never
asserted):

  1. client CPU per message (send + peek-lock + complete) with 64 concurrent consumers:
     peeklock.aio (64 tasks, one client), the blocking client with 64 threads, and a
     pure-Python aiohttp client doing the same REST calls (64 tasks, one session).
     Targets (issue 17): within 1.2x of the blocking client, at least 5x less than aiohttp.
  2. event-loop lag p99 with 1,000 outstanding long polls (target < 5 ms), beside the lag
     of the idle loop and of aiohttp holding the same polls; memory per outstanding
     operation (process RSS growth / polls).
  3. locks kept while the loop is blocked (time.sleep) for 3 lock durations: peeklock.aio
     (the C renewer, off the loop) against a renewer written as the official SDK's
     asyncio AutoLockRenewer (one task per message on the loop). Target: 0 lost.

All against one local emulator (a separate process, pinned to its own CPU, not counted). CPU
is this process's CPU time (all its threads) over the phase, divided by the messages; each
client first runs one message per consumer untimed, so every side has its connections open
and its token made before the clock starts. With --rounds N the three clients run N times in
turn (the order rotating from round to round) and the medians are printed, with the median
of the per-round ratios.

    .venv/bin/python bench/python/bench_aio.py [--messages 2000] [--consumers 64] [--rounds 1]
                                               [--polls 1000] [--locks 20] [--lock 2]
                                               [--only cpu|lag|blocked] [--instructions 640]
                                               [--before DIR]

With --before DIR (a copy of the package, e.g. an earlier commit's, installed with
``pip install --no-deps --target DIR .``) the CPU figure also runs peeklock.aio from DIR, in the same
rounds: both peeklock.aio sides then run in a process of their own (this script, --child), and the
paired medians of the two are printed.

With --instructions N it also counts the user-space instructions per message of the thread that
runs the event loop on the peeklock.aio side (N messages after the warm-up, under callgrind; needs
valgrind; of each side with --before): the loop-side figure without the machine's load in it
(repeats to about 1%).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from typing import Any, Callable, Dict, List, Optional, Tuple

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def p99(xs: List[float]) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * 0.99))]


async def loop_lag(samples: int = 300, interval: float = 0.005) -> float:
    """p99 of how late a 5 ms sleep wakes (ms)."""
    lags = []
    for _ in range(samples):
        t = time.perf_counter()
        await asyncio.sleep(interval)
        lags.append(time.perf_counter() - t - interval)
    return p99(lags) * 1000


# ------------------------------------------------------------ 1. CPU per message

# Each returns (process CPU, CPU of the thread that ran the loop or started the
# workers) per message, in seconds.
Cpu = Tuple[float, float]


def clocks() -> Tuple[float, float]:
    return time.process_time(), time.thread_time()


def per_message(t0: Tuple[float, float], t1: Tuple[float, float], msgs: int) -> Cpu:
    return (t1[0] - t0[0]) / msgs, (t1[1] - t0[1]) / msgs


async def cpu_aio(emu: Any, queue: str, n: int, consumers: int, mark: Callable[[], Any] = lambda: None) -> Cpu:
    """mark() is called just before and after the timed phase (--instructions)."""
    import peeklock.aio

    c = peeklock.aio.Client.from_connection_string(emu.connection_string)
    per = n // consumers

    async def worker(count: int) -> None:
        for i in range(count):
            await c.send(queue, b"x" * 256, properties={"Index": i})
            msg = await c.peek_lock(queue, timeout=5)
            assert msg is not None
            msg.body
            await msg.complete()

    await asyncio.gather(*(worker(1) for _ in range(consumers)))  # warm-up
    mark()
    t0 = clocks()
    await asyncio.gather(*(worker(per) for _ in range(consumers)))
    t1 = clocks()
    mark()
    await c.aclose()
    return per_message(t0, t1, per * consumers)


def child_env(package: Optional[str]) -> Dict[str, str]:
    """The environment of a --child process that imports peeklock from package (a
    directory), or from where this one does."""
    env = dict(os.environ)
    if package:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package, env.get("PYTHONPATH")) if p)
    return env


def child_cmd(emu: Any, queue: str, n: int, consumers: int) -> List[str]:
    return [sys.executable, os.path.abspath(__file__), "--child", emu.connection_string, queue, str(n), str(consumers)]


def cpu_aio_child(emu: Any, queue: str, n: int, consumers: int, package: Optional[str] = None) -> Cpu:
    """cpu_aio in a process of its own (peeklock from package: see child_env)."""
    out = subprocess.run(
        child_cmd(emu, queue, n, consumers), env=child_env(package), check=True, capture_output=True, text=True
    ).stdout.split()
    return float(out[-2]), float(out[-1])


def loop_instructions(emu: Any, n: int, consumers: int, package: Optional[str] = None) -> float:
    """User-space instructions per message on the loop's thread, cpu_aio under
    callgrind: it dumps a part per thread at each getppid() (the marks), part 2
    of thread 1 is the timed phase."""
    queue = "cpu-aio-instructions"
    emu.create_queue(queue, lock_duration=120)
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "aio.out")
        subprocess.run(
            ["valgrind", "--tool=callgrind", "--separate-threads=yes", "--dump-before=getppid"]
            + [f"--callgrind-out-file={out}"]
            + child_cmd(emu, queue, n, consumers),
            env=child_env(package),
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        emu.delete_entity(queue)
        with open(out + ".2-01") as f:
            total = next(int(line.split()[1]) for line in f if line.startswith(("summary: ", "totals: ")))
    return total / (n // consumers * consumers)


def child(argv: List[str]) -> int:
    """--child CONNECTION_STRING QUEUE N CONSUMERS: cpu_aio alone, marked (for
    callgrind); prints its CPU per message (whole process, loop thread)."""

    class Emu:
        connection_string = argv[0]

    cpu = run(cpu_aio, Emu, argv[1], int(argv[2]), int(argv[3]), os.getppid)
    print(cpu[0], cpu[1])
    return 0


def cpu_sync(emu: Any, queue: str, n: int, consumers: int) -> Cpu:
    import peeklock

    c = peeklock.Client.from_connection_string(emu.connection_string, pool_size=consumers)
    per = n // consumers
    warm = threading.Barrier(consumers + 1)
    start = threading.Barrier(consumers + 1)

    def one(i: int) -> None:
        c.send(queue, b"x" * 256, properties={"Index": i})
        msg = c.peek_lock(queue, timeout=5)
        assert msg is not None
        msg.body
        msg.complete()

    def worker() -> None:
        one(0)  # warm-up
        warm.wait()
        start.wait()
        for i in range(per):
            one(i)

    threads = [threading.Thread(target=worker) for _ in range(consumers)]
    for t in threads:
        t.start()
    warm.wait()
    t0 = clocks()
    start.wait()
    for t in threads:
        t.join()
    t1 = clocks()
    c.close()
    return per_message(t0, t1, per * consumers)


def sas(emu: Any) -> str:
    uri = urllib.parse.quote(emu.endpoint + "/", safe="").lower()
    se = int(time.time()) + 3600
    sig = base64.b64encode(hmac.new(emu.key.encode(), f"{uri}\n{se}".encode(), hashlib.sha256).digest()).decode()
    return f"SharedAccessSignature sr={uri}&sig={urllib.parse.quote(sig, safe='')}&se={se}&skn={emu.key_name}"


async def cpu_aiohttp(emu: Any, queue: str, n: int, consumers: int) -> Cpu:
    import json

    import aiohttp

    base = emu.endpoint
    conn = aiohttp.TCPConnector(limit=consumers * 2)
    s = aiohttp.ClientSession(connector=conn, headers={"Authorization": sas(emu)})
    per = n // consumers

    async def worker(count: int) -> None:
        for i in range(count):
            async with s.post(
                f"{base}/{queue}/messages",
                data=b"x" * 256,
                headers={"Content-Type": "application/octet-stream", "Index": str(i), "BrokerProperties": "{}"},
            ) as r:
                r.raise_for_status()
            async with s.post(f"{base}/{queue}/messages/head", params={"timeout": "5"}) as r:
                r.raise_for_status()
                bp = json.loads(r.headers["BrokerProperties"])
                await r.read()
                bp["MessageId"], bp["SequenceNumber"]
                loc = r.headers["Location"]
            async with s.delete(base + urllib.parse.urlsplit(loc).path) as r:
                r.raise_for_status()

    await asyncio.gather(*(worker(1) for _ in range(consumers)))  # warm-up
    t0 = clocks()
    await asyncio.gather(*(worker(per) for _ in range(consumers)))
    t1 = clocks()
    await s.close()
    return per_message(t0, t1, per * consumers)


# ------------------------------------------------------------ 2. loop lag, memory


async def lag_aio(emu: Any, queue: str, polls: int) -> Dict[str, float]:
    import peeklock.aio

    c = peeklock.aio.Client.from_connection_string(emu.connection_string)
    await c.peek_lock(queue, timeout=0)
    rss0 = rss_bytes()
    tasks = [asyncio.ensure_future(c.peek_lock(queue, timeout=60)) for _ in range(polls)]
    deadline = time.monotonic() + 60
    while c.stats()["aio"]["inflight"] < polls and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    await asyncio.sleep(2)  # as long as aiohttp's polls are given to settle
    rss1 = rss_bytes()
    lag = await loop_lag()
    op_bytes = c.stats()["aio"]["op_bytes"]
    await c.aclose()
    await asyncio.gather(*tasks, return_exceptions=True)
    return {"lag": lag, "rss_per_op": (rss1 - rss0) / polls, "engine_bytes": float(op_bytes)}


async def lag_aiohttp(emu: Any, queue: str, polls: int) -> Dict[str, float]:
    import aiohttp

    s = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=polls + 10), headers={"Authorization": sas(emu)})

    async def poll() -> None:
        async with s.post(f"{emu.endpoint}/{queue}/messages/head", params={"timeout": "60"}) as r:
            await r.read()

    rss0 = rss_bytes()
    tasks = [asyncio.ensure_future(poll()) for _ in range(polls)]
    await asyncio.sleep(2)  # let them connect (aiohttp has no in-flight counter)
    rss1 = rss_bytes()
    lag = await loop_lag()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await s.close()
    return {"lag": lag, "rss_per_op": (rss1 - rss0) / polls}


# ------------------------------------------------------------ 3. a blocked loop


async def blocked_aio(emu: Any, queue: str, locks: int, lock_s: float) -> int:
    import peeklock
    import peeklock.aio

    c = peeklock.aio.Client.from_connection_string(emu.connection_string)
    await c.send_batch(queue, [b"x"] * locks)
    msgs = [await c.peek_lock(queue, timeout=5) for _ in range(locks)]
    lost = 0

    async def hold(msg: Any) -> None:
        nonlocal lost
        try:
            async with msg:
                await gate.wait()
        except peeklock.LockLostError:
            lost += 1

    gate = asyncio.Event()
    tasks = [asyncio.ensure_future(hold(m)) for m in msgs]
    await asyncio.sleep(0)
    time.sleep(3 * lock_s)  # the handler blocks the loop
    gate.set()
    await asyncio.gather(*tasks)
    await c.aclose()
    return lost


async def blocked_task_renewer(emu: Any, queue: str, locks: int, lock_s: float) -> int:
    """The official SDK's asyncio AutoLockRenewer pattern: a task per message on the
    loop sleeps until shortly before expiry, then renews."""
    import peeklock
    import peeklock.aio

    c = peeklock.aio.Client.from_connection_string(emu.connection_string)
    await c.send_batch(queue, [b"x"] * locks)
    msgs = [await c.peek_lock(queue, timeout=5) for _ in range(locks)]
    stop = asyncio.Event()

    async def renew(msg: Any) -> None:
        while not stop.is_set():
            await asyncio.sleep(max(0.0, msg.lock_remaining - 1.0))  # renew 1 s before expiry
            if stop.is_set():
                return
            try:
                await msg.renew_lock()
            except peeklock.Error:
                return

    renewers = [asyncio.ensure_future(renew(m)) for m in msgs]
    await asyncio.sleep(0)
    time.sleep(3 * lock_s)  # the handler blocks the loop
    stop.set()
    lost = 0
    for m in msgs:
        try:
            await m.complete()
        except peeklock.LockLostError:
            lost += 1
    for r in renewers:
        r.cancel()
    await asyncio.gather(*renewers, return_exceptions=True)
    await c.aclose()
    return lost


def run(coro_fn: Callable[..., Any], *args: Any) -> Any:
    return asyncio.run(coro_fn(*args))


AIO, SYNC, AIOHTTP = "peeklock.aio (tasks)", "peeklock (threads)", "aiohttp (tasks)"
BEFORE = "peeklock.aio (--before)"


def cpu_figures(emu: Any, n: int, k: int, rounds: int, before: Optional[str] = None) -> None:
    print(
        f"\n1. client CPU per message (send + peek-lock + complete), {k} concurrent consumers, "
        f"{n} messages" + (f", {rounds} interleaved rounds (medians)" if rounds > 1 else "")
    )
    sides: List[Tuple[str, Callable[[], Cpu]]] = [
        (AIO, lambda: run(cpu_aio, emu, "cpu-aio", n, k)),
        (SYNC, lambda: cpu_sync(emu, "cpu-sync", n, k)),
        (AIOHTTP, lambda: run(cpu_aiohttp, emu, "cpu-aiohttp", n, k)),
    ]
    if before:  # both peeklock.aio sides in a process of their own
        sides[0] = (AIO, lambda: cpu_aio_child(emu, "cpu-aio", n, k))
        sides.insert(1, (BEFORE, lambda: cpu_aio_child(emu, "cpu-aio-before", n, k, before)))
    got: Dict[str, List[Cpu]] = {name: [] for name, _ in sides}
    for r in range(rounds):
        for name, fn in sides[r % len(sides) :] + sides[: r % len(sides)]:
            got[name].append(fn())
    med = {name: statistics.median(v[0] for v in got[name]) * 1e6 for name in got}
    for name in got:
        loop = statistics.median(v[1] for v in got[name]) * 1e6
        split = f"  (loop thread {loop:.1f}, other threads {med[name] - loop:.1f})" if name in (AIO, BEFORE) else ""
        spread = (
            f"  [{min(v[0] for v in got[name]) * 1e6:.0f}..{max(v[0] for v in got[name]) * 1e6:.0f}]"
            if rounds > 1
            else ""
        )
        print(f"   {name:24s} {med[name]:8.1f} us/message{spread}{split}")
    ratio_sync = statistics.median(a[0] / s[0] for a, s in zip(got[AIO], got[SYNC]))
    ratio_http = statistics.median(h[0] / a[0] for a, h in zip(got[AIO], got[AIOHTTP]))
    print(
        f"   peeklock.aio / blocking client = {ratio_sync:.2f}x (target <= 1.2x); "
        f"aiohttp / peeklock.aio = {ratio_http:.1f}x (target >= 5x)"
    )
    if before:
        paired = [(a[0] - b[0], a[1] - b[1], a[1] / b[1]) for a, b in zip(got[AIO], got[BEFORE])]
        print(
            f"   peeklock.aio against --before, paired medians: {statistics.median(p[0] for p in paired) * 1e6:+.1f} "
            f"us/message, loop thread {statistics.median(p[1] for p in paired) * 1e6:+.1f} us "
            f"({statistics.median(p[2] for p in paired):.2f}x)"
        )


def main() -> int:
    if sys.argv[1:2] == ["--child"]:
        return child(sys.argv[2:])
    ap = argparse.ArgumentParser(description="peeklock.aio: CPU, loop lag, locks on a blocked loop")
    ap.add_argument("--messages", type=int, default=2000, help="messages per CPU run (default 2000)")
    ap.add_argument("--consumers", type=int, default=64, help="concurrent consumers (default 64)")
    ap.add_argument("--polls", type=int, default=1000, help="outstanding long polls (default 1000)")
    ap.add_argument("--locks", type=int, default=20, help="locks held on the blocked loop (default 20)")
    ap.add_argument("--lock", type=float, default=2, help="lock duration, s (default 2)")
    ap.add_argument("--uvloop", action="store_true", help="run the async sides on uvloop")
    ap.add_argument(
        "--rounds", type=int, default=1, help="interleaved rounds of the CPU figures; medians printed (default 1)"
    )
    ap.add_argument("--only", choices=("cpu", "lag", "blocked"), help="run one part only")
    ap.add_argument(
        "--instructions",
        type=int,
        default=0,
        metavar="N",
        help="also count the loop thread's instructions per message of peeklock.aio over N messages "
        "(callgrind; needs valgrind)",
    )
    ap.add_argument(
        "--before",
        metavar="DIR",
        help="also run peeklock.aio from the package in DIR (pip install --no-deps --target DIR) in the CPU rounds",
    )
    args = ap.parse_args()
    from peeklock.testing import Emulator  # the installed package (pip install .)
    import resource  # sockets for the polls, here and in the emulator

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 2 * args.polls + 256
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want if hard == resource.RLIM_INFINITY else min(want, hard), hard))
    if args.uvloop:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    emu = Emulator.start()
    sys.path.insert(0, os.path.join(ROOT, "bench"))
    try:
        from cpus import describe, pin_server

        pin_server(emu.proc.pid)
        print("cpus:", describe())
    except ImportError:
        pass
    try:
        n, k = args.messages, args.consumers
        for q in ("cpu-aio", "cpu-aio-before", "cpu-sync", "cpu-aiohttp", "polls", "polls-aiohttp"):
            emu.create_queue(q, lock_duration=60)
        if args.only in (None, "cpu"):
            cpu_figures(emu, n, k, args.rounds, args.before)
            if args.instructions and shutil.which("valgrind"):
                for name, package in [("peeklock.aio", None)] + ([("--before", args.before)] if args.before else []):
                    ir = loop_instructions(emu, args.instructions, k, package)
                    print(
                        f"   {name} loop thread: {ir:,.0f} instructions/message "
                        f"(callgrind, {args.instructions} messages)"
                    )
            elif args.instructions:
                print("   instruction count skipped: valgrind is missing")
        if args.only in (None, "lag"):
            lag_figures(emu, args.polls)
        if args.only in (None, "blocked"):
            blocked_figures(emu, args.locks, args.lock)
    finally:
        emu.stop()
    return 0


def lag_figures(emu: Any, polls: int) -> None:
    print(f"\n2. event-loop lag p99 with {polls} outstanding long polls")
    idle = run(loop_lag)
    la = run(lag_aio, emu, "polls", polls)
    lh = run(lag_aiohttp, emu, "polls-aiohttp", polls)
    print(f"   idle loop                {idle:8.2f} ms")
    print(
        f"   peeklock.aio             {la['lag']:8.2f} ms (target < 5 ms); memory per outstanding "
        f"poll {la['rss_per_op'] / 1024:.1f} KiB RSS (engine state {la['engine_bytes']:.0f} B)"
    )
    print(
        f"   aiohttp                  {lh['lag']:8.2f} ms; memory per outstanding poll "
        f"{lh['rss_per_op'] / 1024:.1f} KiB RSS"
    )


def blocked_figures(emu: Any, locks: int, lock: float) -> None:
    print(f"\n3. locks lost while the loop is blocked for 3 lock durations ({locks} locks, {lock:g} s lock)")
    emu.create_queue("blocked-aio", lock_duration=lock)
    emu.create_queue("blocked-task", lock_duration=lock)
    lost_aio = run(blocked_aio, emu, "blocked-aio", locks, lock)
    lost_task = run(blocked_task_renewer, emu, "blocked-task", locks, lock)
    print(f"   peeklock.aio (C renewer)          {lost_aio:3d} lost of {locks} (target 0)")
    print(f"   asyncio task per message (SDK)    {lost_task:3d} lost of {locks}")


if __name__ == "__main__":
    sys.exit(main())
