"""peeklock.aio against the emulator, on the default event loop and on uvloop: every
operation, every outcome of ``async with``, a handler that blocks the loop for three
lock durations, exact cancellation (checked in the emulator's state), many long polls
outstanding with the loop responsive, aclose() ending polls, messages(), and
process() with its drain on SIGTERM, and its batch handlers."""

import asyncio
import logging
import os
import resource
import select
import signal
import threading
import time

import pytest
import pytest_asyncio

import peeklock
import peeklock.aio
from conftest import completed


# 1,000 long polls need 1,000 sockets here and in the emulator, which is started after
# collection and inherits this limit: raise the soft limit where the hard one allows.
_soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
if _soft != resource.RLIM_INFINITY and _soft < 4096:
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(4096, _hard) if _hard != resource.RLIM_INFINITY else 4096, _hard))
POLLS = min(1000, (resource.getrlimit(resource.RLIMIT_NOFILE)[0] - 200) // 2)

pytestmark = pytest.mark.asyncio


@pytest_asyncio.fixture
async def aclient(emu):
    c = peeklock.aio.Client.from_connection_string(emu.connection_string)
    yield c
    await c.aclose()


async def until(predicate, timeout=20.0):
    """Waits for a condition (an event the test cannot await directly)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


async def test_send_puts_each_broker_keyword_in_its_field(aclient, queue):
    fields = {
        "message_id": "mid",
        "label": "lbl",
        "content_type": "text/plain",
        "time_to_live": 600.0,
        "correlation_id": "cid",
        "partition_key": "pk",
        "reply_to": "rt",
        "reply_to_session_id": "rts",
        "to": "dest",
    }
    await aclient.send(queue, b"x", **fields)
    await aclient.send(queue, b"y")  # none given
    msg = await aclient.peek_lock(queue, timeout=5)
    assert {k: getattr(msg, k) for k in fields} == fields
    await msg.complete()
    msg = await aclient.peek_lock(queue, timeout=5)
    assert msg.body == b"y" and msg.label is None and msg.correlation_id is None and msg.to is None
    await msg.complete()


async def test_send_refuses_a_keyword_it_does_not_take(aclient, queue):
    # (the keywords are those of peeklock.client.SendOptions, as for the sync send)
    with pytest.raises(TypeError, match=r"Client\.send\(\) got an unexpected keyword argument 'ttl'"):
        await aclient.send(queue, b"x", message_id="1", ttl=3)
    await aclient.send(queue, b"y", message_id=None, label=None)  # None: not set
    msg = await aclient.receive_and_delete(queue, timeout=5)
    assert msg.body == b"y" and msg.label is None  # the refused send sent nothing


async def test_send_force_persistence_reaches_broker_properties(aclient, queue):
    from test_client import _sent_broker_properties

    await aclient.send(queue, b"t", force_persistence=True)
    await aclient.send(queue, b"f", force_persistence=False)
    await aclient.send(queue, b"n")
    got = {}
    for _ in range(3):
        m = await aclient.receive_and_delete(queue, timeout=5)
        got[m.body] = _sent_broker_properties(m).get("ForcePersistence")
    assert got == {b"t": True, b"f": False, b"n": None}


@pytest.mark.parametrize("value", [0, -1, 1e9 + 1, float("nan")])
async def test_max_renew_is_the_core_s_rule(aclient, queue, value):
    # the same rule and words as the blocking client (pl_max_renew_ms), before any poll
    words = "max_renew: must be a positive number of seconds, at most 1000000000"
    calls = [
        lambda: aclient.peek_lock(queue, timeout=0, max_renew=value),
        lambda: aclient.messages(queue, timeout=0, max_renew=value).__anext__(),
        lambda: aclient.process(queue, lambda m: None, max_renew=value),
    ]
    for call in calls:
        with pytest.raises(peeklock.InvalidArgument) as ei:
            await call()
        assert str(ei.value) == words


async def test_process_option_values_are_the_core_s_rules(aclient, queue):
    # the same rules and words as the blocking processor (pl_check_process_option)
    from test_processor import PROCESS_OPTION_CASES

    for kwargs, words in PROCESS_OPTION_CASES:
        with pytest.raises(peeklock.InvalidArgument) as ei:
            await aclient.process(queue, lambda m: None, handle_signals=False, **kwargs)
        assert str(ei.value) == words


async def test_process_drain_timeout_is_checked(aclient, queue):
    # checked as the blocking processor checks it, before the run starts
    from test_processor import SECONDS_OPTION_CASES

    stop = asyncio.Event()
    stop.set()  # a run that got past the checks ends at once
    for kwargs, exc, words in SECONDS_OPTION_CASES:
        with pytest.raises(exc, match="^" + words):
            await aclient.process(queue, lambda m: None, stop_event=stop, handle_signals=False, **kwargs)
    s = await aclient.process(queue, lambda m: None, stop_event=stop, handle_signals=False, drain_timeout=None)
    assert s.stopped_by == "stop_event"


async def test_process_checks_its_options_as_the_blocking_one(aclient, client, queue):
    # one checker (processor._check_options): a handler that cannot be called is refused
    # before the run, not at each message (which would give every message back)
    stop = asyncio.Event()
    stop.set()
    with pytest.raises(TypeError, match="^handler must be callable"):
        await aclient.process(queue, "handle", stop_event=stop, handle_signals=False)
    with pytest.raises(TypeError, match="^handler must be callable"):
        client.process(queue, "handle", handle_signals=False)


async def test_every_operation(aclient, emu, queue):
    await aclient.send(queue, b"one", message_id="m1", properties={"n": 1})
    assert await aclient.send_batch(queue, [b"two", peeklock.OutgoingMessage(b"three", message_id="m3")]) == 2
    msg = await aclient.peek_lock(queue, timeout=5)
    assert isinstance(msg, peeklock.aio.Message)
    assert msg.body == b"one" and msg.message_id == "m1" and msg.properties == {"n": 1}
    assert msg.state == "held"
    await msg.renew_lock()
    await msg.complete()
    assert msg.state == "settled"
    with pytest.raises(peeklock.StateError):
        await msg.complete()
    assert completed(emu, queue) == {"m1": 1}
    second = await aclient.peek_lock(queue, timeout=5)
    await second.abandon()
    assert [m["locked"] for m in emu.messages(queue)] == [False, False]
    got = await aclient.receive_and_delete(queue, timeout=5)
    assert got.body == b"two" and got.state == "none"
    got = await aclient.receive_and_delete(queue, timeout=5)
    assert got.message_id == "m3"
    assert await aclient.peek_lock(queue, timeout=0) is None
    assert await aclient.receive_and_delete(queue, timeout=0) is None
    with pytest.raises(peeklock.EntityNotFoundError):
        await aclient.peek_lock("no-such-queue", timeout=0)
    s = aclient.stats()
    assert s["sent"] == 3 and s["completed"] == 1 and s["abandoned"] == 1
    assert s["aio"]["pending"] == 0


async def test_async_with_completes_on_success(aclient, emu, queue):
    await aclient.send(queue, b"x", message_id="a")
    async with aclient.peek_lock(queue, timeout=5) as msg:
        assert msg is not None and msg.body == b"x"
    assert msg.state == "settled"
    assert completed(emu, queue) == {"a": 1}
    async with aclient.peek_lock(queue, timeout=0) as nothing:
        assert nothing is None


async def test_async_with_message_abandons_on_exception(aclient, emu, queue):
    await aclient.send(queue, b"x", message_id="a")
    msg = await aclient.peek_lock(queue, timeout=5)
    with pytest.raises(ValueError):
        async with msg:
            raise ValueError("handler failed")
    assert msg.state == "settled"
    assert completed(emu, queue) == {}
    assert [m["locked"] for m in emu.messages(queue)] == [False]
    again = await aclient.peek_lock(queue, timeout=5)
    assert again.delivery_count == 2
    await again.complete()


async def test_async_with_abandons_on_cancellation(aclient, emu, queue):
    await aclient.send(queue, b"x", message_id="a")
    entered = asyncio.Event()

    async def handler():
        async with aclient.peek_lock(queue, timeout=5) as msg:
            entered.set()
            await asyncio.Event().wait()  # until cancelled
        return msg

    task = asyncio.ensure_future(handler())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await until(lambda: [m["locked"] for m in emu.messages(queue)] == [False])
    assert completed(emu, queue) == {}
    assert aclient.stats()["abandoned"] == 1


async def test_lock_lost_by_the_clock_raises_at_exit(emulator_factory):
    emu = emulator_factory("--queue", "lq", "--lock-duration", "5")
    c = peeklock.aio.Client.from_connection_string(emu.connection_string)
    await c.send("lq", b"x", message_id="m")
    with pytest.raises(peeklock.LockLostError):
        async with c.peek_lock("lq", timeout=5) as msg:
            emu.advance(30)  # the server's lock runs out
            await until(lambda: msg.lock_lost)  # the C renewer's renew finds it gone
    assert completed(emu, "lq") == {}
    again = await c.peek_lock("lq", timeout=5)
    assert again.delivery_count == 2
    await again.complete()
    await c.aclose()


async def test_lock_lost_cancels_an_opted_in_block(emulator_factory):
    emu = emulator_factory("--queue", "oq", "--lock-duration", "5")
    c = peeklock.aio.Client.from_connection_string(emu.connection_string)
    await c.send("oq", b"x", message_id="m")
    reached_the_end = False
    with pytest.raises(peeklock.LockLostError):
        async with c.peek_lock("oq", timeout=5, cancel_on_lost=True) as msg:
            entered, expires_in = time.monotonic(), msg.lock_remaining
            emu.advance(30)  # the server's lock runs out
            await asyncio.Event().wait()  # would wait forever: the lost lock cancels it
            reached_the_end = True
    assert not reached_the_end and msg.lock_lost
    # cancelled when the renewer found the lock lost (its renewal is due before the lock
    # runs out), not by a look at the lock once it had run out
    assert time.monotonic() - entered < expires_in
    assert not c._sync._lost_watch  # nothing left watched
    assert completed(emu, "oq") == {}
    cancelling = getattr(asyncio.current_task(), "cancelling", lambda: 0)
    assert not cancelling()  # the cancellation was the block's own
    await c.aclose()


async def test_a_handler_blocking_the_loop_keeps_its_lock(aclient, emu, make_queue):
    q = make_queue(lock_duration=2)
    await aclient.send(q, b"x", message_id="b")
    async with aclient.peek_lock(q, timeout=5) as msg:
        time.sleep(3 * 2)  # the loop is blocked for 3 lock durations
        assert not msg.lock_lost
    assert msg.state == "settled"
    assert completed(emu, q) == {"b": 1}
    assert aclient.stats()["renewed"] >= 3
    assert aclient.stats()["lost"] == 0


async def test_cancelled_receives_leave_no_message_locked(aclient, emu, queue):
    seen = emu.state()["counters"].get("requests.peek_lock", 0)
    tasks = [asyncio.ensure_future(aclient.peek_lock(queue, timeout=60)) for _ in range(50)]
    # the server serves them all (a receive it has not read yet could still take a message)
    await until(lambda: emu.state()["counters"].get("requests.peek_lock", 0) >= seen + 50)
    t0 = time.monotonic()
    for t in tasks:
        t.cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(r, asyncio.CancelledError) for r in results)
    await until(lambda: aclient.stats()["aio"]["pending"] == 0)
    assert time.monotonic() - t0 < 5
    assert aclient.stats()["aio"]["cancelled"] == 50
    await aclient.send(queue, b"x", message_id="c")
    assert [m["locked"] for m in emu.messages(queue)] == [False]
    msg = await aclient.peek_lock(queue, timeout=5)
    assert msg.delivery_count == 1
    await msg.complete()


async def test_a_lock_that_reached_a_cancelled_receive_is_abandoned(aclient, emu, queue):
    # the answer is in (the engine queued it) but the task is cancelled before the loop
    # reads it: the engine withdraws the completion and releases the lock at once
    await aclient.send(queue, b"x", message_id="d")
    task = asyncio.ensure_future(aclient.peek_lock(queue, timeout=5))
    await asyncio.sleep(0)  # the receive is submitted
    deadline = time.monotonic() + 20
    while aclient.stats()["aio"]["completed"] < 2 and time.monotonic() < deadline:
        time.sleep(0.005)  # blocking: the loop must not read it yet
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await until(lambda: aclient.stats()["aio"]["cancel_abandoned"] == 1)
    await until(lambda: [m["locked"] for m in emu.messages(queue)] == [False])
    await until(lambda: not aclient._engine.pending())  # its completion came: nothing kept for it
    msg = await aclient.peek_lock(queue, timeout=5)
    assert msg.delivery_count == 2
    await msg.complete()


def _cpu_ticks(stat_path):
    """User + system CPU clock ticks of a process or thread (/proc/.../stat)."""
    with open(stat_path) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


async def until_idle(stat_paths, window=0.3, timeout=30.0):
    """Waits until none of these processes or threads uses any CPU over ``window``."""
    deadline = time.monotonic() + timeout
    before = [_cpu_ticks(p) for p in stat_paths]
    while True:
        await asyncio.sleep(window)
        now = [_cpu_ticks(p) for p in stat_paths]
        if now == before:
            return
        if time.monotonic() > deadline:
            raise AssertionError("still busy")
        before = now


def _runqueue_wait():
    """Seconds this thread has spent runnable but waiting for a CPU that other
    threads or processes held (/proc schedstat; 0 where the kernel has none)."""
    try:
        with open(f"/proc/self/task/{threading.get_native_id()}/schedstat") as f:
            return int(f.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


async def loop_lag_p99(samples=1000, interval=0.001):
    """p99 of how late the loop runs a timer (s): as measured, and net of the time the
    loop's thread waited for a CPU held by something else (the machine's other load)."""
    raw, net = [], []
    cpu = time.thread_time()
    for _ in range(samples):
        w = _runqueue_wait()
        t = time.perf_counter()
        await asyncio.sleep(interval)
        lag = time.perf_counter() - t - interval
        raw.append(lag)
        net.append(lag - (_runqueue_wait() - w))
    cpu = time.thread_time() - cpu
    raw.sort()
    net.sort()
    return raw[int(samples * 0.99)], net[int(samples * 0.99)], cpu


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="needs Linux /proc")
async def test_many_long_polls_keep_the_loop_responsive(emu, queue):
    before = set(os.listdir("/proc/self/task"))
    c = peeklock.aio.Client.from_connection_string(emu.connection_string)
    [engine] = set(os.listdir("/proc/self/task")) - before  # the engine's I/O thread
    idle = await loop_lag_p99()  # the same probe on the idle loop, for comparison
    n = POLLS
    seen = emu.state()["counters"].get("requests.peek_lock", 0)
    tasks = [asyncio.ensure_future(c.peek_lock(queue, timeout=60)) for _ in range(n)]
    await until(lambda: emu.state()["counters"].get("requests.peek_lock", 0) >= seen + n, timeout=60)
    # Measured once every poll is outstanding and the submission is over: the engine's
    # thread and the emulator (a separate process) have gone idle. The lag of the burst
    # of submitting them is the test's own, not the cost of polls outstanding.
    engine_stat = f"/proc/self/task/{engine}/stat"
    await until_idle([engine_stat, f"/proc/{emu.proc.pid}/stat"])
    assert c.stats()["aio"]["inflight"] == n
    # What the polls could cost the loop is work on its thread, or CPU taken by the
    # engine's: the lag is taken net of the time the loop's thread waited for a CPU
    # (other processes on a shared machine), the loop's thread may use no more CPU
    # than the same probe took on the idle loop, and the engine must stay idle.
    # Other load only adds lag, so the best of up to three windows is taken.
    engine_cpu = _cpu_ticks(engine_stat)
    windows = []
    while len(windows) < 3 and (not windows or windows[-1][1] >= 0.005):
        windows.append(await loop_lag_p99())
    print(
        f"loop lag p99 with {n} long polls outstanding: "
        + ", ".join(f"{w[0] * 1000:.2f} ms ({w[1] * 1000:.2f} ms net, loop CPU {w[2] * 1000:.0f} ms)" for w in windows)
        + f"; idle loop {idle[0] * 1000:.2f} ms ({idle[1] * 1000:.2f} ms net, "
        f"loop CPU {idle[2] * 1000:.0f} ms)"
    )
    assert min(w[1] for w in windows) < 0.005
    assert min(w[2] for w in windows) < idle[2] * 1.5 + 0.02  # no work per poll on the loop
    assert _cpu_ticks(engine_stat) - engine_cpu <= 1  # the engine slept throughout
    assert c.stats()["aio"]["inflight"] == n  # outstanding throughout
    t0 = time.monotonic()
    await c.aclose()  # ends every poll at once
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert time.monotonic() - t0 < 10
    assert all(isinstance(r, peeklock.ClosedError) for r in results)
    await aclient_send_and_check_unlocked(emu, queue)


async def aclient_send_and_check_unlocked(emu, queue):
    c = peeklock.aio.Client.from_connection_string(emu.connection_string)
    await c.send(queue, b"after", message_id="z")
    assert [m["locked"] for m in emu.messages(queue)] == [False]
    await c.aclose()


async def test_messages_iterates(aclient, emu, queue):
    await aclient.send_batch(queue, [peeklock.OutgoingMessage(b"%d" % i, message_id=str(i)) for i in range(3)])
    seen = []
    async for msg in aclient.messages(queue, timeout=5):
        async with msg:
            seen.append(msg.body)
        if len(seen) == 3:
            break
    assert seen == [b"0", b"1", b"2"]
    assert completed(emu, queue) == {"0": 1, "1": 1, "2": 1}


async def test_closed_client_refuses(emu, queue):
    c = peeklock.aio.Client.from_connection_string(emu.connection_string)
    await c.aclose()
    with pytest.raises(peeklock.ClosedError):
        await c.send(queue, b"x")


async def test_client_refuses_another_loop_before_it_submits(aclient, emu, queue):
    await aclient.send(queue, b"a")  # the client now serves this loop
    refused = []

    async def use_elsewhere():
        for op in (lambda: aclient.send(queue, b"b"), lambda: aclient.peek_lock(queue, timeout=1)):
            try:
                await op()
            except RuntimeError as e:
                refused.append(str(e))

    other = threading.Thread(target=asyncio.run, args=(use_elsewhere(),))
    other.start()
    other.join()
    assert refused == ["a peeklock.aio.Client serves the event loop it was first used on"] * 2
    assert [m["state"] for m in emu.messages(queue)] == ["available"]  # nothing sent, nothing locked
    assert aclient.stats()["aio"]["submitted"] == 1
    async with aclient.peek_lock(queue, timeout=1) as msg:  # and this loop still is served
        assert msg is not None and msg.body == b"a"


async def test_message_exit_refuses_another_loop_before_it_settles(aclient, emu, queue):
    """`async with msg:` exited on another event loop: refused before the settle is
    handed to the engine (nothing completed, the message still held here)."""
    await aclient.send(queue, b"a")
    msg = await aclient.peek_lock(queue, timeout=1)
    assert msg is not None
    submitted = aclient.stats()["aio"]["submitted"]
    refused = []

    async def exit_elsewhere():
        try:
            async with msg:
                pass
        except RuntimeError as e:
            refused.append(str(e))

    other = threading.Thread(target=asyncio.run, args=(exit_elsewhere(),))
    other.start()
    other.join()
    assert refused == ["a peeklock.aio.Client serves the event loop it was first used on"]
    assert aclient.stats()["aio"]["submitted"] == submitted
    assert msg.state == "held" and [m["locked"] for m in emu.messages(queue)] == [True]
    await msg.complete()  # on this loop, exactly once
    assert emu.messages(queue) == []


async def test_process_runs_until_max_messages(aclient, emu, queue):
    await aclient.send_batch(queue, [peeklock.OutgoingMessage(b"x", message_id=str(i)) for i in range(6)])
    bodies = []

    async def handler(msg):
        if msg.message_id == "3" and msg.delivery_count == 1:
            raise RuntimeError("once")
        bodies.append(msg.message_id)

    s = await aclient.process(queue, handler, concurrency=3, max_messages=7, poll_timeout=1, handle_signals=False)
    assert s.stopped_by == "max_messages"
    assert s.processed == 6 and s.failed == 1 and s.redelivered == 1
    assert sorted(bodies) == [str(i) for i in range(6)]
    assert completed(emu, queue) == {str(i): 1 for i in range(6)}


async def test_summary_of_processed_settled_abandoned_and_redelivered(aclient, emu, queue):
    """The same run and counts as test_processor.py's (the core's tallies)."""
    from test_processor import _RUN, TALLIES

    for i in range(3):
        await aclient.send(queue, str(i).encode(), message_id=f"m{i}")

    async def handler(msg):
        if msg.text == "1":
            await msg.complete()  # settled by the handler itself
        elif msg.text == "2" and msg.delivery_count == 1:
            raise RuntimeError("once")  # abandoned, then delivered again and processed

    s = await aclient.process(
        queue, handler, concurrency=1, poll_timeout=1, max_messages=4, retry_delay=None, handle_signals=False
    )
    assert {k: getattr(s, k) for k in TALLIES} == TALLIES
    assert s.stopped_by == _RUN["stopped_by"] and s.error is None
    assert completed(emu, queue) == {"m0": 1, "m1": 1, "m2": 1}


async def test_handler_that_settles_then_raises_is_counted_as_its_settle(aclient, emu, queue):
    # as the blocking processor and Lua count it: the handler's settle stands
    await aclient.send(queue, b"x", message_id="m0")

    async def handler(msg):
        await msg.complete()
        raise RuntimeError("after the complete")

    s = await aclient.process(
        queue, handler, concurrency=1, poll_timeout=1, max_messages=1, retry_delay=None, handle_signals=False
    )
    assert (s.settled_by_handler, s.failed, s.processed) == (1, 0, 0)
    assert completed(emu, queue) == {"m0": 1}


async def test_process_max_messages_claims_before_each_receive(aclient, emu, queue):
    # four tasks, one message allowed: each receive claims first (pl_run), so the
    # other three never receive, and nine messages stay in the queue untouched
    await aclient.send_batch(queue, [peeklock.OutgoingMessage(b"x", message_id=str(i)) for i in range(10)])
    seen = []

    async def handler(msg):
        seen.append(msg.message_id)
        await asyncio.sleep(0)  # the other tasks run meanwhile

    stop = asyncio.Event()
    s = await aclient.process(
        queue, handler, concurrency=4, max_messages=1, poll_timeout=1, stop_event=stop, handle_signals=False
    )
    assert (s.received, s.processed, len(seen), s.in_flight) == (1, 1, 1, 0)
    assert s.stopped_by == "max_messages"
    assert stop.is_set()  # set at the end of every run, as the blocking processor does
    states = [m["state"] for m in emu.messages(queue)]
    assert states.count("available") == 9 and len(states) == 9


async def test_process_idle_only_with_nothing_in_flight(aclient, emu, queue):
    # r0's handler sends r1 0.8 s in (idle_timeout 0.3 passes meanwhile) and runs until r1's
    # handler has started: the run is not idle while r0 is in flight (pl_run), so r1 is received
    # and handled; then, with nothing in flight for 0.3 s, the run stops as on stop_event: the
    # pending 5 s polls are cancelled
    await aclient.send(queue, b"r0", message_id="r0")
    seen = []
    r1_started = asyncio.Event()

    async def handler(msg):
        seen.append(msg.message_id)
        if msg.message_id == "r1":
            r1_started.set()
        if msg.message_id == "r0":
            await asyncio.sleep(0.8)  # longer than idle_timeout: the rule is what keeps the run going
            await aclient.send(queue, b"r1", message_id="r1")
            await asyncio.wait_for(r1_started.wait(), 10)

    t0 = time.monotonic()
    s = await aclient.process(queue, handler, concurrency=2, idle_timeout=0.3, poll_timeout=5, handle_signals=False)
    assert sorted(seen) == ["r0", "r1"] and s.processed == 2 and s.stopped_by == "idle"
    assert time.monotonic() - t0 < 4  # not a poll_timeout more
    assert completed(emu, queue) == {"r0": 1, "r1": 1}


async def test_process_drains_on_sigterm(aclient, emu, queue):
    # one message: the other worker's receive waits on an empty queue when the drain
    # cancels it (a receive cancelled just as the server locks a message for it can
    # leave that lock for its lock duration: docs/python.md, "Cancellation is exact")
    await aclient.send(queue, b"x", message_id="0")
    started = asyncio.Event()
    release = asyncio.Event()

    async def handler(msg):
        started.set()
        await release.wait()

    async def stop_soon():
        await started.wait()
        os.kill(os.getpid(), signal.SIGTERM)  # drain: receives stop, handlers finish
        await asyncio.sleep(0)
        release.set()

    helper = asyncio.ensure_future(stop_soon())
    s = await aclient.process(queue, handler, concurrency=2, poll_timeout=30)
    await helper
    assert s.stopped_by == "signal"
    assert s.processed == s.received == 1 and s.in_flight == 0
    assert len(completed(emu, queue)) == 1
    assert not [m for m in emu.messages(queue) if m["locked"]]
    assert aclient.stats()["aio"]["pending"] == 0


def _switches(tid):
    with open(f"/proc/self/task/{tid}/status") as f:
        d = dict(line.split(":\t", 1) for line in f.read().splitlines() if ":\t" in line)
    return int(d["voluntary_ctxt_switches"]) + int(d["nonvoluntary_ctxt_switches"])


class _LoopWatch:
    """What the running loop does between start() and stop(): the loop thread's
    context switches (each sleep in the selector that ends is one), and on the
    default loop the iterations it makes and the timers scheduled meanwhile."""

    def __init__(self, loop):
        self.loop, self.iterations, self.timers = loop, 0, []
        self.default = isinstance(loop, asyncio.BaseEventLoop)
        self.tid = threading.get_native_id()

    def start(self):
        if self.default:
            run_once, call_at = self.loop._run_once, self.loop.call_at

            def counted():
                self.iterations += 1
                run_once()

            def timer(when, callback, *args, **kw):
                self.timers.append(callback)
                return call_at(when, callback, *args, **kw)

            self.loop._run_once, self.loop.call_at = counted, timer
        self.switches = _switches(self.tid)

    def stop(self):
        self.switches = _switches(self.tid) - self.switches
        if self.default:
            del self.loop._run_once, self.loop.call_at


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="needs Linux /proc")
async def test_process_returns_after_its_background_unlocks(aclient, emu, queue):
    # the drain deadline cancels a handler: its message is abandoned in the background
    # (the unlock held back 1 s by the server); process() returns once it is done,
    # told by the engine's fd: the loop sleeps meanwhile, with no timer (polling
    # every 20 ms would wake it some 50 times)
    await aclient.send(queue, b"x", message_id="u")
    emu.fault(operation="unlock", delay_ms=1000, count=1)
    stop = asyncio.Event()
    engine = aclient._engine
    wind_down = engine.wind_down
    watch = _LoopWatch(asyncio.get_running_loop())
    seen = {}

    async def watched(limit=10.0):
        seen["background"] = engine.stats()["background"]
        seen["started"] = time.monotonic()
        watch.start()
        try:
            await wind_down(limit)
        finally:
            watch.stop()
            seen["waited"] = time.monotonic() - seen["started"]

    engine.wind_down = watched

    async def handler(msg):
        stop.set()
        await asyncio.Event().wait()  # never ends: cancelled at the drain deadline

    s = await aclient.process(
        queue, handler, concurrency=1, poll_timeout=5, stop_event=stop, drain_timeout=0.1, handle_signals=False
    )
    assert [m["locked"] for m in emu.messages(queue)] == [False]  # unlocked when it returns
    assert s.abandoned_on_drain == 1
    assert seen["background"] == 1 and seen["waited"] > 0.5  # it did wait for the unlock
    assert aclient.stats()["aio"]["background"] == 0
    assert watch.switches <= 5, watch.switches
    if watch.default:
        assert watch.timers == [] and watch.iterations <= 5, (watch.timers, watch.iterations)


async def test_wind_down_says_when_its_limit_passed(aclient, emu, queue, caplog):
    # the limit is kept by the engine's thread: a completion on the fd, a warning
    await aclient.send(queue, b"x")
    msg = await aclient.peek_lock(queue, timeout=5)
    emu.fault(operation="unlock", delay_ms=3000, count=1)
    msg._abandon_now()  # in the background, held back 3 s
    assert aclient.stats()["aio"]["background"] == 1
    started = time.monotonic()
    await aclient._engine.wind_down(0.1)
    assert time.monotonic() - started < 2.5
    assert "still under way after" in caplog.text
    assert aclient.stats()["aio"]["background"] == 1
    waiting = asyncio.ensure_future(aclient._engine.wind_down())  # cancelled: taken back
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await aclient._engine.wind_down()
    assert aclient.stats()["aio"]["background"] == 0
    assert [m["locked"] for m in emu.messages(queue)] == [False]
    assert aclient._engine._futs == {}


class _FutureThatFailsToTakeItsResult(asyncio.Future):
    def set_result(self, result):
        raise MemoryError("no memory for the result")


async def test_a_result_the_future_cannot_take_fails_the_future_and_frees_the_lock(aclient, emu, queue):
    # (what an allocation failure in the reader does, reached without one): the
    # future is resolved with the error, not left pending; the lock that came for
    # it reaches nobody and is unlocked
    await aclient.send(queue, b"x")
    engine = aclient._engine
    id_, fut = peeklock._core.pl_py_aio_submit(
        engine._futs,
        _FutureThatFailsToTakeItsResult,
        engine._loop,
        peeklock._core.pl_aio_peek_lock,
        engine._a,
        queue,
        5,
    )
    with pytest.raises(MemoryError, match="no memory for the result"):
        await asyncio.wait_for(fut, 20)
    assert id_ not in engine._futs
    await engine.wind_down()
    assert aclient.stats()["aio"]["cancel_abandoned"] == 1
    [m] = emu.messages(queue)
    assert not m["locked"] and m["delivery_count"] == 1


async def test_an_orphan_handler_that_fails_still_frees_the_lock(aclient, emu, queue):
    # a lock that reached no future, whose orphan callable raises: unlocked in C,
    # the error reported to the loop's exception handler
    await aclient.send(queue, b"x")
    loop = asyncio.get_running_loop()
    engine = aclient._engine
    reported = asyncio.Event()
    errors = []

    def orphan(h, peek):
        raise RuntimeError("orphan failed")

    def handler(loop, context):
        errors.append(context.get("exception"))
        reported.set()

    loop.remove_reader(engine._fd)
    loop.add_reader(engine._fd, peeklock._core.pl_py_aio_resolve, engine._a, engine._futs, orphan)
    loop.set_exception_handler(handler)
    try:
        id_, fut = peeklock._core.pl_py_aio_submit(
            engine._futs, asyncio.Future, loop, peeklock._core.pl_aio_peek_lock, engine._a, queue, 5
        )
        del engine._futs[id_]  # as if its registration had failed
        await asyncio.wait_for(reported.wait(), 20)
    finally:
        loop.set_exception_handler(None)
        loop.remove_reader(engine._fd)
        loop.add_reader(engine._fd, peeklock._core.pl_py_aio_resolve, engine._a, engine._futs, engine._orphan)
    assert [type(e) for e in errors] == [RuntimeError]
    assert not fut.done()  # (no longer registered: nobody resolves it)
    await engine.wind_down()
    [m] = emu.messages(queue)
    assert not m["locked"] and m["delivery_count"] == 1


async def test_an_idle_client_leaves_its_fd_quiet(aclient, emu, queue):
    # after an operation, nothing in flight: no completion is signalled on the fd
    # while another client's long poll (the window) runs to its end
    await aclient.send(queue, b"x")
    assert (await aclient.receive_and_delete(queue, timeout=5)).body == b"x"
    assert aclient.stats()["aio"]["pending"] == 0
    loop = asyncio.get_running_loop()
    fd = aclient._engine._fd
    calls = []

    def reader(*args):
        calls.append(1)
        peeklock._core.pl_py_aio_resolve(*args)

    engine = aclient._engine
    loop.remove_reader(fd)
    loop.add_reader(fd, reader, engine._a, engine._futs, engine._orphan)
    try:
        async with peeklock.aio.Client.from_connection_string(emu.connection_string) as other:
            assert await other.peek_lock(queue, timeout=1) is None  # the window: 1 s
    finally:
        loop.remove_reader(fd)
        loop.add_reader(fd, peeklock._core.pl_py_aio_resolve, engine._a, engine._futs, engine._orphan)
    assert calls == []
    assert select.select([fd], [], [], 0)[0] == []
    await aclient.send(queue, b"y")  # still served


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="needs Linux /proc")
async def test_no_wake_ups_while_polls_wait(emu, queue):
    before = set(os.listdir("/proc/self/task"))
    c = peeklock.aio.Client.from_connection_string(emu.connection_string)
    new = set(os.listdir("/proc/self/task")) - before
    assert len(new) == 1  # the engine's one I/O thread
    tid = new.pop()
    seen = emu.state()["counters"].get("requests.peek_lock", 0)
    tasks = [asyncio.ensure_future(c.peek_lock(queue, timeout=60)) for _ in range(100)]
    # every request has reached the server: the engine has nothing left to send
    await until(lambda: emu.state()["counters"].get("requests.peek_lock", 0) >= seen + 100)
    await asyncio.sleep(1)  # libcurl's one-shot timers of new connections (200 ms) run out
    start = _switches(tid)
    await asyncio.sleep(2)  # the window measured: nothing to do
    assert _switches(tid) - start <= 1
    await c.aclose()
    await asyncio.gather(*tasks, return_exceptions=True)


# ---- batch handlers: process(..., batch=N, max_wait=S) ----


async def send_ids(client, queue, prefix, n):
    await client.send_batch(queue, [peeklock.OutgoingMessage(b"x", message_id=f"{prefix}{i}") for i in range(n)])


async def test_batch_settled_by_its_result_and_the_rest_completed(aclient, emu, queue):
    await send_ids(aclient, queue, "b", 5)
    batches = []

    async def handler(msgs):
        batches.append([m.message_id for m in msgs])
        await msgs[0].complete()  # settled by the handler itself
        return {msgs[1].sequence_number: "abandon", msgs[2]: "complete"}  # by its result
        #                                                       the other two: completed

    s = await aclient.process(
        queue,
        handler,
        batch=5,
        max_wait=2,
        concurrency=1,
        poll_timeout=1,
        max_messages=5,
        handle_signals=False,
        retry_delay=0,
    )
    assert batches == [["b0", "b1", "b2", "b3", "b4"]]
    assert (s.received, s.processed, s.settled_by_handler, s.failed, s.lost) == (5, 3, 1, 1, 0)
    assert s.in_flight == 0 and s.stopped_by == "max_messages"
    assert completed(emu, queue) == {"b0": 1, "b2": 1, "b3": 1, "b4": 1}
    [m] = emu.messages(queue)
    assert (m["message_id"], m["state"]) == ("b1", "available")  # abandoned


async def test_batch_partial_failure_abandons_what_the_handler_left(aclient, emu, queue):
    await send_ids(aclient, queue, "f", 3)
    errors, delays = [], []

    async def handler(msgs):
        await msgs[2].complete()
        raise RuntimeError("partial failure")

    def retry_delay(msg):
        delays.append(msg.message_id)  # taken once for the batch
        return 0

    s = await aclient.process(
        queue,
        handler,
        batch=3,
        max_wait=2,
        concurrency=1,
        poll_timeout=1,
        max_messages=3,
        handle_signals=False,
        retry_delay=retry_delay,
        on_error=lambda m, e: errors.append(m.message_id),
    )
    assert (s.processed, s.settled_by_handler, s.failed) == (0, 1, 2)
    assert sorted(errors) == ["f0", "f1"] and len(delays) == 1
    assert "partial failure" in s.last_errors[-1]
    assert completed(emu, queue) == {"f2": 1}
    assert sorted((m["message_id"], m["state"], m["delivery_count"]) for m in emu.messages(queue)) == [
        ("f0", "available", 1),
        ("f1", "available", 1),
    ]


async def test_batch_a_bad_result_fails_the_batch(aclient, emu, queue):
    await send_ids(aclient, queue, "x", 2)

    async def handler(msgs):
        return {msgs[0]: "keep"}

    s = await aclient.process(
        queue,
        handler,
        batch=2,
        max_wait=2,
        concurrency=1,
        poll_timeout=1,
        max_messages=2,
        handle_signals=False,
        retry_delay=None,
    )
    assert (s.processed, s.failed) == (0, 2)
    # the rule and its words are the core's (pl_settle_action)
    assert "the handler's result says 'keep' for message" in s.last_errors[-1]
    assert s.last_errors[-1].endswith(": must be 'complete' or 'abandon'")
    assert completed(emu, queue) == {}
    assert [m["state"] for m in emu.messages(queue)] == ["available", "available"]


async def test_batch_locks_are_each_renewed_from_receipt(aclient, emu, make_queue):
    q = make_queue(lock_duration=5)
    await send_ids(aclient, q, "r", 3)

    async def handler(msgs):
        taken = {m["message_id"]: m["locked_until"] for m in emu.messages(q)}
        assert sorted(taken) == ["r0", "r1", "r2"]
        # the server sees every lock of the batch renewed by the C renewer ...
        await until(lambda: all(m["locked_until"] > taken[m["message_id"]] + 1 for m in emu.messages(q)), timeout=30)
        # ... so that once the server's clock has passed every lock as first taken,
        # the batch still holds them all
        emu.advance(max(taken.values()) - emu.admin("GET", "clock")["now"] + 0.5)
        assert all(m["state"] == "locked" for m in emu.messages(q))
        assert all(m.state == "held" for m in msgs)

    s = await aclient.process(
        q, handler, batch=3, max_wait=2, concurrency=1, poll_timeout=1, max_messages=3, handle_signals=False
    )
    assert (s.processed, s.lost, s.redelivered) == (3, 0, 0) and s.renewals >= 3
    assert completed(emu, q) == {"r0": 1, "r1": 1, "r2": 1}


async def test_batch_waits_up_to_max_wait_for_more(aclient, emu, queue):
    await aclient.send(queue, b"x", message_id="first")
    sizes = []
    stop = asyncio.Event()

    async def handler(msgs):
        sizes.append([m.message_id for m in msgs])
        stop.set()

    async def second():  # sent once the first is locked, while the batch is collecting
        await until(lambda: [m["state"] for m in emu.messages(queue)] == ["locked"])
        await aclient.send(queue, b"y", message_id="second")

    helper = asyncio.ensure_future(second())
    s = await aclient.process(
        queue, handler, batch=10, max_wait=3, concurrency=1, poll_timeout=5, stop_event=stop, handle_signals=False
    )
    await helper
    assert sizes == [["first", "second"]] and s.processed == 2
    assert completed(emu, queue) == {"first": 1, "second": 1}


async def test_batch_max_wait_0_takes_what_is_there(aclient, emu, queue):
    await aclient.send(queue, b"x", message_id="only")
    sizes = []
    stop = asyncio.Event()

    async def handler(msgs):
        sizes.append(len(msgs))
        stop.set()

    await aclient.process(
        queue, handler, batch=10, max_wait=0, concurrency=1, poll_timeout=1, stop_event=stop, handle_signals=False
    )
    assert sizes == [1] and completed(emu, queue) == {"only": 1}


async def test_batch_max_wait_longer_than_a_receive_takes_several(aclient, emu, queue):
    # max_wait 400 s outlasts the longest receive (300 s): the second receive asks for the longest
    await send_ids(aclient, queue, "w", 1)
    seen = emu.state()["counters"].get("requests.peek_lock", 0)

    async def feed():  # once the second receive waits on the server, the second message comes
        await until(lambda: emu.state()["counters"].get("requests.peek_lock", 0) >= seen + 2)
        await aclient.send(queue, b"x", message_id="w1")

    feeder = asyncio.ensure_future(feed())
    batches = []

    async def handler(msgs):
        batches.append([m.message_id for m in msgs])

    run = aclient.process(
        queue, handler, batch=2, max_wait=400, concurrency=1, poll_timeout=5, max_messages=2, handle_signals=False
    )
    s = await asyncio.wait_for(run, 60)  # a regression ends, not hangs
    await feeder
    assert batches == [["w0", "w1"]]
    assert (s.processed, s.errors) == (2, 0)


async def test_batch_being_collected_is_given_back_on_sigterm(aclient, emu, queue):
    await send_ids(aclient, queue, "d", 2)
    called = []

    async def handler(msgs):
        called.append(msgs)

    async def stop_while_collecting():
        # both locked, and the collector waits (max_wait) for more
        await until(lambda: [m["state"] for m in emu.messages(queue)] == ["locked", "locked"])
        os.kill(os.getpid(), signal.SIGTERM)

    helper = asyncio.ensure_future(stop_while_collecting())
    t0 = time.monotonic()
    s = await aclient.process(queue, handler, batch=5, max_wait=60, concurrency=1, poll_timeout=30)
    await helper
    assert time.monotonic() - t0 < 30  # not after max_wait: at once
    assert called == [] and s.stopped_by == "signal"
    assert (s.received, s.abandoned_on_drain, s.in_flight) == (2, 2, 0)
    assert [(m["state"], m["delivery_count"]) for m in emu.messages(queue)] == [("available", 1), ("available", 1)]
    assert aclient.stats()["aio"]["pending"] == 0


async def test_batch_cancelled_at_the_drain_deadline_is_abandoned(aclient, emu, queue):
    await send_ids(aclient, queue, "c", 3)
    stop = asyncio.Event()

    async def handler(msgs):
        await msgs[0].complete()
        stop.set()  # drain; the handler does not finish
        await asyncio.Event().wait()

    s = await aclient.process(
        queue,
        handler,
        batch=3,
        max_wait=2,
        concurrency=1,
        poll_timeout=1,
        stop_event=stop,
        drain_timeout=0.2,
        handle_signals=False,
    )
    assert (s.settled_by_handler, s.abandoned_on_drain, s.processed, s.in_flight) == (1, 2, 0, 0)
    await until(lambda: [m["state"] for m in emu.messages(queue)] == ["available", "available"])
    assert completed(emu, queue) == {"c0": 1}


# ---- a failed receive: the core's rule (pl_receive_pause_ms) ----
def _receive_records(caplog, entity):
    return [r for r in caplog.records if r.name == "peeklock" and r.getMessage().startswith(f"receive from {entity} ")]


@pytest.mark.parametrize("batch", [None, 2])
async def test_process_on_a_missing_entity_raises_at_once(aclient, caplog, batch):
    caplog.set_level(logging.WARNING, logger="peeklock")
    started = time.monotonic()
    with pytest.raises(peeklock.EntityNotFoundError) as ei:
        # (a run that went on would be cut by wait_for and fail the test)
        await asyncio.wait_for(
            aclient.process("ordrs", lambda m: None, concurrency=4, batch=batch, handle_signals=False), 10
        )
    assert time.monotonic() - started < 5
    s = ei.value.summary
    assert s.error is ei.value and s.stopped_by == "error" and s.in_flight == 0
    errors = [r for r in _receive_records(caplog, "ordrs") if r.levelno == logging.ERROR]
    assert len(errors) == 1 and errors[0].getMessage().endswith("the processor stops")
    assert aclient.stats()["aio"]["pending"] == 0


async def test_process_ends_on_a_refused_receive_and_lets_handlers_finish(aclient, emu, queue):
    """One worker's receive is refused (401) while the other's handler runs: no
    new receive starts, the handler finishes and its message is completed, then
    process() raises the AuthError."""
    await aclient.send(queue, b"x", message_id="x")
    stop = asyncio.Event()

    async def handler(msg):
        emu.fault(operation="peek_lock", entity=queue, status=401, count=1)  # the other worker's next receive
        await stop.wait()  # set by the run when the refusal ends it

    with pytest.raises(peeklock.AuthError) as ei:
        await asyncio.wait_for(
            aclient.process(queue, handler, concurrency=2, poll_timeout=1, stop_event=stop, handle_signals=False), 10
        )
    s = ei.value.summary
    assert s.stopped_by == "error" and s.processed == 1 and s.in_flight == 0 and s.errors == 1
    assert completed(emu, queue) == {"x": 1}


async def test_process_pauses_by_the_rule_on_503s_then_goes_on(emu, queue, caplog):
    caplog.set_level(logging.WARNING, logger="peeklock")
    client = peeklock.aio.Client.from_connection_string(emu.connection_string, max_retries=0)
    try:
        await client.send(queue, b"a", message_id="a")
        emu.fault(operation="peek_lock", entity=queue, status=503, count=2)
        s = await client.process(
            queue, lambda m: None, concurrency=1, max_messages=1, poll_timeout=1, handle_signals=False
        )
    finally:
        await client.aclose()
    assert s.processed == 1 and s.errors == 2 and s.error is None
    assert completed(emu, queue) == {"a": 1}
    failures = _receive_records(caplog, queue)
    assert [r.getMessage().rsplit("; ", 1)[1] for r in failures] == ["trying again in 1 s", "trying again in 2 s"]
    assert failures[1].created - failures[0].created >= 1.0
    # the second pause ran in full before the receive that brought the message
    assert time.time() - failures[1].created >= 2.0


async def test_process_on_a_client_closed_under_it_ends_quietly_as_closed(emu, queue):
    """aclose() while the run's receives wait: the run ends without an error and
    says why (stopped_by "closed")."""
    c = peeklock.aio.Client.from_connection_string(emu.connection_string)
    run = asyncio.ensure_future(c.process(queue, lambda m: None, concurrency=2, poll_timeout=5, handle_signals=False))
    try:
        await until(lambda: c.stats()["aio"]["pending"] >= 2)  # both long polls in flight
        await c.aclose()
        s = await asyncio.wait_for(run, 10)
    finally:
        await c.aclose()
    assert s.stopped_by == "closed" and s.error is None, s


async def _stop_while_collecting(aclient, emu, queue, lose):
    """A batch run stopped while its batch (one message) waits for more; ``lose``:
    the server's lock runs out first and the C renewer finds it lost."""
    stop = asyncio.Event()

    async def stop_while_collecting():
        await until(lambda: [m["state"] for m in emu.messages(queue)] == ["locked"])
        if lose:
            emu.advance(30)  # the lock runs out, and with it the message's time to live
            await until(lambda: aclient.stats()["events"]["lost"] == 1)  # the renewer's renew: 404
        stop.set()

    helper = asyncio.ensure_future(stop_while_collecting())
    s = await aclient.process(
        queue,
        lambda msgs: None,
        batch=5,
        max_wait=60,
        concurrency=1,
        poll_timeout=30,
        stop_event=stop,
        handle_signals=False,
    )
    await helper
    return s


