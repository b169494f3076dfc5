"""client.process: worker threads, outcomes, summary, and the graceful drain."""

import json
import logging
import os
import signal
import threading
import time

import pytest

import peeklock
from conftest import completed, wait_for


def test_process_outcomes_and_summary(client, emu, queue):
    for i in range(30):
        client.send(queue, str(i).encode(), message_id=f"m{i}")
    failed_once = set()
    lock = threading.Lock()

    def handler(msg):
        i = int(msg.text)
        if i % 5 == 0:
            with lock:
                if i not in failed_once:
                    failed_once.add(i)
                    raise RuntimeError("transient")

    s = client.process(
        queue, handler, concurrency=4, max_renew=60, poll_timeout=1, idle_timeout=2, handle_signals=False
    )
    assert s.processed == 30
    assert s.failed == 6
    assert s.redelivered == 6
    assert s.lost == 0 and s.abandoned_on_drain == 0
    assert s.received == 36
    assert s.stopped_by == "idle"
    done = completed(emu, queue)
    assert len(done) == 30 and set(done.values()) == {1}
    assert "processed 30" in str(s)


def test_process_max_messages(client, queue):
    for i in range(10):
        client.send(queue, b"x")
    s = client.process(queue, lambda m: None, concurrency=3, max_messages=4, poll_timeout=1, handle_signals=False)
    assert s.processed == 4
    assert s.stopped_by == "max_messages"


def _drain_scenario(client, queue, **kwargs):
    """Six messages, four handlers: SIGINT while all four run; the two even handlers
    finish during the drain, the two odd ones outlast its deadline (until `never`)."""
    for i in range(6):
        client.send(queue, str(i).encode(), message_id=f"m{i}")
    started = threading.Semaphore(0)
    release_fast = threading.Event()
    never = threading.Event()
    stop = threading.Event()

    def handler(msg):
        started.release()
        if int(msg.text) % 2 == 0:
            release_fast.wait(30)  # finishes during the drain
        else:
            never.wait(60)  # outlasts the drain deadline

    def interrupt():
        for _ in range(4):
            started.acquire(timeout=30)  # 4 handlers are running
        os.kill(os.getpid(), signal.SIGINT)
        stop.wait(30)  # the processor saw the signal
        release_fast.set()

    threading.Thread(target=interrupt, daemon=True).start()
    s = client.process(queue, handler, concurrency=4, poll_timeout=1, drain_timeout=3, stop_event=stop, **kwargs)
    assert s.stopped_by == "signal"
    assert s.processed == 2  # the two even handlers completed
    assert s.received == 4  # nothing received after the signal
    assert s.in_flight == 0
    return s, never


def test_sigint_drain_leaves_running_handlers_locks_to_expire(client, emu, queue, python_sigint):
    """Default: a handler still running at the deadline keeps its message to itself
    until the lock runs out (renewal stopped), so no other worker runs it meanwhile."""
    s, never = _drain_scenario(client, queue)
    try:
        assert s.left_to_expire == 2 and s.abandoned_on_drain == 0
        assert "left to expire 2" in str(s)
        done = completed(emu, queue)
        assert set(done.values()) == {1} and len(done) == 2
        msgs = emu.messages(queue)
        locked = [m for m in msgs if m["locked"]]
        assert len(msgs) == 4 and len(locked) == 2  # not handed to anyone else yet
        renewed_before = client.stats()["renewer"]["renewals"]
        emu.advance(6)  # past the 5 s lock: back in the queue
        msgs = emu.messages(queue)
        assert len(msgs) == 4 and not any(m["locked"] for m in msgs)
        assert client.stats()["renewer"]["renewals"] == renewed_before
    finally:
        never.set()


def test_sigint_drain_abandon_gives_running_handlers_messages_back(client, emu, queue, python_sigint):
    """on_drain_timeout="abandon": what is still held comes back at once."""
    s, never = _drain_scenario(client, queue, on_drain_timeout="abandon")
    try:
        assert s.abandoned_on_drain == 2 and s.left_to_expire == 0
        done = completed(emu, queue)
        assert set(done.values()) == {1} and len(done) == 2
        msgs = emu.messages(queue)
        assert len(msgs) == 4 and not any(m["locked"] for m in msgs)  # back at once
        wait_for(lambda: client.stats()["abandoned"] >= 2)
    finally:
        never.set()


