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
            renewed = wait_for(lambda: _records(caplog, "lock renewed"))     # 5 s lock
            assert renewed[0].levelname == "DEBUG"
            assert f"message {msg.sequence_number} (id ev-1) in {queue}" in renewed[0].getMessage()
            emu.advance(30)                                  # the server's lock runs out
            lost = wait_for(lambda: _records(caplog, "lock lost"))
            assert lost[0].levelname == "WARNING" and "(id ev-1)" in lost[0].getMessage()
            assert lost[0].threadName == "peeklock-events"
            assert msg.lock_lost                             # still inside the block
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
    while time.monotonic() < deadline:        # several idle waits go by (the event: time)
        thread.join(0.1)
    del c
    gc.collect()
    thread.join(10)
    assert not thread.is_alive()
