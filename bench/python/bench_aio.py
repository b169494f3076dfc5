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

All against one local emulator (a separate process, not counted). CPU is this process's
CPU time (all threads) over the phase, divided by the messages.

    .venv/bin/python bench/python/bench_aio.py [--messages 2000] [--consumers 64]
                                               [--polls 1000] [--locks 20] [--lock 2]
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import os
import sys
import threading
import time
import urllib.parse
from typing import Any, Callable, Dict, List

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

async def cpu_aio(emu: Any, queue: str, n: int, consumers: int) -> float:
    import peeklock.aio
    c = peeklock.aio.Client.from_connection_string(emu.connection_string)
    await c.send(queue, b"warm")
    m = await c.peek_lock(queue, timeout=5)
    assert m is not None
    await m.complete()
    per = n // consumers

    async def worker() -> None:
        for i in range(per):
            await c.send(queue, b"x" * 256, properties={"Index": i})
            msg = await c.peek_lock(queue, timeout=5)
            assert msg is not None
            msg.body
            await msg.complete()

    t0 = time.process_time()
    await asyncio.gather(*(worker() for _ in range(consumers)))
    t1 = time.process_time()
    await c.aclose()
    return (t1 - t0) / (per * consumers)


def cpu_sync(emu: Any, queue: str, n: int, consumers: int) -> float:
    import peeklock
    c = peeklock.Client.from_connection_string(emu.connection_string, pool_size=consumers)
    per = n // consumers
    start = threading.Barrier(consumers + 1)

    def worker() -> None:
        start.wait()
        for i in range(per):
            c.send(queue, b"x" * 256, properties={"Index": i})
            msg = c.peek_lock(queue, timeout=5)
            assert msg is not None
            msg.body
            msg.complete()

    threads = [threading.Thread(target=worker) for _ in range(consumers)]
    for t in threads:
        t.start()
    t0 = time.process_time()
    start.wait()
    for t in threads:
        t.join()
    t1 = time.process_time()
    c.close()
    return (t1 - t0) / (per * consumers)


def sas(emu: Any) -> str:
    uri = urllib.parse.quote(emu.endpoint + "/", safe="").lower()
    se = int(time.time()) + 3600
    sig = base64.b64encode(hmac.new(emu.key.encode(), f"{uri}\n{se}".encode(),
                                    hashlib.sha256).digest()).decode()
    return (f"SharedAccessSignature sr={uri}&sig={urllib.parse.quote(sig, safe='')}"
            f"&se={se}&skn={emu.key_name}")


async def cpu_aiohttp(emu: Any, queue: str, n: int, consumers: int) -> float:
    import json

    import aiohttp
    base = emu.endpoint
    conn = aiohttp.TCPConnector(limit=consumers * 2)
    s = aiohttp.ClientSession(connector=conn, headers={"Authorization": sas(emu)})
    per = n // consumers

    async def worker() -> None:
        for i in range(per):
            async with s.post(f"{base}/{queue}/messages", data=b"x" * 256,
                              headers={"Content-Type": "application/octet-stream",
                                       "Index": str(i), "BrokerProperties": "{}"}) as r:
                r.raise_for_status()
            async with s.post(f"{base}/{queue}/messages/head", params={"timeout": "5"}) as r:
                r.raise_for_status()
                bp = json.loads(r.headers["BrokerProperties"])
                await r.read()
                bp["MessageId"], bp["SequenceNumber"]
                loc = r.headers["Location"]
            async with s.delete(base + urllib.parse.urlsplit(loc).path) as r:
                r.raise_for_status()

    t0 = time.process_time()
    await asyncio.gather(*(worker() for _ in range(consumers)))
    t1 = time.process_time()
    await s.close()
    return (t1 - t0) / (per * consumers)


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
    await asyncio.sleep(2)              # as long as aiohttp's polls are given to settle
    rss1 = rss_bytes()
    lag = await loop_lag()
    op_bytes = c.stats()["aio"]["op_bytes"]
    await c.aclose()
    await asyncio.gather(*tasks, return_exceptions=True)
    return {"lag": lag, "rss_per_op": (rss1 - rss0) / polls, "engine_bytes": float(op_bytes)}


