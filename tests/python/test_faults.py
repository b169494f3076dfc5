"""The fault matrix (tests/faults/matrix.json) against the blocking C client, through
the Python package: every operation meets every fault once, and the call reports what
the table says — ok (and the operation happened exactly once), unknown
(OutcomeUnknownError, and it happened at most once), or the named error."""

import json
import os
import socket
import sys

import pytest

import peeklock

HERE = os.path.dirname(os.path.abspath(__file__))
FAULTS_DIR = os.path.join(HERE, "..", "faults")
sys.path.insert(0, FAULTS_DIR)
from proxy import FaultProxy  # noqa: E402

with open(os.path.join(FAULTS_DIR, "matrix.json")) as _f:
    MATRIX = json.load(_f)
CASES = [(op, fault, want) for op, row in MATRIX["expect"].items() for fault, want in row.items() if want != "n/a"]
EMU_OP = {"send_batch": "send"}


def _refused_endpoint() -> str:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def proxy(emu):
    p = FaultProxy(emu.port)
    yield p
    p.close()


@pytest.mark.parametrize("op,fault,want", CASES, ids=[f"{o}-{f}" for o, f, _ in CASES])
def test_fault_matrix(emu, queue, proxy, op, fault, want, caplog):
    spec = MATRIX["faults"][fault]
    endpoint = _refused_endpoint() if spec.get("endpoint") == "refused" else f"http://127.0.0.1:{proxy.port}"
    setup = peeklock.Client(f"http://127.0.0.1:{emu.port}", key_name=emu.key_name, key=emu.key)
    c = peeklock.Client(endpoint, key_name=emu.key_name, key=emu.key, request_timeout=1.0)
    msg = None
    try:
        if op in ("receive_and_delete", "peek_lock", "renew", "unlock", "complete"):
            setup.send(queue, b"m", message_id="m1")
        if op == "peek_lock":
            setup.send(queue, b"m", message_id="m2")  # what a retry locks when m1's lock is orphaned
        if op in ("renew", "unlock", "complete"):
            msg = c.peek_lock(queue, timeout=5)  # also opens the connection the settle reuses
            assert msg is not None
        elif spec["connection"] == "reused":
            emu.create_queue(queue + "-warm")
            assert c.peek_lock(queue + "-warm", timeout=0) is None  # a 204 on the connection
        if "rule" in spec:
            emu.fault(operation=EMU_OP.get(op, op), entity=queue, count=1, **spec["rule"])
        elif "proxy" in spec:
            proxy.arm(op, spec["proxy"])

        def call():
            if op == "send":
                return c.send(queue, b"s", message_id="s1")
            if op == "send_batch":
                return c.send_batch(queue, [peeklock.OutgoingMessage(b"b", message_id=x) for x in ("b1", "b2")])
            if op == "receive_and_delete":
                return c.receive_and_delete(queue, timeout=0)
            if op == "peek_lock":
                return c.peek_lock(queue, timeout=0)
            return {"renew": msg.renew_lock, "unlock": msg.abandon, "complete": msg.complete}[op]()

        outcome, _, extra = want.partition(" ")
        if outcome == "ok":
            got = call()
        else:
            exc = {
                "unknown": peeklock.OutcomeUnknownError,
                "protocol": peeklock.ProtocolError,
                "connection": peeklock.ConnectionError,
            }[outcome]
            with pytest.raises(exc) as ei:
                call()
            assert isinstance(ei.value, peeklock.Error)
            got = None
            # the failed call was said at WARNING, with its operation and entity
            assert [
                r
                for r in caplog.records
                if r.levelname == "WARNING"
                and getattr(r, "peeklock_entity", None) == queue
                and " failed after " in r.getMessage()
            ]
        if extra == "orphaned":
            assert c.stats()["orphaned_locks"] >= 1
            if op == "peek_lock":  # and said at WARNING, with the entity
                assert any(
                    r.levelname == "WARNING" and queue in r.getMessage() and "locked" in r.getMessage()
                    for r in caplog.records
                )
        elif op == "peek_lock":  # no orphaned lock said
            assert not [r for r in caplog.records if r.levelname == "WARNING" and "locked" in r.getMessage()]
        if fault == "stall":
            emu.clear_faults()

        stored = [m["message_id"] for m in emu.messages(queue)]
        if op in ("send", "send_batch"):
            ids = ["s1"] if op == "send" else ["b1", "b2"]
            copies = {i: stored.count(i) for i in ids}
            if outcome == "ok":
                assert copies == {i: 1 for i in ids}
            elif fault != "stall":  # (a stalled send may still land later)
                assert all(n <= 1 for n in copies.values()), copies  # never a silent second copy
        elif op == "receive_and_delete":
            if outcome == "ok":
                assert got is not None and got.message_id == "m1" and stored == []
            else:
                assert stored.count("m1") <= 1
        elif op == "peek_lock" and outcome == "ok":
            # after a lost answer the retry locks the next message; the orphaned lock on m1
            # expires and m1 comes back (at least once), as stats()["orphaned_locks"] says
            acted = spec.get("rule", {}).get("after") or "proxy" in spec  # the server locked m1 first
            want_id = "m2" if extra == "orphaned" and acted else "m1"
            if fault == "stall":  # the stalled request locks m2 later instead
                want_id = got.message_id if got is not None else want_id
            assert got is not None and got.message_id == want_id
            got.complete()
            assert emu.entity_state(queue)["completed"] == {want_id: 1}
            if want_id == "m2" and fault != "stall":
                assert [m["locked"] for m in emu.messages(queue) if m["message_id"] == "m1"] == [True]
        elif op == "renew":
            assert msg.state == "held"
        elif op == "unlock":
            if outcome == "ok":
                assert msg.state == "settled"
                assert [m["locked"] for m in emu.messages(queue)] == [False]
            else:
                assert msg.state == "unknown"
        elif op == "complete":
            done = emu.entity_state(queue)["completed"].get("m1", 0)
            if outcome == "ok":
                assert msg.state == "settled" and done == 1
            else:
                assert msg.state == "unknown" and done <= 1
                with pytest.raises(peeklock.OutcomeUnknownError):
                    msg.complete()  # remembered: unknown again
    finally:
        c.close()
        setup.close()


