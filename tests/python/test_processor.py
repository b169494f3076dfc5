"""client.process: worker threads, outcomes, summary, and the graceful drain."""
import os
import signal
import threading

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

    s = client.process(queue, handler, concurrency=4, max_renew=60, poll_timeout=1,
                       idle_timeout=2, handle_signals=False)
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
    s = client.process(queue, lambda m: None, concurrency=3, max_messages=4, poll_timeout=1,
                       handle_signals=False)
    assert s.processed == 4
    assert s.stopped_by == "max_messages"


def test_sigint_drains_gracefully(client, emu, queue):
    """SIGINT: stop receiving, let running handlers finish until the deadline,
    abandon what is still held so it comes back at once."""
    for i in range(6):
        client.send(queue, str(i).encode(), message_id=f"m{i}")
    started = threading.Semaphore(0)
    release_fast = threading.Event()
    never = threading.Event()
    stop = threading.Event()

    def handler(msg):
        started.release()
        if int(msg.text) % 2 == 0:
            release_fast.wait(30)      # finishes during the drain
        else:
            never.wait(60)             # outlasts the drain deadline

    def interrupt():
        for _ in range(4):
            started.acquire(timeout=30)          # 4 handlers are running
        os.kill(os.getpid(), signal.SIGINT)
        stop.wait(30)                            # the processor saw the signal
        release_fast.set()

    threading.Thread(target=interrupt, daemon=True).start()
    s = client.process(queue, handler, concurrency=4, poll_timeout=1, drain_timeout=3,
                       stop_event=stop)
    never.set()
    assert s.stopped_by == "signal"
    assert s.processed == 2                      # the two even handlers completed
    assert s.abandoned_on_drain == 2             # the two odd ones were given back
    assert s.received == 4                       # nothing received after the signal
    done = completed(emu, queue)
    assert set(done.values()) == {1} and len(done) == 2
    msgs = emu.messages(queue)
    assert len(msgs) == 4 and not any(m["locked"] for m in msgs)   # back at once
    # the abandoned ones come back with a higher delivery count
    wait_for(lambda: client.stats()["abandoned"] >= 2)


def test_stop_event(client, queue):
    stop = threading.Event()
    seen = []

    def handler(msg):
        seen.append(msg.text)
        stop.set()

    client.send(queue, b"only")
    s = client.process(queue, handler, concurrency=2, poll_timeout=1, stop_event=stop,
                       handle_signals=False)
    assert seen == ["only"] and s.processed == 1 and s.stopped_by == "stop_event"


def test_keyboard_interrupt_without_signal_handling_gives_messages_back(client, emu, queue):
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
        raise AssertionError("KeyboardInterrupt was swallowed")
    finally:
        never.set()
    msgs = emu.messages(queue)
    assert len(msgs) == 3 and not any(m["locked"] for m in msgs)
    assert completed(emu, queue) == {}
