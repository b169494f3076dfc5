"""Renewer events reach the log as they happen, not when the block exits."""

import logging

import pytest

import peeklock
from conftest import wait_for


def _records(caplog, text):
    return [r for r in caplog.records if text in r.getMessage()]


def test_renewals_and_a_lost_lock_are_logged_while_the_block_runs(client, emu, queue, caplog):
    caplog.set_level(logging.DEBUG, logger="peeklock")
    client.send(queue, b"x", message_id="ev-1")
    with pytest.raises(peeklock.LockLostError):
        with client.peek_lock(queue, timeout=1) as msg:
            token = msg.lock_token
            renewed = wait_for(lambda: _records(caplog, "lock renewed"))  # 5 s lock
            assert renewed[0].levelname == "DEBUG"
            assert f"message {msg.sequence_number} (id ev-1) in {queue}" in renewed[0].getMessage()
            emu.advance(30)  # the server's lock runs out
            lost = wait_for(lambda: _records(caplog, "lock lost"))
            assert lost[0].levelname == "WARNING" and "(id ev-1)" in lost[0].getMessage()
            assert lost[0].threadName == "peeklock-events"
            assert msg.lock_lost  # still inside the block
    assert token not in caplog.text
    assert client.stats()["events"]["lost"] == 1


def test_cap_reached_is_a_warning_at_the_moment(client, emu, queue, caplog):
    caplog.set_level(logging.DEBUG, logger="peeklock")
    client.send(queue, b"x", message_id="cap-1")
    msg = client.peek_lock(queue, timeout=1, max_renew=0.001)
    with msg:
        rec = wait_for(lambda: _records(caplog, "max_renew reached"))
        assert rec[0].levelname == "WARNING" and "(id cap-1)" in rec[0].getMessage()


def test_a_dropped_client_stops_its_renewer_and_events_thread(emu, queue):
    import gc
    import threading

    c = peeklock.Client.from_connection_string(emu.connection_string)
    c.send(queue, b"x")
    with c.peek_lock(queue, timeout=1):
        pass
    assert any(t.name == "peeklock-events" for t in threading.enumerate())
    del c
    gc.collect()
    wait_for(lambda: not any(t.name == "peeklock-events" for t in threading.enumerate()))


def test_an_idle_dropped_client_is_collected_too(emu, queue, monkeypatch):
    """The events thread holds no reference to its client while it waits: after
    an idle wait ends with nothing, a dropped client is still collected."""
    import gc
    import threading

    from peeklock import client as client_module

    monkeypatch.setattr(client_module, "_EVENT_WAIT_MS", 100)
    c = peeklock.Client.from_connection_string(emu.connection_string)
    c._renewer()
    thread = [t for t in threading.enumerate() if t.name == "peeklock-events"][-1]
    import time

    deadline = time.monotonic() + 0.5
    while time.monotonic() < deadline:  # several idle waits go by (the event: time)
        thread.join(0.1)
    del c
    gc.collect()
    thread.join(10)
    assert not thread.is_alive()