async def test_batch_lock_lost_while_collecting_counts_lost_not_drained(aclient, emu, queue):
    await aclient.send(queue, b"x", message_id="t0", time_to_live=10)
    s = await _stop_while_collecting(aclient, emu, queue, lose=True)
    assert (s.received, s.lost, s.abandoned_on_drain, s.in_flight) == (1, 1, 0, 0)
    assert emu.messages(queue) == [] and completed(emu, queue) == {}


async def test_batch_give_back_with_unknown_outcome_counts_unknown(aclient, emu, queue):
    await aclient.send(queue, b"x", message_id="u0")
    emu.fault(operation="unlock", entity=queue, drop=True, after=True, count=1)  # applied, answer lost
    s = await _stop_while_collecting(aclient, emu, queue, lose=False)
    assert (s.received, s.unknown, s.errors, s.abandoned_on_drain, s.in_flight) == (1, 1, 1, 0, 0)
    assert completed(emu, queue) == {}


@pytest.mark.parametrize("settle", ["complete", "abandon"])
async def test_failure_log_of_a_message_the_handler_settled_says_so(aclient, emu, queue, caplog, settle):
    await aclient.send(queue, b"x", message_id="s0")
    caplog.set_level(logging.WARNING, logger="peeklock")

    async def handler(msg):
        await getattr(msg, settle)()
        raise RuntimeError("after settling")

    s = await aclient.process(queue, handler, concurrency=1, poll_timeout=1, max_messages=1, handle_signals=False)
    assert s.settled_by_handler == 1
    [rec] = [r for r in caplog.records if r.getMessage().startswith("handler for message")]
    word = {"complete": "completed", "abandon": "abandoned"}[settle]
    assert rec.getMessage().endswith(f"failed: RuntimeError: after settling; it was already {word} by the handler")