def test_signal_ignored_at_start_stays_ignored(client, emu, queue):
    """A worker started with SIGINT ignored (`worker &` from a script) keeps it ignored;
    SIGTERM still drains it, and both handlers are as they were afterwards."""
    fallback_hit = threading.Event()
    stop = threading.Event()

    def fallback(signum, frame):
        # SIGTERM before the processor's (or if it took none): a failed assert below, not
        # a test process killed by SIGTERM's default action
        fallback_hit.set()
        stop.set()

    old_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
    old_term = signal.signal(signal.SIGTERM, fallback)
    try:
        client.send(queue, b"x")
        seen = []

        def handler(msg):
            seen.append((signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)))
            os.kill(os.getpid(), signal.SIGINT)  # ignored: nothing happens
            os.kill(os.getpid(), signal.SIGTERM)  # drains

        s = client.process(queue, handler, concurrency=1, poll_timeout=1, stop_event=stop, idle_timeout=10)
        [(during_int, during_term)] = seen
        assert during_int is signal.SIG_IGN
        assert callable(during_term) and during_term is not fallback  # the processor's
        assert not fallback_hit.is_set()
        assert s.stopped_by == "signal" and s.processed == 1
        assert list(completed(emu, queue).values()) == [1]  # completed once
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        assert signal.getsignal(signal.SIGTERM) is fallback
    finally:
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGTERM, old_term)


def test_on_drain_timeout_is_checked(client, queue):
    import pytest

    with pytest.raises(ValueError, match="on_drain_timeout"):
        client.process(queue, lambda m: None, on_drain_timeout="later", handle_signals=False)


# Options the core never sees, checked by Python's processors before a run starts.
SECONDS_OPTION_CASES = [
    ({"drain_timeout": "x"}, TypeError, "drain_timeout must be a number of seconds"),
    ({"drain_timeout": -1}, ValueError, "drain_timeout must be a positive number of seconds"),
    ({"drain_timeout": 0}, ValueError, "drain_timeout must be a positive number of seconds"),
    ({"drain_timeout": float("nan")}, ValueError, "drain_timeout must be a positive number of seconds"),
]


def test_python_s_own_options_are_checked(client, queue):
    import pytest

    stop = threading.Event()
    stop.set()  # a run that got past the checks ends at once
    cases = SECONDS_OPTION_CASES + [
        ({"progress_interval": "x"}, TypeError, "progress_interval must be a number of seconds"),
        ({"progress_interval": -1}, ValueError, "progress_interval must be a non-negative number of seconds"),
        ({"progress_interval": float("inf")}, ValueError, "progress_interval must be a non-negative"),
    ]
    for kwargs, exc, words in cases:
        with pytest.raises(exc, match="^" + words):
            client.process(queue, lambda m: None, stop_event=stop, handle_signals=False, **kwargs)
    s = client.process(queue, lambda m: None, stop_event=stop, handle_signals=False, progress_interval=0)
    assert s.stopped_by == "stop_event"


# The option values are the core's rules (pl_check_process_option), in its words, the
# same for this processor, peeklock.aio's and Lua's process; the types are Python's.
PROCESS_OPTION_CASES = [
    ({"concurrency": 0}, "concurrency: must be a whole number 1..256"),
    ({"concurrency": 257}, "concurrency: must be a whole number 1..256"),
    ({"batch": 0}, "batch: must be a whole number 1..100000"),
    ({"batch": 100001}, "batch: must be a whole number 1..100000"),
    ({"max_messages": 0}, "max_messages: must be a whole number 1..2^53"),
    ({"max_messages": 2**1100}, "max_messages: must be a whole number 1..2^53"),
    ({"max_wait": 3601}, "max_wait: must be 0..3600 seconds"),
    ({"max_wait": float("nan")}, "max_wait: must be 0..3600 seconds"),
    ({"retry_delay": -1}, "retry_delay: must be 0..86400 seconds"),
    ({"retry_delay": float("inf")}, "retry_delay: must be 0..86400 seconds"),
]


def test_option_values_are_the_core_s_rules(client, queue):
    import pytest

    import peeklock

    cases = PROCESS_OPTION_CASES + [
        ({"idle_timeout": 0}, "idle_timeout: must be a positive, finite number of seconds"),
        ({"idle_timeout": float("inf")}, "idle_timeout: must be a positive, finite number of seconds"),
    ]
    for kwargs, words in cases:
        with pytest.raises(peeklock.InvalidArgument) as ei:
            client.process(queue, lambda m: None, handle_signals=False, **kwargs)
        assert str(ei.value) == words
    for kwargs, exc in [({"concurrency": 1.0}, TypeError), ({"batch": "2"}, TypeError), ({"max_wait": "1"}, TypeError)]:
        with pytest.raises(exc):
            client.process(queue, lambda m: None, handle_signals=False, **kwargs)
    with pytest.raises(peeklock.InvalidArgument, match="^entity: "):
        client.process("a/../b", lambda m: None, handle_signals=False)


def test_stop_event(client, queue):
    stop = threading.Event()
    seen = []

    def handler(msg):
        seen.append(msg.text)
        stop.set()

    client.send(queue, b"only")
    s = client.process(queue, handler, concurrency=2, poll_timeout=1, stop_event=stop, handle_signals=False)
    assert seen == ["only"] and s.processed == 1 and s.stopped_by == "stop_event"