class _During(logging.Handler):
    """Keeps each peeklock record with whether the call under test was still running
    when it was emitted (and on which thread)."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.in_call = False
        self.seen = []

    def emit(self, record):
        self.seen.append((record, self.in_call))

    def call(self, fn, *args, **kwargs):
        self.in_call = True
        try:
            return fn(*args, **kwargs)
        finally:
            self.in_call = False


@pytest.fixture
def during():
    h = _During()
    lg = logging.getLogger("peeklock")
    old = lg.level
    lg.addHandler(h)
    lg.setLevel(logging.DEBUG)
    yield h
    lg.removeHandler(h)
    lg.setLevel(old)


def _no_secret(text, *tokens):
    assert "SAS_KEY_VALUE" not in text and "sig=" not in text
    assert "SharedAccessSignature" not in text
    for t in tokens:
        assert t not in text


def test_retries_and_failed_calls_are_logged_while_the_call_runs(emu, queue, during):
    import threading

    c = peeklock.Client.from_connection_string(emu.connection_string, max_retries=2)
    try:
        emu.fault(operation="send", entity=queue, status=503, count=2)
        during.call(c.send, queue, b"x", message_id="r-1")  # the C fast path
        retries = [(r, live) for r, live in during.seen if "retrying" in r.getMessage()]
        assert [r.peeklock_attempt for r, _ in retries] == [1, 2]
        for r, live in retries:
            assert live and r.levelname == "DEBUG"
            assert r.threadName == threading.current_thread().name
            assert r.peeklock_operation == "send" and r.peeklock_entity == queue
            assert r.peeklock_status == 503 and r.peeklock_delay_ms > 0
            assert r.getMessage().startswith(
                f"send on {queue}: attempt {r.peeklock_attempt} failed (HTTP 503), retrying in "
            )
        assert c.stats()["retries"] == 2 and c.stats()["failed"] == 0

        during.seen.clear()
        emu.fault(operation="peek_lock", entity=queue, status=503)  # every attempt
        with pytest.raises(peeklock.ThrottledError):
            during.call(c.peek_lock, queue, timeout=1)
        [(failed, live)] = [(r, live) for r, live in during.seen if r.levelno == logging.WARNING]
        assert live and failed.peeklock_attempt == 3 and failed.peeklock_operation == "peek_lock"
        assert failed.getMessage().startswith(f"peek_lock on {queue} failed after 3 attempts (HTTP 503): ")
        assert len([r for r, _ in during.seen if r.levelno == logging.DEBUG]) == 2
        emu.clear_faults()

        msg = c.peek_lock(queue, timeout=1)
        token = msg.lock_token
        during.seen.clear()
        emu.advance(60)  # the server's lock runs out
        with pytest.raises(peeklock.LockLostError):
            during.call(msg.complete)
        [(lost, live)] = during.seen
        assert live and lost.levelname == "WARNING" and lost.peeklock_status == 404
        assert lost.getMessage().startswith(f"complete on {queue} failed after 1 attempt ")
        assert c.stats()["failed"] == 2
        _no_secret("\n".join(r.getMessage() for r, _ in during.seen), token)
    finally:
        c.close()


def test_a_call_that_succeeds_at_once_logs_nothing(client, queue, during):
    client.send(queue, b"x")
    assert client.peek_lock(queue, timeout=0) is not None
    assert client.peek_lock(queue, timeout=0) is None  # nothing there: no failure
    assert during.seen == []
    assert client.stats()["failed"] == 0


def test_a_renewal_failure_is_a_warning_at_the_moment(client, emu, queue, caplog):
    caplog.set_level(logging.DEBUG, logger="peeklock")
    client.send(queue, b"x", message_id="rf-1")
    emu.fault(operation="renew", entity=queue, status=503, count=1)
    with pytest.raises(peeklock.LockLostError):
        with client.peek_lock(queue, timeout=1) as msg:
            token = msg.lock_token
            failed = wait_for(lambda: _records(caplog, "lock renewal failed"))  # 5 s lock
            assert failed[0].levelname == "WARNING" and failed[0].threadName == "peeklock-events"
            assert failed[0].getMessage() == (
                f"lock renewal failed: message {msg.sequence_number} (id rf-1) in {queue}: "
                "HTTP 503 (PL_ETHROTTLED: throttled by the server); retrying"
            )
            renewed = wait_for(lambda: _records(caplog, "lock renewed"))
            slack = float(renewed[0].getMessage().split(", ")[1].split(" s ")[0])
            assert 0 < slack < 5  # seconds of the lock left
            emu.advance(30)  # the server's lock runs out
            wait_for(lambda: _records(caplog, "lock lost"))
            last = _records(caplog, "lock renewal failed")[-1].getMessage()
            assert "HTTP 404" in last and "retrying" not in last
    _no_secret(caplog.text, token)
    s = client.stats()
    assert s["events"]["renewal_failures"] == 2 == s["renewer"]["failures"]
    assert s["renew_failures"] == 2


def test_async_retries_and_failed_requests_are_logged_as_the_sync_ones(emu, queue, caplog):
    """peeklock.aio's engine calls no log hook: its completions are logged as they
    reach the loop, with the records of test_retries_and_failed_calls_are_logged…"""
    import asyncio

    import peeklock.aio

    caplog.set_level(logging.DEBUG, logger="peeklock")

    async def main():
        async with peeklock.aio.Client.from_connection_string(emu.connection_string, max_retries=2) as c:
            await c.send(queue, b"x", message_id="a-1")  # at once: nothing
            assert await c.peek_lock(queue, timeout=0) is not None  # its lock expires below
            assert await c.peek_lock(queue, timeout=0) is None  # nothing there: no failure
            assert [r for r in caplog.records if hasattr(r, "peeklock_operation")] == []

            emu.fault(operation="send", entity=queue, status=503, count=2)
            await c.send(queue, b"y", message_id="a-2")
            [retried] = [r for r in caplog.records if hasattr(r, "peeklock_operation")]
            assert retried.levelname == "DEBUG" and retried.peeklock_operation == "send"
            assert retried.peeklock_entity == queue and retried.peeklock_attempt == 3
            assert retried.getMessage() == f"send on {queue}: succeeded at attempt 3 after 2 retries"
            caplog.clear()

            emu.fault(operation="peek_lock", entity=queue, status=503)  # every attempt
            with pytest.raises(peeklock.ThrottledError):
                await c.peek_lock(queue, timeout=1)
            [failed] = [r for r in caplog.records if hasattr(r, "peeklock_operation")]
            assert failed.levelname == "WARNING" and failed.peeklock_operation == "peek_lock"
            assert failed.peeklock_attempt == 3 and failed.peeklock_status == 503
            assert failed.peeklock_entity == queue and failed.peeklock_code == peeklock.errors.PL_ETHROTTLED
            assert failed.getMessage().startswith(f"peek_lock on {queue} failed after 3 attempts (HTTP 503): ")
            emu.clear_faults()
            caplog.clear()

            msg = await c.peek_lock(queue, timeout=1)
            token = msg.lock_token
            emu.advance(60)  # the server's lock runs out
            with pytest.raises(peeklock.LockLostError):
                await msg.complete()
            [lost] = [r for r in caplog.records if hasattr(r, "peeklock_operation")]
            assert lost.levelname == "WARNING" and lost.peeklock_status == 404
            assert lost.peeklock_operation == "complete" and lost.peeklock_attempt == 1
            assert lost.getMessage().startswith(f"complete on {queue} failed after 1 attempt ")
            return token

    token = asyncio.run(main())
    _no_secret(caplog.text, token)


def _one_receive_failure_line(caplog, queue):
    """The failed receive (two 503s, max_retries=1) is told in one WARNING with the
    call's fields, not also as the core's own failure line."""
    [line] = [
        r
        for r in caplog.records
        if r.levelno >= logging.WARNING and ("peek_lock" in r.getMessage() or "receive" in r.getMessage())
    ]
    assert line.levelname == "WARNING" and line.peeklock_operation == "peek_lock"
    assert line.peeklock_entity == queue and line.peeklock_status == 503
    assert line.peeklock_attempt == 2
    assert line.getMessage().startswith(f"receive from {queue} failed after 2 attempts: ")
    assert line.getMessage().count("HTTP 503") == 1, line.getMessage()  # the status, once


def test_a_failed_receive_in_the_processor_is_one_line(emu, queue, caplog):
    caplog.set_level(logging.DEBUG, logger="peeklock")
    c = peeklock.Client.from_connection_string(emu.connection_string, max_retries=1)
    try:
        c.send(queue, b"x")
        emu.fault(operation="peek_lock", entity=queue, status=503, count=2)
        s = c.process(queue, lambda m: None, concurrency=1, poll_timeout=1, max_messages=1, handle_signals=False)
    finally:
        c.close()
    assert s.processed == 1 and s.errors == 1
    _one_receive_failure_line(caplog, queue)


def test_a_failed_receive_in_the_async_processor_is_one_line(emu, queue, caplog):
    import asyncio

    import peeklock.aio

    caplog.set_level(logging.DEBUG, logger="peeklock")

    async def main():
        async with peeklock.aio.Client.from_connection_string(emu.connection_string, max_retries=1) as c:
            await c.send(queue, b"x")
            emu.fault(operation="peek_lock", entity=queue, status=503, count=2)
            return await c.process(
                queue, lambda m: asyncio.sleep(0), concurrency=1, poll_timeout=1, max_messages=1, handle_signals=False
            )

    s = asyncio.run(main())
    assert s.processed == 1 and s.errors == 1
    _one_receive_failure_line(caplog, queue)
