"""The blocking client's close() ends long polls waiting on other threads (within about
a second, with ClosedError) instead of letting them run to their timeout, and the
ended polls lock nothing (checked in the emulator's state)."""

import threading
import time

import pytest

import peeklock
from conftest import wait_for


def test_close_interrupts_waiting_long_polls(emu, queue):
    c = peeklock.Client.from_connection_string(emu.connection_string)
    results = []

    def poll():
        try:
            results.append(c.peek_lock(queue, timeout=30))
        except peeklock.Error as e:
            results.append(e)

    threads = [threading.Thread(target=poll) for _ in range(4)]
    for t in threads:
        t.start()
    wait_for(lambda: emu.state()["counters"].get("requests.peek_lock", 0) >= 4)
    t0 = time.monotonic()
    c.close()
    for t in threads:
        t.join(10)
    assert time.monotonic() - t0 < 5
    assert len(results) == 4 and all(isinstance(r, peeklock.ClosedError) for r in results)
    with pytest.raises(peeklock.ClosedError):
        c.peek_lock(queue, timeout=1)
    other = peeklock.Client.from_connection_string(emu.connection_string)
    other.send(queue, b"after", message_id="a")
    assert [m["locked"] for m in emu.messages(queue)] == [False]
    msg = other.peek_lock(queue, timeout=5)
    assert msg.delivery_count == 1
    msg.complete()
    other.close()


def test_close_leaves_held_messages_settleable(emu, queue):
    c = peeklock.Client.from_connection_string(emu.connection_string)
    c.send(queue, b"x", message_id="h")
    msg = c.peek_lock(queue, timeout=5)
    c.close()
    msg.complete()  # settles still work after close
    assert emu.entity_state(queue)["completed"] == {"h": 1}