def test_on_progress_sees_the_runs_counts_as_they_are(client, queue):
    """The summary on_progress gets mid-run has the run's counts of that moment (the core's,
    taken when it is read): each handler waits until on_progress has seen it running."""
    for i in range(3):
        client.send(queue, str(i).encode(), message_id=f"p{i}")
    running = [0]  # the message whose handler is waiting (1, 2, 3), 0: none
    saw = [threading.Event() for _ in range(4)]
    seen = {}

    def handler(msg):
        running[0] = int(msg.text) + 1
        assert saw[running[0]].wait(10), "on_progress never saw the handler running"

    def on_progress(s):
        k = running[0]
        if k and not saw[k].is_set():
            seen[k] = (s.received, s.processed, s.in_flight)
            saw[k].set()
        seen["last"] = (s.received, s.processed, s.in_flight)

    s = client.process(
        queue,
        handler,
        concurrency=1,
        poll_timeout=1,
        max_messages=3,
        on_progress=on_progress,
        progress_interval=0,
        handle_signals=False,
    )
    assert seen == {1: (1, 0, 1), 2: (2, 1, 1), 3: (3, 2, 1), "last": (3, 3, 0)}
    assert (s.received, s.processed, s.in_flight, s.stopped_by) == (3, 3, 0, "max_messages")


def test_keyboard_interrupt_without_signal_handling_releases_messages(client, emu, queue, python_sigint):
    """KeyboardInterrupt in the processor's thread stops it at once; the handlers keep
    running in their threads, so (on_drain_timeout="expire") their locks are no longer
    renewed and run out, and a handler finishing after that completes nothing."""
    for i in range(3):
        client.send(queue, b"x")
    started = threading.Semaphore(0)
    never = threading.Event()

    def handler(msg):
        started.release()
        never.wait(60)

    def interrupt():
        for _ in range(3):
            started.acquire(timeout=30)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt, daemon=True).start()
    try:
        client.process(queue, handler, concurrency=3, poll_timeout=1, handle_signals=False)
    except KeyboardInterrupt:
        pass
    else:
        never.set()
        raise AssertionError("KeyboardInterrupt was swallowed")
    try:
        renewed = client.stats()["renewer"]["renewals"]
        msgs = emu.messages(queue)
        assert len(msgs) == 3 and all(m["locked"] for m in msgs)  # nobody else has them
        emu.advance(6)  # the 5 s locks run out
        msgs = emu.messages(queue)
        assert len(msgs) == 3 and not any(m["locked"] for m in msgs)
        assert client.stats()["renewer"]["renewals"] == renewed
    finally:
        never.set()
    wait_for(lambda: client.stats()["lost"] >= 3)  # the late completes found no lock
    assert completed(emu, queue) == {}


def test_failed_handler_holds_its_message_for_the_retry_delay(client, emu, queue, caplog):
    """A failure is not abandoned at once (a short outage would dead-letter every
    message in flight): the message stays locked for retry_delay, on_error sees the
    failure first, and a drain cuts the delay short and abandons at once."""
    import logging

    client.send(queue, b"x", message_id="m0")
    failed = threading.Event()
    seen = []
    stop = threading.Event()

    def handler(msg):
        raise ValueError("database unavailable")

    def on_error(msg, exc):
        seen.append((msg.message_id, type(exc).__name__, str(exc)))
        failed.set()

    result = {}
    caplog.set_level(logging.WARNING, logger="peeklock")
    t = threading.Thread(
        target=lambda: result.update(
            s=client.process(
                queue,
                handler,
                concurrency=1,
                poll_timeout=1,
                retry_delay=3600,
                on_error=on_error,
                stop_event=stop,
                drain_timeout=20,
                handle_signals=False,
            )
        )
    )
    t.start()
    assert failed.wait(30)
    assert seen == [("m0", "ValueError", "database unavailable")]
    renewed = client.stats()["renewer"]["renewals"]
    wait_for(lambda: client.stats()["renewer"]["renewals"] > renewed)  # 5 s lock: renewed...
    [m] = emu.messages(queue)
    assert m["state"] == "locked" and m["delivery_count"] == 1  # ...held, not abandoned
    stop.set()
    t.join(30)
    s = result["s"]
    assert (s.failed, s.processed, s.left_to_expire) == (1, 0, 0)
    [m] = emu.messages(queue)
    assert m["state"] == "available"  # abandoned by the drain
    assert s.last_errors == ["handler: ValueError: database unavailable"]
    rec = [r for r in caplog.records if "failed" in r.getMessage()][0]
    assert rec.levelname == "WARNING" and "database unavailable" in rec.getMessage()
    assert rec.exc_info and rec.exc_info[0] is ValueError


def test_exponential_backoff_by_delivery_count():
    from types import SimpleNamespace

    from peeklock.processor import exponential_backoff

    d = exponential_backoff(base=1, cap=60)
    assert [d(SimpleNamespace(delivery_count=n)) for n in (1, 2, 3, 4, 7, 8, 100)] == [1, 2, 4, 8, 60, 60, 60]
    assert exponential_backoff(0.5, 3)(SimpleNamespace(delivery_count=2)) == 1.0


