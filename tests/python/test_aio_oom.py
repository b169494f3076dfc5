"""Out of memory in peeklock.aio's C glue (bindings/python/glue.c, python.i's id
typemap), with a real failing allocator: tests/python/failalloc.c, built here,
hooks Python's allocators and fails one chosen allocation made inside the glue
(pl_py_aio_submit with the submit call, asyncio.Future() and the id it makes;
the loop's reader pl_py_aio_resolve with the futures it resolves and the
callbacks that schedules). A sweep fails allocation 0, 1, 2, ... of one
operation until the operation runs without reaching the failure, and checks
each time: the call raises MemoryError or OutcomeUnknownError or succeeds (never
a false failure, never a hang), no future stays in the client's table, nothing
stays locked in the emulator, a send reported as MemoryError did not reach the
queue, and the client still works."""

import asyncio
import gc
import importlib.machinery
import importlib.util
import subprocess
import sysconfig
import time
from pathlib import Path

import pytest
import pytest_asyncio

import peeklock
import peeklock.aio
import peeklock.errors
from peeklock import _core
from peeklock.errors import OutcomeUnknownError

pytestmark = pytest.mark.asyncio

HERE = Path(__file__).resolve().parent
LIMIT = 10.0  # seconds an operation may take before it counts as hung
IDS = 300  # ids burnt first: an id above 256 is an allocation (python.i's typemap)


@pytest.fixture(scope="module")
def failalloc(tmp_path_factory):
    """The failing allocator, compiled for this interpreter."""
    out = tmp_path_factory.mktemp("failalloc") / ("failalloc" + importlib.machinery.EXTENSION_SUFFIXES[0])
    cc = sysconfig.get_config_var("CC") or "cc"
    cmd = cc.split() + [
        "-shared",
        "-fPIC",
        "-O1",
        "-Wall",
        "-Wextra",
        "-Werror",
        "-I" + sysconfig.get_paths()["include"],
        str(HERE / "failalloc.c"),
        "-o",
        str(out),
    ]
    subprocess.run(cmd, check=True)
    spec = importlib.util.spec_from_file_location("failalloc", out)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    yield mod
    mod.restore()  # (what the hooks allocated is freed by the same allocators)


class Counted:
    """Awaits coroutine coro with failalloc counting until it first suspends (for
    run(id_=): until it waits for its future)."""

    def __init__(self, coro, failalloc):
        self.coro, self.failalloc = coro, failalloc

    def __await__(self):
        it = self.coro.__await__()
        self.failalloc.on()
        try:
            out = it.send(None)
        except StopIteration as e:
            return e.value
        finally:
            self.failalloc.off()
        while True:
            try:
                try:
                    sent = yield out
                except BaseException as exc:
                    out = it.throw(exc)
                else:
                    out = it.send(sent)
            except StopIteration as e:
                return e.value


@pytest_asyncio.fixture
async def aclient(emu, failalloc, monkeypatch):
    """A client whose glue calls count allocations (failalloc.on/off around them)."""

    def counted(f):
        on, off = failalloc.on, failalloc.off

        def call(*args):
            on()
            try:
                return f(*args)
            finally:
                off()

        return call

    monkeypatch.setattr(peeklock.aio, "_submit", counted(_core.pl_py_aio_submit))
    monkeypatch.setattr(_core, "pl_py_aio_resolve", counted(_core.pl_py_aio_resolve))
    # `async with msg:`'s exit: pl_aio_finish, then the future run(id_=) registers
    monkeypatch.setattr(_core, "pl_aio_finish", counted(_core.pl_aio_finish))
    run = peeklock.aio._Engine.run

    def run_counted(self, submit, *args, id_=0):
        coro = run(self, submit, *args, id_=id_)
        return Counted(coro, failalloc) if id_ else coro

    monkeypatch.setattr(peeklock.aio._Engine, "run", run_counted)
    c = peeklock.aio.Client.from_connection_string(emu.connection_string)
    for _ in range(IDS):
        await c._engine.wind_down()
    yield c
    await c.aclose()


async def sweep(failalloc, aclient, setup, op, check, acts=True):
    """Fails allocation n of op() for n = 0, 1, ... until op() ends without reaching
    it; setup() makes op's inputs, check(n, inputs, result or exception) its
    invariants. An operation that acts (acts: a send, a settle) says MemoryError
    only when the engine never took it. Returns how many allocations were failed
    in turn."""
    n = 0
    while True:
        inputs = await setup(n)
        submitted = aclient.stats()["aio"]["submitted"]
        failalloc.arm(n)
        task = asyncio.ensure_future(op(inputs))
        try:
            await asyncio.wait({task}, timeout=LIMIT)
        finally:
            _, fired = failalloc.disarm()
        if not task.done():
            del task
            gc.collect()  # (so that the loop's teardown does not wait for it for ever)
            pytest.fail(f"allocation {n}: the call never ended")
        try:
            res = task.result()
        except (MemoryError, OutcomeUnknownError) as e:
            res = e
        if acts and isinstance(res, MemoryError):
            assert aclient.stats()["aio"]["submitted"] == submitted, (
                f"allocation {n}: MemoryError, yet it may have acted"
            )
        assert aclient._engine.pending() == [], f"allocation {n}: a future left in the table"
        # a cancelled operation, or a send the cancel found on the wire, ends on its own
        await aclient._engine.wind_down()
        await until(lambda: aclient.stats()["aio"]["pending"] == 0)
        assert aclient._engine.pending() == []
        await check(n, inputs, res)
        if not fired:
            assert not isinstance(res, BaseException), f"no allocation failed, yet {res!r}"
            return n
        n += 1