async def lag_aiohttp(emu: Any, queue: str, polls: int) -> Dict[str, float]:
    import aiohttp
    s = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=polls + 10),
                              headers={"Authorization": sas(emu)})

    async def poll() -> None:
        async with s.post(f"{emu.endpoint}/{queue}/messages/head", params={"timeout": "60"}) as r:
            await r.read()

    rss0 = rss_bytes()
    tasks = [asyncio.ensure_future(poll()) for _ in range(polls)]
    await asyncio.sleep(2)              # let them connect (aiohttp has no in-flight counter)
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
    time.sleep(3 * lock_s)              # the handler blocks the loop
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
            await asyncio.sleep(max(0.0, msg.lock_remaining - 1.0))   # renew 1 s before expiry
            if stop.is_set():
                return
            try:
                await msg.renew_lock()
            except peeklock.Error:
                return

    renewers = [asyncio.ensure_future(renew(m)) for m in msgs]
    await asyncio.sleep(0)
    time.sleep(3 * lock_s)              # the handler blocks the loop
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


def main() -> int:
    ap = argparse.ArgumentParser(description="peeklock.aio: CPU, loop lag, locks on a blocked loop")
    ap.add_argument("--messages", type=int, default=2000, help="messages per CPU run (default 2000)")
    ap.add_argument("--consumers", type=int, default=64, help="concurrent consumers (default 64)")
    ap.add_argument("--polls", type=int, default=1000, help="outstanding long polls (default 1000)")
    ap.add_argument("--locks", type=int, default=20, help="locks held on the blocked loop (default 20)")
    ap.add_argument("--lock", type=float, default=2, help="lock duration, s (default 2)")
    ap.add_argument("--uvloop", action="store_true", help="run the async sides on uvloop")
    args = ap.parse_args()
    from peeklock.testing import Emulator   # the installed package (pip install .)
    import resource                          # sockets for the polls, here and in the emulator
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 2 * args.polls + 256
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want if hard == resource.RLIM_INFINITY
                                                    else min(want, hard), hard))
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
        for q in ("cpu-aio", "cpu-sync", "cpu-aiohttp", "polls", "polls-aiohttp"):
            emu.create_queue(q, lock_duration=60)
        print(f"\n1. client CPU per message (send + peek-lock + complete), {k} concurrent consumers, "
              f"{n} messages")
        us = {
            "peeklock.aio (tasks)": run(cpu_aio, emu, "cpu-aio", n, k) * 1e6,
            "peeklock (threads)": cpu_sync(emu, "cpu-sync", n, k) * 1e6,
            "aiohttp (tasks)": run(cpu_aiohttp, emu, "cpu-aiohttp", n, k) * 1e6,
        }
        for name, v in us.items():
            print(f"   {name:24s} {v:8.1f} us/message")
        a, s_, h = us["peeklock.aio (tasks)"], us["peeklock (threads)"], us["aiohttp (tasks)"]
        print(f"   peeklock.aio / blocking client = {a / s_:.2f}x (target <= 1.2x); "
              f"aiohttp / peeklock.aio = {h / a:.1f}x (target >= 5x)")

        print(f"\n2. event-loop lag p99 with {args.polls} outstanding long polls")
        idle = run(loop_lag)
        la = run(lag_aio, emu, "polls", args.polls)
        lh = run(lag_aiohttp, emu, "polls-aiohttp", args.polls)
        print(f"   idle loop                {idle:8.2f} ms")
        print(f"   peeklock.aio             {la['lag']:8.2f} ms (target < 5 ms); memory per outstanding "
              f"poll {la['rss_per_op'] / 1024:.1f} KiB RSS (engine state {la['engine_bytes']:.0f} B)")
        print(f"   aiohttp                  {lh['lag']:8.2f} ms; memory per outstanding poll "
              f"{lh['rss_per_op'] / 1024:.1f} KiB RSS")

        print(f"\n3. locks lost while the loop is blocked for 3 lock durations ({args.locks} locks, "
              f"{args.lock:g} s lock)")
        emu.create_queue("blocked-aio", lock_duration=args.lock)
        emu.create_queue("blocked-task", lock_duration=args.lock)
        lost_aio = run(blocked_aio, emu, "blocked-aio", args.locks, args.lock)
        lost_task = run(blocked_task_renewer, emu, "blocked-task", args.locks, args.lock)
        print(f"   peeklock.aio (C renewer)          {lost_aio:3d} lost of {args.locks} (target 0)")
        print(f"   asyncio task per message (SDK)    {lost_task:3d} lost of {args.locks}")
    finally:
        emu.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
