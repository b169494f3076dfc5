"""One Client shared by many threads; blocking calls release the GIL."""
import threading
import time

import peeklock
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


def test_python_runs_while_a_call_blocks(client, queue):
    """A counting thread keeps running while another waits in a long poll."""
    counts = []
    done = threading.Event()

    def spin():
        n = 0
        while not done.is_set():
            n += 1
        counts.append(n)

    t = threading.Thread(target=spin)
    t.start()
    try:
        assert client.peek_lock(queue, timeout=1) is None
    finally:
        done.set()
        t.join()
    assert counts[0] > 10000


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
