"""Every outcome of the context manager: success, exception, lost lock (clock
and fault injection), KeyboardInterrupt; settled exactly once each time."""

import signal
import threading

import pytest

import peeklock
from conftest import completed, wait_for


def _one(client, emu, queue, mid="m"):
    client.send(queue, b"body", message_id=mid)
    return client.peek_lock(queue, timeout=5)


def test_clean_exit_completes_once(client, emu, queue):
    with _one(client, emu, queue) as msg:
        assert msg.state == "held"
        assert client.stats()["renewer"]["held"] == 1  # the C renewer holds it
    assert msg.state == "settled"
    assert client.stats()["renewer"]["held"] == 0
    assert completed(emu, queue) == {"m": 1}
    assert emu.messages(queue) == []


def test_peek_lock_as_context_manager(client, emu, queue):
    client.send(queue, b"x", message_id="cm")
    with client.peek_lock(queue, timeout=5) as msg:
        assert msg.body == b"x"
    assert completed(emu, queue) == {"cm": 1}


def test_exception_abandons_and_reraises(client, emu, queue):
    msg = _one(client, emu, queue)
    with pytest.raises(ZeroDivisionError):
        with msg:
            1 / 0
    assert msg.state == "settled"
    assert completed(emu, queue) == {}
    [m] = emu.messages(queue)
    assert m["locked"] is False  # back at once, not after the lock ran out
    again = client.peek_lock(queue, timeout=5)
    assert again.delivery_count == 2
    again.complete()


def test_keyboard_interrupt_abandons_and_reraises(client, emu, queue):
    msg = _one(client, emu, queue)
    with pytest.raises(KeyboardInterrupt):
        with msg:
            raise KeyboardInterrupt
    assert msg.state == "settled"
    assert completed(emu, queue) == {}
    assert emu.messages(queue)[0]["locked"] is False
    assert client.stats()["abandoned"] == 1


def test_real_sigint_inside_the_block(client, emu, queue, python_sigint):
    msg = _one(client, emu, queue)
    with pytest.raises(KeyboardInterrupt):
        with msg:
            # a real SIGINT, sent to this (the main) thread: Python's handler runs
            # before pthread_kill returns
            signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
            pytest.fail("SIGINT did not interrupt the block")
    assert msg.state == "settled"
    assert client.stats()["abandoned"] == 1
    assert emu.messages(queue)[0]["locked"] is False


def test_lock_lost_by_the_clock_completes_nothing(emulator_factory):
    # its own emulator: moving the clock must not shift the shared one
    emu = emulator_factory("--queue", "cq", "--lock-duration", "5")
    client = peeklock.Client.from_connection_string(emu.connection_string)
    msg = _one(client, emu, "cq")
    with pytest.raises(peeklock.LockLostError) as ei:
        with msg:
            emu.advance(30)  # the server's lock (5 s) runs out
    assert ei.value.code == -5
    assert msg.lock_lost
    assert completed(emu, "cq") == {}
    again = client.peek_lock("cq", timeout=5)
    assert again.delivery_count == 2
    again.complete()
    assert completed(emu, "cq") == {"m": 1}
    client.close()


def test_lock_lost_seen_by_the_renewer(client, emu, queue):
    msg = _one(client, emu, queue)
    emu.fault(operation="renew", status=404)
    with pytest.raises(peeklock.LockLostError) as ei:
        with msg:
            wait_for(lambda: msg.lock_lost, timeout=15)  # the renewer's renew got 404
    # the core's words (pl_finish_error), the same in every binding
    assert f"lock on message {msg.sequence_number} in '{queue}' was lost while the handler ran; " in str(ei.value)
    assert "nothing was completed (lock lost)" in str(ei.value)
    assert client.stats()["lost"] >= 1
    assert completed(emu, queue) == {}
    assert emu.state()["counters"].get("complete", 0) == 0  # no complete was even tried


def test_renewer_keeps_the_lock_past_its_duration(client, emu, queue):
    msg = _one(client, emu, queue)
    with msg:
        # two renewals by the background thread while we wait (5 s lock)
        wait_for(lambda: client.stats()["renewer"]["renewals"] >= 2, timeout=20)
        assert msg.state == "held"
        assert emu.messages(queue)[0]["locked"] is True
    assert completed(emu, queue) == {"m": 1}


def test_handler_may_settle_itself(client, emu, queue):
    with _one(client, emu, queue) as msg:
        msg.abandon()
    assert completed(emu, queue) == {}
    assert client.stats()["abandoned"] == 1


def test_receive_and_delete_message_is_not_a_context(client, queue):
    client.send(queue, b"x")
    msg = client.receive_and_delete(queue, timeout=5)
    with pytest.raises(peeklock.StateError):
        with msg:
            pass


def test_settled_twice_is_refused(client, emu, queue):
    msg = _one(client, emu, queue)
    with msg:
        pass
    with pytest.raises(peeklock.StateError):
        msg.complete()
    with pytest.raises(peeklock.StateError):
        with msg:
            pass
    assert completed(emu, queue) == {"m": 1}


def test_lock_lost_and_handler_failed_keeps_the_handlers_error(client, emu, queue):
    msg = _one(client, emu, queue)
    emu.fault(operation="renew", status=404)
    with pytest.raises(ValueError, match="handler's own"):
        with msg:
            wait_for(lambda: msg.lock_lost, timeout=15)
            raise ValueError("the handler's own failure")
    assert msg.lock_lost
    assert completed(emu, queue) == {}


def test_close_from_another_thread_abandons_and_the_block_says_so(client, emu, queue):
    # the block's caller must not believe it completed a message that close() handed back
    msg = _one(client, emu, queue)
    with pytest.raises(peeklock.ClosedError) as ei:
        with msg:
            t = threading.Thread(target=client.close)
            t.start()
            t.join()
    assert (
        f"message {msg.sequence_number} in '{queue}' was abandoned when the client closed while the handler "
        "ran; it was not completed and will be delivered again" in str(ei.value)
    )
    assert completed(emu, queue) == {}
    [stored] = emu.messages(queue)
    assert stored["locked"] is False  # back at once, not at lock expiry
    with pytest.raises(peeklock.ClosedError):
        msg.complete()  # and a later settle says why


def test_unknown_complete_is_remembered_and_reported_by_the_block(client, emu, queue):
    # the complete is carried out but its answer lost; the retry finds no lock
    msg = _one(client, emu, queue)
    emu.fault(operation="complete", drop=True, after=True, count=1)
    with pytest.raises(peeklock.OutcomeUnknownError) as ei:
        with msg:
            with pytest.raises(peeklock.OutcomeUnknownError):
                msg.complete()
    assert "a settle made while the handler ran had an unknown outcome; it may or may not" in str(ei.value)
    assert msg.state == "unknown"
    with pytest.raises(peeklock.OutcomeUnknownError):
        msg.complete()  # unknown again, never "lock lost"
    assert completed(emu, queue) == {"m": 1}