def test_handler_that_settles_its_message_is_not_counted_as_processed(client, emu, queue):
    for i in range(2):
        client.send(queue, str(i).encode(), message_id=f"m{i}")

    def handler(msg):
        if msg.text == "0" and msg.delivery_count == 1:
            msg.abandon()  # gives it back itself; it comes straight back

    s = client.process(queue, handler, concurrency=1, poll_timeout=1, max_messages=3, handle_signals=False)
    assert (s.processed, s.settled_by_handler, s.failed) == (2, 1, 0)
    assert completed(emu, queue) == {"m0": 1, "m1": 1}
    assert "settled by the handler 1" in str(s)


def test_handler_that_settles_then_raises_is_settled_by_it_and_the_run_goes_idle(client, emu, queue):
    # completed, then a second complete raises: counted as the handler's settle, and
    # nothing stays in flight, so idle_timeout ends the run
    client.send(queue, b"x", message_id="m0")

    def handler(msg):
        msg.complete()
        msg.complete()  # StateError: settled already

    done: list = []
    stop = threading.Event()
    t = threading.Thread(
        target=lambda: done.append(
            client.process(
                queue, handler, concurrency=1, poll_timeout=1, idle_timeout=1, stop_event=stop, handle_signals=False
            )
        )
    )
    t.start()
    t.join(20)
    stop.set()  # (a run that never went idle: ended here, the assert below fails)
    t.join(20)
    [s] = done
    assert s.stopped_by == "idle"
    assert (s.settled_by_handler, s.failed, s.abandoned_on_drain, s.in_flight) == (1, 0, 0, 0)
    assert completed(emu, queue) == {"m0": 1}


def test_settle_at_exit_with_unknown_outcome_counts_unknown_and_an_error(client, emu, queue):
    # the handler returns, the block's complete is carried out but its answer lost:
    # counted as unknown (an error), not as a failed handler, as aio and Lua count it
    client.send(queue, b"x", message_id="m0")
    emu.fault(operation="complete", drop=True, after=True, count=1)
    s = client.process(queue, lambda m: None, concurrency=1, poll_timeout=1, max_messages=1, handle_signals=False)
    assert (s.processed, s.failed, s.unknown, s.errors) == (0, 0, 1, 1)
    assert any("settle" in e for e in s.last_errors)
    assert completed(emu, queue) == {"m0": 1}


# The run every processor's suite makes (test_aio.py, tests/lua, tests/nginx): the
# same messages, the same handler, the same counts (the core's: pl_run_tallies).
with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tallies.json")) as _f:
    _RUN = json.load(_f)
TALLIES = _RUN["counts"]


def test_summary_of_processed_settled_abandoned_and_redelivered(client, emu, queue):
    for i in range(3):
        client.send(queue, str(i).encode(), message_id=f"m{i}")

    def handler(msg):
        if msg.text == "1":
            msg.complete()  # settled by the handler itself
        elif msg.text == "2" and msg.delivery_count == 1:
            raise RuntimeError("once")  # abandoned, then delivered again and processed

    s = client.process(
        queue, handler, concurrency=1, poll_timeout=1, max_messages=4, retry_delay=None, handle_signals=False
    )
    assert {k: getattr(s, k) for k in TALLIES} == TALLIES
    assert s.stopped_by == _RUN["stopped_by"] and s.error is None
    assert completed(emu, queue) == {"m0": 1, "m1": 1, "m2": 1}


