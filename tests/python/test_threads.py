"""One Client shared by many threads; blocking calls release the GIL."""

import threading
import time

from conftest import completed


def test_eight_long_polls_overlap(client, queue):
    """8 threads long-polling an empty queue at once finish in about one
    timeout, not eight: the GIL is released while each waits in C."""
    timeout = 2
    results = []
    barrier = threading.Barrier(8)

    def poll():
        barrier.wait()
        results.append(client.peek_lock(queue, timeout=timeout))

    threads = [threading.Thread(target=poll) for _ in range(8)]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    elapsed = time.monotonic() - start
    assert results == [None] * 8
    assert elapsed < 3 * timeout, f"8 polls of {timeout} s took {elapsed:.1f} s: serialised?"


def _spin_rate_during(call):
    """Iterations per second of a counting thread while the main thread waits in
    a GIL-releasing wait (baseline), then while it is inside call(). Only the
    iterations made between the call's start and its return count, so a call
    that held the GIL would give a rate near zero, whatever the spinner did in
    the switch intervals around it."""
    counter = [0]
    stop = threading.Event()
    started = threading.Event()

    def spin():
        started.set()
        while not stop.is_set():
            counter[0] += 1

    t = threading.Thread(target=spin, daemon=True)
    t.start()
    try:
        started.wait(10)
        c0, t0 = counter[0], time.monotonic()
        stop.wait(1.0)  # baseline: main thread blocked, GIL released
        c1, t1 = counter[0], time.monotonic()
        result = call()
        c2, t2 = counter[0], time.monotonic()
    finally:
        stop.set()
        t.join(10)
    return (c1 - c0) / (t1 - t0), (c2 - c1) / (t2 - t1), t2 - t1, result


def test_python_runs_while_a_call_blocks(client, queue):
    """A counting thread keeps its pace while another waits 3 s in a long poll."""
    assert client.peek_lock(queue, timeout=0) is None  # the entity known: the C path
    baseline, during, elapsed, got = _spin_rate_during(lambda: client.peek_lock(queue, timeout=3))
    assert got is None and elapsed >= 2.5, f"the long poll returned after {elapsed:.1f} s"
    assert during >= 0.3 * baseline, (
        f"spinner ran at {during:.0f}/s during the call, {baseline:.0f}/s before: GIL held?"
    )


def test_the_gil_check_catches_a_call_that_holds_the_gil():
    """The check above fails for a blocking C call that keeps the GIL: libc's
    sleep through ctypes.PyDLL (which, unlike CDLL, does not release it)."""
    import ctypes
    import ctypes.util

    libc = ctypes.PyDLL(ctypes.util.find_library("c"))
    baseline, during, elapsed, _ = _spin_rate_during(lambda: libc.sleep(1))
    assert elapsed >= 0.9
    assert during < 0.3 * baseline, (during, baseline)
    # and a GIL-releasing sleep (ctypes.CDLL) passes it
    libc_free = ctypes.CDLL(ctypes.util.find_library("c"))
    baseline, during, elapsed, _ = _spin_rate_during(lambda: libc_free.sleep(1))
    assert elapsed >= 0.9 and during >= 0.3 * baseline, (during, baseline)


def test_threads_share_one_client(client, emu, queue):
    n_threads, per_thread = 8, 25
    for i in range(n_threads * per_thread):
        client.send(queue, str(i).encode(), message_id=f"m{i}")
    seen = []
    lock = threading.Lock()

    def work():
        while True:
            msg = client.peek_lock(queue, timeout=1)
            if msg is None:
                return
            with msg:
                with lock:
                    seen.append(msg.message_id)

    threads = [threading.Thread(target=work) for _ in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert sorted(seen) == sorted(f"m{i}" for i in range(n_threads * per_thread))
    done = completed(emu, queue)
    assert len(done) == n_threads * per_thread and set(done.values()) == {1}


def test_python_runs_while_a_send_blocks(client, emu, queue):
    """The same for a send (one C call builds, sends and frees the message): the
    emulator holds the answer 3 s."""
    assert client.peek_lock(queue, timeout=0) is None  # the entity known: the C path
    emu.fault(operation="send", delay_ms=3000, count=1)
    baseline, during, elapsed, got = _spin_rate_during(
        lambda: client.send(queue, b"x", properties={"Kind": "gil", "N": 1})
    )
    assert got is None and elapsed >= 2.5, f"the send returned after {elapsed:.1f} s"
    assert during >= 0.3 * baseline, (
        f"spinner ran at {during:.0f}/s during the send, {baseline:.0f}/s before: GIL held?"
    )


def test_python_runs_while_a_complete_blocks(client, emu, queue):
    """The same for a complete (the emulator holds the answer 3 s)."""
    client.send(queue, b"x")
    msg = client.peek_lock(queue, timeout=5)
    emu.fault(operation="complete", delay_ms=3000, count=1)
    baseline, during, elapsed, got = _spin_rate_during(msg.complete)
    assert got is None and elapsed >= 2.5, f"the complete returned after {elapsed:.1f} s"
    assert during >= 0.3 * baseline, (
        f"spinner ran at {during:.0f}/s during the complete, {baseline:.0f}/s before: GIL held?"
    )
    assert msg.settled