# ---- a handler cancelled at the drain deadline: its message counted by its state ----
async def _cancel_at_the_drain_deadline(aclient, emu, queue, first, batch, lose):
    """One message; its handler (single or batch) awaits ``first(msg_or_msgs)``,
    then never ends: cancelled at the drain deadline. ``lose``: the server's lock
    runs out first and the C renewer finds it lost. Returns the run's summary."""
    stop, handling = asyncio.Event(), asyncio.Event()

    async def handler(msg_or_msgs):
        await first(msg_or_msgs)
        handling.set()
        await asyncio.Event().wait()

    async def stop_while_handled():
        await handling.wait()
        if lose:
            emu.advance(30)  # the lock runs out, and with it the message's time to live
            await until(lambda: aclient.stats()["events"]["lost"] == 1)  # the renewer's renew: 404
        stop.set()

    helper = asyncio.ensure_future(stop_while_handled())
    try:
        s = await aclient.process(
            queue,
            handler,
            batch=batch,
            concurrency=1,
            poll_timeout=5,
            stop_event=stop,
            drain_timeout=0.2,
            handle_signals=False,
        )
    finally:
        stop.set()  # (a helper that failed ends the run all the same)
        await helper
    return s


async def _nothing(msg_or_msgs):
    pass


@pytest.mark.parametrize("batch", [None, 1])
async def test_cancelled_handler_of_a_lost_lock_counts_lost(aclient, emu, queue, batch):
    await aclient.send(queue, b"x", message_id="l0", time_to_live=10)
    s = await _cancel_at_the_drain_deadline(aclient, emu, queue, _nothing, batch, lose=True)
    assert (s.received, s.lost, s.settled_by_handler, s.abandoned_on_drain, s.in_flight) == (1, 1, 0, 0, 0), s
    assert emu.messages(queue) == [] and completed(emu, queue) == {}


async def test_cancelled_handler_that_settled_its_message_counts_settled_by_handler(aclient, emu, queue):
    await aclient.send(queue, b"x", message_id="s0")

    async def complete(msg):
        await msg.complete()

    s = await _cancel_at_the_drain_deadline(aclient, emu, queue, complete, None, lose=False)
    assert (s.received, s.settled_by_handler, s.abandoned_on_drain, s.in_flight) == (1, 1, 0, 0), s
    assert completed(emu, queue) == {"s0": 1}