async def until(predicate, timeout=LIMIT):
    """Waits for a condition (an event the test cannot await directly)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def unlocked(emu, q):
    return [m["locked"] for m in emu.messages(q)] in ([], [False])


async def test_send_out_of_memory(aclient, emu, make_queue, failalloc):
    q = make_queue(lock_duration=5)
    seen = {}

    async def setup(n):
        return f"m{n}"

    async def op(mid):
        return await aclient.send(q, b"x", message_id=mid)

    async def check(n, mid, res):
        seen[n] = type(res).__name__
        there = [m["message_id"] for m in emu.messages(q)].count(mid)
        if isinstance(res, MemoryError):
            assert there == 0, f"allocation {n}: send said MemoryError, but the message was sent"
        elif isinstance(res, OutcomeUnknownError):
            assert there in (0, 1)
        else:
            assert there == 1

    count = await sweep(failalloc, aclient, setup, op, check)
    assert count > 3 and set(seen.values()) == {"MemoryError", "OutcomeUnknownError", "NoneType"}
    await aclient.send(q, b"after", message_id="after")
    msg = await aclient.peek_lock(q, timeout=1)
    assert msg is not None
    await msg.complete()


async def test_peek_lock_out_of_memory(aclient, emu, make_queue, failalloc):
    async def setup(n):
        q = make_queue(lock_duration=5)
        await aclient.send(q, b"x", message_id=f"m{n}")
        return q

    async def op(q):
        return await aclient.peek_lock(q, timeout=2)

    async def check(n, q, res):
        if isinstance(res, BaseException):
            assert isinstance(res, MemoryError), res
            # the receive was cancelled: a lock that reached the engine anyway was
            # given back at once; one the server took for the aborted transfer
            # (pl_aio_cancel) lasts a lock duration, and no longer
            [m] = emu.messages(q)
            assert m["message_id"] == f"m{n}" and m["delivery_count"] <= 1
        else:
            assert res is not None and res.message_id == f"m{n}"
            await res.complete()
            assert emu.messages(q) == []
        emu.advance(6)  # a lock duration: nothing renews a lock nobody holds
        assert unlocked(emu, q)

    count = await sweep(failalloc, aclient, setup, op, check, acts=False)
    assert count > 3
    q = await setup(-1)
    msg = await aclient.peek_lock(q, timeout=1)
    await msg.complete()


async def held(aclient, make_queue, n):
    """A queue with message m<n> in it, peek-locked: (queue, message)."""
    q = make_queue(lock_duration=5)
    await aclient.send(q, b"x", message_id=f"m{n}")
    msg = await aclient.peek_lock(q, timeout=2)
    assert msg is not None
    return q, msg


async def check_settle(emu, n, inputs, res):
    """A settle's invariants after allocation n failed (res: its result or error)."""
    q, msg = inputs
    left = emu.messages(q)
    if isinstance(res, MemoryError):
        assert [m["locked"] for m in left] == [True], f"allocation {n}: MemoryError, yet completed"
        assert msg.state == "held"
        await msg.abandon()
    elif isinstance(res, OutcomeUnknownError):
        # the message says what became of it: settled, or held (the complete
        # was stopped before it was sent) and then completed now exactly once
        assert msg.state in ("settled", "held", "unknown"), msg.state
        if msg.state == "held":
            await msg.complete()
        assert emu.messages(q) == [] or msg.state == "unknown"
    else:
        assert left == [] and msg.state == "settled"
    emu.advance(6)
    assert unlocked(emu, q)


async def test_complete_out_of_memory(aclient, emu, make_queue, failalloc):
    async def setup(n):
        return await held(aclient, make_queue, n)

    async def op(inputs):
        return await inputs[1].complete()

    async def check(n, inputs, res):
        await check_settle(emu, n, inputs, res)

    count = await sweep(failalloc, aclient, setup, op, check)
    assert count > 3
    q, msg = await setup(-1)
    await msg.complete()
    assert emu.messages(q) == []


async def test_block_exit_out_of_memory(aclient, emu, make_queue, failalloc):
    """`async with msg:`, every processor's settle: its exit (pl_aio_finish and the
    future run(id_=) waits on) swept like a complete."""

    async def setup(n):
        return await held(aclient, make_queue, n)

    async def op(inputs):
        async with inputs[1]:
            pass

    async def check(n, inputs, res):
        await check_settle(emu, n, inputs, res)

    count = await sweep(failalloc, aclient, setup, op, check)
    assert count > 3
    q, msg = await setup(-1)
    async with msg:
        pass
    assert emu.messages(q) == [] and msg.state == "settled"


