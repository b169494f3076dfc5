"""peeklock.aio against the emulator, on the default event loop and on uvloop: every
operation, every outcome of ``async with``, a handler that blocks the loop for three
lock durations, exact cancellation (checked in the emulator's state), many long polls
outstanding with the loop responsive, aclose() ending polls, messages(), and
process() with its drain on SIGTERM."""
import asyncio
import os
import resource
import signal
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
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(4096, _hard) if _hard != resource.RLIM_INFINITY
                                                else 4096, _hard))
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
            await asyncio.Event().wait()          # until cancelled
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
            emu.advance(30)                       # the server's lock runs out
            await until(lambda: msg.lock_lost)    # the C renewer's renew finds it gone
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
            emu.advance(30)                       # the server's lock runs out
            await asyncio.Event().wait()          # would wait forever: the lost lock cancels it
            reached_the_end = True
    assert not reached_the_end and msg.lock_lost
    assert completed(emu, "oq") == {}
    cancelling = getattr(asyncio.current_task(), "cancelling", lambda: 0)
    assert not cancelling()                       # the cancellation was the block's own
    await c.aclose()


async def test_a_handler_blocking_the_loop_keeps_its_lock(aclient, emu, make_queue):
    q = make_queue(lock_duration=2)
    await aclient.send(q, b"x", message_id="b")
    async with aclient.peek_lock(q, timeout=5) as msg:
        time.sleep(3 * 2)                         # the loop is blocked for 3 lock durations
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
    await asyncio.sleep(0)                        # the receive is submitted
    deadline = time.monotonic() + 20
    while aclient.stats()["aio"]["completed"] < 2 and time.monotonic() < deadline:
        time.sleep(0.005)                         # blocking: the loop must not read it yet
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await until(lambda: aclient.stats()["aio"]["cancel_abandoned"] == 1)
    await until(lambda: [m["locked"] for m in emu.messages(queue)] == [False])
    msg = await aclient.peek_lock(queue, timeout=5)
    assert msg.delivery_count == 2
    await msg.complete()


async def test_many_long_polls_keep_the_loop_responsive(emu, queue):
    c = peeklock.aio.Client.from_connection_string(emu.connection_string)
    n = POLLS
    seen = emu.state()["counters"].get("requests.peek_lock", 0)
    tasks = [asyncio.ensure_future(c.peek_lock(queue, timeout=60)) for _ in range(n)]
    await until(lambda: emu.state()["counters"].get("requests.peek_lock", 0) >= seen + n, timeout=60)
    lags = []
    for _ in range(200):
        t = time.perf_counter()
        await asyncio.sleep(0.005)
        lags.append(time.perf_counter() - t - 0.005)
    lags.sort()
    p99 = lags[int(len(lags) * 0.99)]
    print(f"loop lag p99 with {n} long polls outstanding: {p99 * 1000:.2f} ms")
    assert p99 < 0.05
    t0 = time.monotonic()
    await c.aclose()                              # ends every poll at once
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


async def test_process_runs_until_max_messages(aclient, emu, queue):
    await aclient.send_batch(queue, [peeklock.OutgoingMessage(b"x", message_id=str(i)) for i in range(6)])
    bodies = []

    async def handler(msg):
        if msg.message_id == "3" and msg.delivery_count == 1:
            raise RuntimeError("once")
        bodies.append(msg.message_id)

    s = await aclient.process(queue, handler, concurrency=3, max_messages=7, poll_timeout=1,
                              handle_signals=False)
    assert s.stopped_by == "max_messages"
    assert s.processed == 6 and s.failed == 1 and s.redelivered == 1
    assert sorted(bodies) == [str(i) for i in range(6)]
    assert completed(emu, queue) == {str(i): 1 for i in range(6)}


async def test_process_drains_on_sigterm(aclient, emu, queue):
    await aclient.send_batch(queue, [peeklock.OutgoingMessage(b"x", message_id=str(i)) for i in range(4)])
    started = asyncio.Event()
    release = asyncio.Event()

    async def handler(msg):
        started.set()
        await release.wait()

    async def stop_soon():
        await started.wait()
        os.kill(os.getpid(), signal.SIGTERM)      # drain: receives stop, handlers finish
        await asyncio.sleep(0)
        release.set()

    helper = asyncio.ensure_future(stop_soon())
    s = await aclient.process(queue, handler, concurrency=2, poll_timeout=30)
    await helper
    assert s.stopped_by == "signal"
    assert s.processed == s.received >= 1 and s.in_flight == 0
    assert len(completed(emu, queue)) == s.processed
    assert not [m for m in emu.messages(queue) if m["locked"]]
    assert aclient.stats()["aio"]["pending"] == 0


def _switches(tid):
    with open(f"/proc/self/task/{tid}/status") as f:
        d = dict(line.split(":\t", 1) for line in f.read().splitlines() if ":\t" in line)
    return int(d["voluntary_ctxt_switches"]) + int(d["nonvoluntary_ctxt_switches"])


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="needs Linux /proc")
async def test_no_wake_ups_while_polls_wait(emu, queue):
    before = set(os.listdir("/proc/self/task"))
    c = peeklock.aio.Client.from_connection_string(emu.connection_string)
    new = set(os.listdir("/proc/self/task")) - before
    assert len(new) == 1                          # the engine's one I/O thread
    tid = new.pop()
    seen = emu.state()["counters"].get("requests.peek_lock", 0)
    tasks = [asyncio.ensure_future(c.peek_lock(queue, timeout=60)) for _ in range(100)]
    # every request has reached the server: the engine has nothing left to send
    await until(lambda: emu.state()["counters"].get("requests.peek_lock", 0) >= seen + 100)
    await asyncio.sleep(1)    # libcurl's one-shot timers of new connections (200 ms) run out
    start = _switches(tid)
    await asyncio.sleep(2)                        # the window measured: nothing to do
    assert _switches(tid) - start <= 1
    await c.aclose()
    await asyncio.gather(*tasks, return_exceptions=True)
