"""--data-dir: SQLite (WAL) keeps every message, lock, delivery count, sequence number and
clock offset across a clean stop and across SIGKILL in the middle of a load."""

import threading
import time

from conftest import SB


def test_restart_keeps_messages_locks_counts_and_sequences(emulator_factory, tmp_path):
    emu = emulator_factory("--queue", "pq", "--topic", "pt", "--subscription", "pt/s", data_dir=str(tmp_path))
    sb = SB(emu)
    for i in range(3):
        sb.send_ok(
            "pq",
            b"m%d" % i,
            props={"MessageId": "id%d" % i, "Label": "L%d" % i},
            headers={"n": str(i)},
            content_type="application/json",
        )
    first = sb.peek_lock("pq")
    assert sb.unlock(first) == 200
    held = sb.peek_lock("pq")  # DeliveryCount 2, new token
    gone = sb.peek_lock("pq")
    assert sb.complete(gone) == 200
    sb.send_ok("pt", b"topic msg")
    emu.advance(5)
    before = emu.state()

    emu.restart()
    after = emu.state()
    assert after["offset"] >= before["offset"]
    assert after["entities"]["pq"]["messages"] == before["entities"]["pq"]["messages"]
    assert after["entities"]["pq"]["completed"] == {"id1": 1}
    assert after["entities"]["pq"]["next_sequence_number"] == 4
    sb = SB(emu)
    assert sb.renew(held) == 200  # the lock token survived
    assert sb.complete(held) == 200
    m = sb.peek_lock("pq")
    assert m.body == b"m2" and m.bp["MessageId"] == "id2" and m.bp["Label"] == "L2"
    assert m.headers["n"] == "2" and m.headers["Content-Type"] == "application/json"
    sb.send_ok("pq", b"new")
    assert sb.receive_and_delete("pq").bp["SequenceNumber"] == 4
    assert sb.receive_and_delete("pt/subscriptions/s").body == b"topic msg"


def test_lock_expires_across_restart_and_dead_letters_persist(emulator_factory, tmp_path):
    emu = emulator_factory(
        "--queue", "dq", "--lock-duration", "30", "--max-delivery-count", "1", data_dir=str(tmp_path)
    )
    sb = SB(emu)
    sb.send_ok("dq", b"a")
    sb.send_ok("dq", b"b")
    a = sb.peek_lock("dq")
    assert sb.unlock(a) == 200  # -> dead letter
    sb.peek_lock("dq")  # b locked for 30 s
    emu.kill()
    emu.restart()
    emu.advance(31)
    sb = SB(emu)
    st = emu.entity_state("dq")
    assert [m["message_id"] for m in st["dead_letter"]] and st["dead_letter"][0][
        "dead_letter_reason"
    ] == "MaxDeliveryCountExceeded"
    assert sb.receive_and_delete("dq/$DeadLetterQueue").body == b"a"
    # b's lock expired after the restart: with MaxDeliveryCount 1 it is dead-lettered too
    assert sb.receive_and_delete("dq/$DeadLetterQueue").body == b"b"


def test_sigkill_during_load_loses_nothing_acknowledged(emulator_factory, tmp_path):
    emu = emulator_factory("--queue", "load", data_dir=str(tmp_path))
    acked = []
    stop = threading.Event()

    def producer():
        c = SB(emu.client())
        i = 0
        while not stop.is_set():
            try:
                status, _, _ = c.send("load", b"payload-%d" % i, props={"MessageId": "m%d" % i})
            except Exception:
                return  # the server went away mid-request
            if status == 201:
                acked.append("m%d" % i)
            i += 1

    def consumer():
        c = SB(emu.client())
        while not stop.is_set():
            try:
                m = c.peek_lock("load", timeout=1)
                if m.status == 201 and int(m.bp["MessageId"][1:]) % 3 == 0:
                    c.complete(m)
            except Exception:
                return

    threads = [threading.Thread(target=producer), threading.Thread(target=consumer)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 20
    while len(acked) < 300 and time.monotonic() < deadline:
        time.sleep(0.01)
    emu.kill()  # mid-load, no clean shutdown
    stop.set()
    for t in threads:
        t.join(10)
    assert len(acked) >= 300
    emu.restart()
    st = emu.entity_state("load")
    present = {m["message_id"] for m in st["messages"]}
    completed = set(st["completed"])
    missing = [mid for mid in acked if mid not in present and mid not in completed]
    assert missing == []
    assert all(n == 1 for n in st["completed"].values())
    seqs = [m["sequence_number"] for m in st["messages"]]
    assert len(seqs) == len(set(seqs))
    sb = SB(emu)
    sb.send_ok("load", b"after")
    assert emu.entity_state("load")["next_sequence_number"] > max(seqs + [0]) + 1


def test_memory_mode_forgets(emulator_factory):
    emu = emulator_factory("--queue", "mem")
    SB(emu).send_ok("mem")
    emu.restart()
    assert emu.messages("mem") == []