async def test_undelivered_error_is_named(aclient, emu, make_queue, monkeypatch):
    """A completion its future cannot take for another reason than memory: the
    send's outcome is unknown, and the error says why (text and __cause__)."""
    q = make_queue()
    refused = []

    class Refusing(asyncio.Future):
        def set_result(self, result):
            if not refused:
                refused.append(result)
                raise ValueError("refused by the test")
            super().set_result(result)

    monkeypatch.setattr(asyncio, "Future", Refusing)
    with pytest.raises(OutcomeUnknownError) as info:
        await aclient.send(q, b"x", message_id="m")
    assert refused and isinstance(info.value.__cause__, ValueError)
    assert "out of memory" not in str(info.value) and "refused by the test" in str(info.value)
    assert [m["message_id"] for m in emu.messages(q)] == ["m"]  # it did act
    assert aclient._engine.pending() == []


async def test_spare_error_keeps_nothing(aclient):
    """The OutcomeUnknownError kept for when none can be made is raised bare each
    time: no traceback, context or cause of an earlier raise."""
    calls = []

    def factory(code, status, retryable, text):
        calls.append(text)
        if len(calls) > 1:
            raise MemoryError  # (as when out of memory)
        return peeklock.errors.from_code(code, status, retryable, text)

    _core.pl_py_set_error_factory(factory)
    try:
        try:
            try:
                raise ValueError("earlier")
            except ValueError:
                _core.pl_py_aio_lost(aclient._engine._a, 0, _core.pl_aio_send)
        except OutcomeUnknownError as e:
            first = e
        assert isinstance(first.__context__, ValueError)
        with pytest.raises(OutcomeUnknownError) as info:
            _core.pl_py_aio_lost(aclient._engine._a, 0, _core.pl_aio_send)
    finally:
        _core.pl_py_set_error_factory(peeklock.errors.from_code)
    assert info.value is first  # the spare
    assert info.value.__context__ is None and info.value.__cause__ is None
    assert info.value.__traceback__.tb_next is None  # this raise's frame only


@pytest.mark.parametrize("future", ["c", "python"])
async def test_callbacks_run_once_when_scheduling_fails(aclient, make_queue, monkeypatch, future):
    """A future with two done-callbacks (its task's wake-up and another, as when
    aclose() or a gather waits for it) whose loop cannot schedule the second
    (call_soon fails, as out of memory): each runs exactly once, in asyncio's C
    Future (which scheduled the first) and the pure-Python one alike."""
    q = make_queue()
    if future == "python":
        monkeypatch.setattr(asyncio, "Future", asyncio.futures._PyFuture)
    loop = asyncio.get_running_loop()
    errors = []
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    ran = []
    seen = []
    real = loop.call_soon

    def call_soon(cb, *args, context=None):
        if args and args[0] in seen:  # (a callback of the future under test)
            seen.append(cb)
            if len(seen) == 3:  # the second
                raise MemoryError
        return real(cb, *args, context=context)

    try:
        monkeypatch.setattr(loop, "call_soon", call_soon)
    except AttributeError:
        pytest.skip("this loop's call_soon cannot be replaced")
    submit = peeklock.aio._submit

    def submit_and_watch(*args):
        id_, fut = submit(*args)
        fut.add_done_callback(ran.append)
        seen.append(fut)
        return id_, fut

    monkeypatch.setattr(peeklock.aio, "_submit", submit_and_watch)
    task = asyncio.ensure_future(aclient.send(q, b"x", message_id="m"))
    try:
        assert await asyncio.wait_for(task, LIMIT) is None
        await until(lambda: ran != [])
        await asyncio.sleep(0)  # (a second wake-up would run now)
    finally:
        monkeypatch.undo()
        loop.set_exception_handler(None)
    assert len(seen) >= 3, "the loop's call_soon was not the one asyncio used"
    assert ran == [seen[0]] and errors == []


@pytest.mark.parametrize("op", ["send", "peek_lock"])
async def test_future_cancelled_by_the_reader(aclient, emu, make_queue, monkeypatch, op):
    """A completion whose future takes neither its result nor the error (out of
    memory twice over) is cancelled so that its waiter wakes; the caller, whose
    task was not cancelled, gets what it may assume, not CancelledError."""
    q = make_queue(lock_duration=5)
    if op == "peek_lock":
        await aclient.send(q, b"x", message_id="m")

    class Stubborn(asyncio.Future):
        def set_result(self, result):
            raise MemoryError

        def set_exception(self, exc):
            raise MemoryError

    monkeypatch.setattr(asyncio, "Future", Stubborn)
    if op == "send":
        with pytest.raises(OutcomeUnknownError):
            await aclient.send(q, b"x", message_id="m")
    else:
        with pytest.raises(MemoryError):
            await aclient.peek_lock(q, timeout=2)
    monkeypatch.undo()
    assert aclient._engine.pending() == []
    await aclient._engine.wind_down()
    [m] = emu.messages(q)
    assert m["message_id"] == "m" and not m["locked"]  # sent; a lock got is given back
