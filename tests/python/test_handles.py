"""Lock handles: a lock that leaves the process, is renewed and settled elsewhere."""

import json
import logging
import subprocess
import sys
import textwrap

import pytest

import peeklock
from conftest import completed

# A second process: attaches to the handle it reads, then obeys one command per line
# ("renew", "complete"), answering each with a JSON line.
CHILD = textwrap.dedent("""
    import json, sys
    import peeklock
    client = peeklock.Client.from_connection_string(sys.argv[1])
    msg = client.attach(sys.stdin.readline().strip())
    print(json.dumps({"seq": msg.sequence_number, "id": msg.message_id}), flush=True)
    for line in sys.stdin:
        try:
            getattr(msg, {"renew": "renew_lock", "complete": "complete"}[line.strip()])()
            print(json.dumps({"ok": True, "outcome": msg.outcome}), flush=True)
        except peeklock.Error as e:
            print(json.dumps({"ok": False, "error": type(e).__name__}), flush=True)
""")


class Child:
    def __init__(self, emu):
        self.p = subprocess.Popen(
            [sys.executable, "-c", CHILD, emu.connection_string],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def say(self, line):
        self.p.stdin.write(line + "\n")
        self.p.stdin.flush()
        out = self.p.stdout.readline()
        assert out, f"the child exited ({self.p.wait()})"
        return json.loads(out)

    def close(self):
        self.p.stdin.close()
        assert self.p.wait(30) == 0


def test_a_handle_moved_to_another_process_is_renewed_past_the_lock_and_completed(emu, client, make_queue):
    q = make_queue(lock_duration=5)
    client.send(q, b"long job", message_id="h-1")
    msg = client.peek_lock(q, timeout=1)
    handle = msg.lock_handle()
    msg.release()  # handed over: not renewed here
    child = Child(emu)
    try:
        assert child.say(handle) == {"seq": msg.sequence_number, "id": "h-1"}
        for _ in range(4):  # 4 x 4 s: past three lock durations
            assert child.say("renew") == {"ok": True, "outcome": None}
            emu.advance(4)
        assert child.say("complete") == {"ok": True, "outcome": "completed"}
    finally:
        child.close()
    assert completed(emu, q) == {"h-1": 1}
    assert emu.messages(q) == []  # never redelivered


def test_attach_after_the_lock_expired_is_lock_lost(emu, client, make_queue):
    q = make_queue(lock_duration=5)
    client.send(q, b"x", message_id="late")
    handle = client.peek_lock(q, timeout=1).lock_handle()
    emu.advance(6)
    with peeklock.Client.from_connection_string(emu.connection_string) as other:
        m = other.attach(handle)
        with pytest.raises(peeklock.LockLostError):
            m.complete()
        assert m.outcome == "lost"
    assert completed(emu, q) == {}


def test_two_holders_the_first_settle_wins(emu, client, make_queue):
    q = make_queue(lock_duration=30)
    client.send(q, b"x", message_id="twice")
    mine = client.peek_lock(q, timeout=1)
    child = Child(emu)
    try:
        child.say(mine.lock_handle())
        assert child.say("renew")["ok"]  # both may renew
        mine.renew_lock()
        assert child.say("complete") == {"ok": True, "outcome": "completed"}
        with pytest.raises(peeklock.LockLostError):
            mine.complete()  # never a false success
    finally:
        child.close()
    assert completed(emu, q) == {"twice": 1}


def test_a_handle_is_a_secret_and_is_checked(emu, client, make_queue, caplog):
    caplog.set_level(logging.DEBUG, logger="peeklock")
    q = make_queue()
    client.send(q, b"x", message_id="s")
    msg = client.peek_lock(q, timeout=1)
    handle = msg.lock_handle()
    assert handle.startswith("plh1.") and msg.lock_token not in handle  # encoded, not plain
    assert handle not in repr(msg) and handle not in msg._repr_html_()
    with client.attach(handle) as again:  # the context manager works on it too
        assert again.sequence_number == msg.sequence_number
        assert handle not in repr(again) and msg.lock_token not in repr(again)
    for bad in ("", "plh1.", "plh1.!!!", handle[:-8], "x" + handle, handle + "A"):
        with pytest.raises(ValueError) as e:
            client.attach(bad)
        assert handle[5:20] not in str(e.value)
    other_ns = "Endpoint=sb://other.servicebus.windows.net/;SharedAccessKeyName=k;SharedAccessKey=v"
    with peeklock.Client.from_connection_string(other_ns) as c:
        with pytest.raises(ValueError, match="another namespace"):
            c.attach(handle)
    with pytest.raises(peeklock.StateError):
        again.lock_handle()  # completed: nothing held to hand over
    msg.release()
    assert handle not in caplog.text and msg.lock_token not in caplog.text


def test_handoff_example_runs():
    """examples/handoff.py: a worker process renews a handed-over lock past its
    duration (real time: the worker's own renewer) and completes it."""
    import os

    ex = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "handoff.py")
    r = subprocess.run([sys.executable, ex], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "completed per the emulator: {'job-17': 1}" in r.stdout