def test_resend_opt_in_sends_again_after_a_lost_answer(emu, queue):
    # the caller says the entity drops duplicates by MessageId: a lost answer is sent again
    # (the emulator does not drop duplicates, so the second copy shows the re-send happened)
    c = peeklock.Client(f"http://127.0.0.1:{emu.port}", key_name=emu.key_name, key=emu.key)
    try:
        emu.fault(operation="send", entity=queue, drop=True, after=True, count=1)
        c.send(queue, peeklock.OutgoingMessage(b"x", message_id="r1", resend=True))
        assert c.stats()["retries"] == 1
        assert [m["message_id"] for m in emu.messages(queue)] == ["r1", "r1"]
        # without the opt-in the same fault is an unknown outcome
        emu.fault(operation="send", entity=queue, drop=True, after=True, count=1)
        with pytest.raises(peeklock.OutcomeUnknownError):
            c.send(queue, peeklock.OutgoingMessage(b"x", message_id="r2"))
        # and the opt-in needs a MessageId
        with pytest.raises(peeklock.InvalidArgument) as ei:
            c.send(queue, peeklock.OutgoingMessage(b"x", resend=True))
        assert "MessageId" in str(ei.value)
    finally:
        c.close()


def test_the_fast_path_says_an_orphaned_lock_through_the_registered_warner(emu, queue):
    # peek_lock's C method calls the callable client.py registers (no import of the
    # package from the extension); a 500 after the server locked m1 orphans that lock
    from peeklock import _core

    said = []
    c = peeklock.Client(f"http://127.0.0.1:{emu.port}", key_name=emu.key_name, key=emu.key)
    c.send(queue, b"m", message_id="m1")
    c.send(queue, b"m", message_id="m2")
    emu.fault(operation="peek_lock", entity=queue, count=1, **MATRIX["faults"]["status_500_after"]["rule"])
    _core.pl_py_set_orphan_warner(said.append)
    try:
        msg = c.peek_lock(queue, timeout=0)
    finally:
        _core.pl_py_set_orphan_warner(peeklock.client._warn_orphaned)
    assert said == [queue] and c.stats()["orphaned_locks"] == 1
    assert msg is not None and msg.message_id == "m2"
    msg.complete()
    c.close()