def test_batch_handler_settles_by_result_and_the_rest_is_completed(client, emu, make_queue):
    q = make_queue(lock_duration=5)
    for i in range(5):
        client.send(q, str(i).encode(), message_id=f"b{i}")
    batches = []

    def handler(msgs):
        batches.append([m.message_id for m in msgs])
        msgs[0].complete()  # settled by the handler itself
        return {msgs[1].sequence_number: "abandon"}  # by its result
        # the other three: completed

    s = client.process(
        q,
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
    # completed by the processor 3, by the handler 1; abandoned by its result 1
    assert (s.processed, s.settled_by_handler, s.failed, s.lost) == (3, 1, 1, 0)
    assert completed(emu, q) == {"b0": 1, "b2": 1, "b3": 1, "b4": 1}
    [m] = emu.messages(q)
    assert (m["message_id"], m["state"]) == ("b1", "available")  # abandoned


def test_batch_max_wait_longer_than_a_receive_takes_several(client, emu, make_queue):
    # max_wait 400 s outlasts the longest receive (300 s): the batch's second receive asks for
    # the longest (it used to be refused as a timeout: an error, and the batch closed early)
    q = make_queue()
    client.send(q, b"0", message_id="m0")
    seen = emu.state()["counters"].get("requests.peek_lock", 0)

    def feed():  # once the second receive waits on the server, the second message comes
        wait_for(lambda: emu.state()["counters"].get("requests.peek_lock", 0) >= seen + 2)
        client.send(q, b"1", message_id="m1")

    feeder = threading.Thread(target=feed)
    feeder.start()
    batches = []
    s = client.process(
        q,
        lambda msgs: batches.append([m.message_id for m in msgs]),
        batch=2,
        max_wait=400,
        concurrency=1,
        poll_timeout=5,
        max_messages=2,
        idle_timeout=60,  # a regression ends, not hangs
        handle_signals=False,
    )
    feeder.join()
    assert batches == [["m0", "m1"]]
    assert (s.processed, s.errors) == (2, 0)


def test_batch_handler_failure_abandons_what_it_left(client, emu, make_queue):
    q = make_queue(lock_duration=5)
    for i in range(3):
        client.send(q, str(i).encode(), message_id=f"f{i}")
    errors = []

    def handler(msgs):
        msgs[2].complete()
        raise RuntimeError("partial failure")

    s = client.process(
        q,
        handler,
        batch=3,
        max_wait=2,
        concurrency=1,
        poll_timeout=1,
        max_messages=3,
        handle_signals=False,
        retry_delay=0,
        on_error=lambda m, e: errors.append(m.message_id),
    )
    assert (s.processed, s.settled_by_handler, s.failed) == (0, 1, 2)
    assert sorted(errors) == ["f0", "f1"]
    assert completed(emu, q) == {"f2": 1}
    assert sorted((m["message_id"], m["state"]) for m in emu.messages(q)) == [("f0", "available"), ("f1", "available")]


def test_batch_is_renewed_while_the_handler_outlasts_the_lock(client, emu, make_queue, caplog):
    import logging

    caplog.set_level(logging.DEBUG, logger="peeklock")
    q = make_queue(lock_duration=5)
    for i in range(4):
        client.send(q, b"x", message_id=f"r{i}")

    def renewed():
        return {
            r.getMessage().split("(id ")[1].split(")")[0]
            for r in caplog.records
            if r.getMessage().startswith("lock renewed")
        }

    def handler(msgs):
        # every lock of the batch is renewed at least once before the handler returns
        wait_for(lambda: renewed() >= {m.message_id for m in msgs})
        assert all(m.state == "held" for m in msgs)

    s = client.process(
        q, handler, batch=4, max_wait=2, concurrency=1, poll_timeout=1, max_messages=4, handle_signals=False
    )
    assert (s.processed, s.lost) == (4, 0)
    assert completed(emu, q) == {f"r{i}": 1 for i in range(4)}


def test_batch_waits_up_to_max_wait_for_more_messages(client, emu, make_queue):
    q = make_queue()
    client.send(q, b"x", message_id="first")
    sizes = []
    stop = threading.Event()

    def handler(msgs):
        sizes.append([m.message_id for m in msgs])
        stop.set()

    def second():  # sent once the first is locked, while the batch is still collecting
        wait_for(lambda: [m["state"] for m in emu.messages(q)] == ["locked"])
        client.send(q, b"y", message_id="second")

    t = threading.Thread(target=second)
    t.start()
    client.process(
        q, handler, batch=10, max_wait=1, concurrency=1, poll_timeout=5, stop_event=stop, handle_signals=False
    )
    t.join(30)
    assert sizes == [["first", "second"]]


def test_batch_max_wait_0_takes_what_is_there(client, emu, make_queue):
    q = make_queue()
    client.send(q, b"x", message_id="only")
    sizes = []
    stop = threading.Event()

    def handler(msgs):
        sizes.append(len(msgs))
        stop.set()

    client.process(
        q, handler, batch=10, max_wait=0, concurrency=1, poll_timeout=1, stop_event=stop, handle_signals=False
    )
    assert sizes == [1] and completed(emu, q) == {"only": 1}


# ---- a failed receive: the core's rule (pl_receive_pause_ms) ----
def _receive_records(caplog, entity):
    return [r for r in caplog.records if r.name == "peeklock" and r.getMessage().startswith(f"receive from {entity} ")]


@pytest.mark.parametrize("batch", [None, 2])
def test_process_on_a_missing_entity_raises_at_once(client, emu, caplog, batch):
    """A typo'd entity cannot pass by waiting: every worker stops, the error is
    logged once at ERROR and process() raises it with the summary attached."""
    caplog.set_level(logging.WARNING, logger="peeklock")
    started = time.monotonic()
    with pytest.raises(peeklock.EntityNotFoundError) as ei:
        client.process("ordrs", lambda m: None, concurrency=4, batch=batch, idle_timeout=10, handle_signals=False)
    assert time.monotonic() - started < 5  # not after the idle timeout: at once
    s = ei.value.summary
    assert s.error is ei.value and s.stopped_by == "error" and s.in_flight == 0
    assert 1 <= s.errors <= 4  # each worker's receive in flight may fail once
    assert "stopped by error: EntityNotFoundError" in str(s)
    errors = [r for r in _receive_records(caplog, "ordrs") if r.levelno == logging.ERROR]
    assert len(errors) == 1 and errors[0].getMessage().endswith("the processor stops")


def test_process_with_a_wrong_key_raises_auth_error(emu, queue, caplog):
    caplog.set_level(logging.WARNING, logger="peeklock")
    client = peeklock.Client(emu.endpoint, key_name="RootManageSharedAccessKey", key="wrong-k3y")
    try:
        with pytest.raises(peeklock.AuthError) as ei:
            client.process(queue, lambda m: None, concurrency=2, idle_timeout=10, handle_signals=False)
    finally:
        client.close()
    s = ei.value.summary
    assert s.stopped_by == "error" and s.processed == 0
    assert "wrong-k3y" not in str(s) and "wrong-k3y" not in caplog.text
    assert len([r for r in _receive_records(caplog, queue) if r.levelno == logging.ERROR]) == 1


def test_process_ends_on_a_refused_receive_and_lets_handlers_finish(client, emu, queue):
    """One worker's receive is refused (401) while the other's handler runs: no
    new receive starts, the handler finishes and its message is completed, then
    process() raises the AuthError."""
    client.send(queue, b"x", message_id="x")
    stop = threading.Event()

    def handler(msg):
        emu.fault(operation="peek_lock", entity=queue, status=401, count=1)  # the other worker's next receive
        assert stop.wait(20)  # set by the run when the refusal ends it

    with pytest.raises(peeklock.AuthError) as ei:
        client.process(
            queue, handler, concurrency=2, poll_timeout=1, stop_event=stop, idle_timeout=10, handle_signals=False
        )
    s = ei.value.summary
    assert s.stopped_by == "error" and s.processed == 1 and s.in_flight == 0 and s.errors == 1
    assert completed(emu, queue) == {"x": 1}


def test_process_pauses_by_the_rule_on_503s_then_goes_on(emu, queue, caplog):
    """Three receives answered 503 (no retry by the client): the worker pauses
    1 s, 2 s, 4 s (the core's schedule) and goes on, then processes the messages."""
    caplog.set_level(logging.WARNING, logger="peeklock")
    client = peeklock.Client.from_connection_string(emu.connection_string, max_retries=0)
    try:
        client.send(queue, b"a", message_id="a")
        client.send(queue, b"b", message_id="b")
        emu.fault(operation="peek_lock", entity=queue, status=503, count=3)
        s = client.process(queue, lambda m: None, concurrency=1, max_messages=2, poll_timeout=1, handle_signals=False)
    finally:
        client.close()
    assert s.processed == 2 and s.errors == 3 and s.error is None and s.stopped_by == "max_messages"
    assert completed(emu, queue) == {"a": 1, "b": 1}
    failures = _receive_records(caplog, queue)
    assert [r.getMessage().rsplit("; ", 1)[1] for r in failures] == [
        "trying again in 1 s",
        "trying again in 2 s",
        "trying again in 4 s",
    ]
    assert all(r.levelno == logging.WARNING for r in failures)
    gaps = [b.created - a.created for a, b in zip(failures, failures[1:])]
    assert gaps[0] >= 1.0 and gaps[1] >= 2.0  # the pause grew between consecutive failures


def test_process_on_a_client_closed_under_it_ends_quietly_as_closed(emu, queue):
    """close() from another thread while the run receives: the run ends without
    an error and says why (stopped_by "closed", not a stop_event the caller never set)."""
    client = peeklock.Client.from_connection_string(emu.connection_string)
    handled = threading.Event()
    client.send(queue, b"x", message_id="x")

    def close_after_the_handler():
        assert handled.wait(20)
        client.close()

    closer = threading.Thread(target=close_after_the_handler)
    closer.start()
    try:
        s = client.process(queue, lambda m: handled.set(), concurrency=2, poll_timeout=5, handle_signals=False)
    finally:
        closer.join()
        client.close()
    assert s.stopped_by == "closed" and s.error is None, s
    assert "stopped by closed" in str(s)


def test_a_failed_receive_is_logged_outside_the_processor_s_lock(emu, make_queue):
    """A log handler's I/O (a file, a network exporter) must not hold up the other
    workers: the processor logs a failed receive after releasing its lock."""
    from peeklock.processor import Processor

    q = make_queue()
    client = peeklock.Client.from_connection_string(emu.connection_string, max_retries=0)
    seen = []

    class Probe(logging.Handler):
        def emit(self, record):
            if record.getMessage().startswith(f"receive from {q} "):
                seen.append(proc._lock.locked())
                proc.stop_event.set()

    proc = Processor(client, q, lambda m: None, concurrency=1, poll_timeout=1, handle_signals=False)
    probe = Probe(level=logging.WARNING)
    logging.getLogger("peeklock").addHandler(probe)
    try:
        emu.fault(operation="peek_lock", entity=q, status=503, count=1)
        proc.run()
    finally:
        logging.getLogger("peeklock").removeHandler(probe)
        client.close()
    assert seen == [False]


# ---- a batch given back while it is collected: how each message ended ----
def _stop_while_collecting(client, emu, queue, stop, lose):
    """Runs a batch processor in the background until ``stop`` (the caller sets it
    while the batch waits for more); ``lose``: the server's lock on the one message
    collected runs out first and the renewer finds it lost. Returns the summary."""
    done = []
    t = threading.Thread(
        target=lambda: done.append(
            client.process(
                queue,
                lambda msgs: None,
                batch=5,
                max_wait=60,
                concurrency=1,
                poll_timeout=5,
                stop_event=stop,
                handle_signals=False,
            )
        )
    )
    t.start()
    wait_for(lambda: [m["state"] for m in emu.messages(queue)] == ["locked"])
    if lose:
        emu.advance(30)  # the lock runs out, and with it the message's time to live
        wait_for(lambda: client.stats()["events"]["lost"] == 1)  # the renewer's renew: 404
    stop.set()
    while t.is_alive():  # the collector's long poll (at most max_wait, emulator time) ends as the clock moves
        emu.advance(61)
        t.join(0.2)
    [s] = done
    return s


def test_batch_lock_lost_while_collecting_counts_lost_not_drained(client, emu, queue):
    client.send(queue, b"x", message_id="t0", time_to_live=10)
    s = _stop_while_collecting(client, emu, queue, threading.Event(), lose=True)
    assert (s.received, s.lost, s.abandoned_on_drain, s.in_flight) == (1, 1, 0, 0)
    assert emu.messages(queue) == [] and completed(emu, queue) == {}


def test_batch_give_back_with_unknown_outcome_counts_unknown(client, emu, make_queue):
    queue = make_queue(lock_duration=300)  # (outlasts the clock moves that end the long poll)
    client.send(queue, b"x", message_id="u0")
    emu.fault(operation="unlock", entity=queue, drop=True, after=True, count=1)  # applied, answer lost
    s = _stop_while_collecting(client, emu, queue, threading.Event(), lose=False)
    assert (s.received, s.unknown, s.errors, s.abandoned_on_drain, s.in_flight) == (1, 1, 1, 0, 0)
    assert completed(emu, queue) == {}


# ---- the failure log says what becomes of the message ----
@pytest.mark.parametrize("settle", ["complete", "abandon"])
def test_failure_log_of_a_message_the_handler_settled_says_so(client, emu, queue, caplog, settle):
    client.send(queue, b"x", message_id="s0")
    caplog.set_level(logging.WARNING, logger="peeklock")

    def handler(msg):
        getattr(msg, settle)()
        raise RuntimeError("after settling")

    s = client.process(queue, handler, concurrency=1, poll_timeout=1, max_messages=1, handle_signals=False)
    assert s.settled_by_handler == 1
    [rec] = [r for r in caplog.records if r.getMessage().startswith("handler for message")]
    word = {"complete": "completed", "abandon": "abandoned"}[settle]
    assert rec.getMessage().endswith(f"failed: RuntimeError: after settling; it was already {word} by the handler")


def test_failure_log_of_a_held_message_says_abandoning_after_the_delay(client, emu, queue, caplog):
    client.send(queue, b"x", message_id="h0")
    caplog.set_level(logging.WARNING, logger="peeklock")

    def handler(msg):
        raise RuntimeError("boom")

    client.process(queue, handler, concurrency=1, poll_timeout=1, max_messages=1, retry_delay=0.1, handle_signals=False)
    [rec] = [r for r in caplog.records if r.getMessage().startswith("handler for message")]
    assert rec.getMessage().endswith("failed: RuntimeError: boom; abandoning in 0.1 s")


# ---- processor.summary is current when read ----
def test_summary_read_mid_run_has_the_counts_of_that_moment(client, queue):
    from peeklock.processor import Processor

    for i in range(3):
        client.send(queue, str(i).encode(), message_id=f"n{i}")
    seen = []

    def handler(msg):
        s = proc.summary  # as a health check in another thread would read it
        seen.append((s.received, s.processed, s.in_flight))

    proc = Processor(client, queue, handler, concurrency=1, poll_timeout=1, max_messages=3, handle_signals=False)
    s = proc.run()
    # the N-th handler sees the first N-1 processed (and itself received, in flight)
    assert seen == [(1, 0, 1), (2, 1, 1), (3, 2, 1)]
    assert (s.received, s.processed, s.in_flight) == (3, 3, 0) and proc.summary is s
    elapsed = s.elapsed
    assert proc.summary.elapsed == elapsed  # after the run: its final figures, unchanged


# ---- on_drain_timeout="abandon": a running handler's message, counted after its abandon ----
def _drain_abandon_processor(client, queue, handler, stop):
    """One worker, a 0.2 s drain deadline that abandons, stopped by ``stop``."""
    from peeklock.processor import Processor

    return Processor(
        client,
        queue,
        handler,
        concurrency=1,
        poll_timeout=1,
        drain_timeout=0.2,
        on_drain_timeout="abandon",
        stop_event=stop,
        handle_signals=False,
    )


def _drain_abandon_while_handler_runs(client, emu, queue, lose, complete=False):
    """One handler outlasts the drain (on_drain_timeout="abandon"); ``lose``: its
    lock runs out on the server first and the renewer finds it lost; ``complete``:
    the handler completes its message first, then goes on running. The handler
    is let go after the run and returns (its message no longer held). Returns the
    run's summary and its counts once the handler's thread ended."""

    stop, go = threading.Event(), threading.Event()

    def handler(msg):
        if complete:
            msg.complete()
        go.wait(60)

    proc = _drain_abandon_processor(client, queue, handler, stop)

    def stop_while_handled():
        if complete:
            wait_for(lambda: len(completed(emu, queue)) == 1)
        else:
            wait_for(lambda: [m["state"] for m in emu.messages(queue)] == ["locked"])
        if lose:
            emu.advance(30)  # the lock runs out, and with it the message's time to live
            wait_for(lambda: client.stats()["events"]["lost"] == 1)  # the renewer's renew: 404
        stop.set()

    helper = threading.Thread(target=stop_while_handled)
    helper.start()
    try:
        s = proc.run()
    finally:
        go.set()
        helper.join()
    # the handler returns after the drain gave its message back: it is not counted again
    wait_for(lambda: not any(t.name.startswith("peeklock-worker-") for t in threading.enumerate()))
    after = peeklock._core.pl_run_tallies_get(proc._run)
    return s, after


def test_drain_abandon_of_a_lost_lock_counts_lost(client, emu, queue):
    client.send(queue, b"x", message_id="d0", time_to_live=10)
    s, after = _drain_abandon_while_handler_runs(client, emu, queue, lose=True)
    assert (s.received, s.lost, s.abandoned_on_drain, s.in_flight) == (1, 1, 0, 0), s
    assert (after["lost"], after["abandoned_on_drain"], after["processed"], after["in_flight"]) == (1, 0, 0, 0)
    assert emu.messages(queue) == [] and completed(emu, queue) == {}


def test_drain_abandon_of_a_message_the_handler_completed(client, emu, queue):
    # the handler completed its message and is still running at the drain deadline:
    # nothing to abandon, counted as settled by the handler, no error noted
    client.send(queue, b"x", message_id="d2")
    s, after = _drain_abandon_while_handler_runs(client, emu, queue, lose=False, complete=True)
    assert (s.received, s.settled_by_handler, s.abandoned_on_drain, s.errors, s.in_flight) == (1, 1, 0, 0, 0), s
    assert not any(e.startswith("abandon on drain") for e in s.last_errors), s.last_errors
    assert (after["settled_by_handler"], after["abandoned_on_drain"], after["in_flight"]) == (1, 0, 0)
    assert len(completed(emu, queue)) == 1 and emu.messages(queue) == []


def test_drain_abandon_leaves_a_complete_under_way_to_the_handler(client, emu, queue):
    # at the drain deadline the handler's own complete is still under way (the
    # emulator holds its answer): it is not abandoned, and counts as the handler's

    client.send(queue, b"x", message_id="d3")
    emu.fault(operation="complete", entity=queue, delay_ms=4000, count=1)
    stop, held = threading.Event(), []

    def handler(msg):
        held.append(msg)
        msg.complete()

    proc = _drain_abandon_processor(client, queue, handler, stop)

    def stop_while_settling():
        wait_for(lambda: held and held[0].state == "settling")
        stop.set()

    helper = threading.Thread(target=stop_while_settling)
    helper.start()
    try:
        s = proc.run()
    finally:
        helper.join()
    wait_for(lambda: not any(t.name.startswith("peeklock-worker-") for t in threading.enumerate()))
    after = peeklock._core.pl_run_tallies_get(proc._run)
    assert (s.received, s.settled_by_handler, s.abandoned_on_drain, s.errors) == (1, 1, 0, 0), s
    assert (after["settled_by_handler"], after["abandoned_on_drain"], after["in_flight"]) == (1, 0, 0)
    assert len(completed(emu, queue)) == 1 and emu.messages(queue) == []


def test_drain_abandon_with_unknown_outcome_counts_unknown(client, emu, queue):
    client.send(queue, b"x", message_id="d1")
    emu.fault(operation="unlock", entity=queue, drop=True, after=True, count=1)  # applied, answer lost
    s, after = _drain_abandon_while_handler_runs(client, emu, queue, lose=False)
    assert (s.received, s.unknown, s.errors, s.abandoned_on_drain, s.in_flight) == (1, 1, 1, 0, 0), s
    assert (after["unknown"], after["abandoned_on_drain"], after["processed"], after["in_flight"]) == (1, 0, 0, 0)
    assert any(e.startswith("abandon on drain: ") for e in s.last_errors), s.last_errors
    assert completed(emu, queue) == {} and [m["locked"] for m in emu.messages(queue)] == [False]
