"""--completions-kept: the state dump's per-entity record of completions is bounded; the ids
dropped from it are counted in "completed_forgotten", in memory and on a --data-dir."""

import os
import sqlite3

import pytest

from conftest import SB
from peeklock.testing import EmulatorError


def complete_ids(emu, entity, *ids):
    sb = SB(emu)
    for mid in ids:
        sb.send_ok(entity, b"body of " + mid.encode(), props={"MessageId": mid})
        m = sb.peek_lock(entity)
        assert m.status == 201 and m.bp["MessageId"] == mid
        assert sb.complete(m) == 200


def record(emu, entity):
    st = emu.entity_state(entity)
    return list(st["completed"].items()), st["completed_forgotten"]


def completed_rows(data_dir, ekey):
    db = sqlite3.connect(os.path.join(data_dir, "peeklock-emulator.sqlite3"))
    try:
        return [r[0] for r in db.execute("SELECT message_id FROM completed WHERE ekey=? ORDER BY rowid", (ekey,))]
    finally:
        db.close()


def test_record_keeps_the_last_n_ids_and_counts_the_rest(emulator_factory):
    emu = emulator_factory("--queue", "cq", "--completions-kept", "3")
    assert record(emu, "cq") == ([], 0)
    complete_ids(emu, "cq", "m0", "m1", "m2", "m3", "m4")
    assert record(emu, "cq") == ([("m2", 1), ("m3", 1), ("m4", 1)], 2)
    assert emu.state()["counters"]["completed"] == 5


def test_repeated_completion_counts_two_and_moves_to_the_newest_end(emulator_factory):
    emu = emulator_factory("--queue", "rq", "--completions-kept", "3")
    complete_ids(emu, "rq", "a", "b", "a")
    assert record(emu, "rq") == ([("b", 1), ("a", 2)], 0)
    complete_ids(emu, "rq", "c", "d")  # b is now the least recent: it goes
    assert record(emu, "rq") == ([("a", 2), ("c", 1), ("d", 1)], 1)


def test_keep_none(emulator_factory, tmp_path):
    data = str(tmp_path)
    emu = emulator_factory("--queue", "zq", "--completions-kept", "0", data_dir=data)
    complete_ids(emu, "zq", "x", "y", "x")
    assert record(emu, "zq") == ([], 3)
    assert emu.entity_state("zq")["messages"] == []
    emu.kill()
    assert completed_rows(data, "zq") == []
    emu.restart()
    assert record(emu, "zq") == ([], 3)


def test_keep_none_writes_no_completion_rows():
    """In process, against a recording store: with nothing kept, a complete records only
    the forgotten count, never a row (not one written and then deleted)."""
    from peeklock.emulator.broker import Broker
    from peeklock.emulator.store import NullStore

    calls = []

    class Recording(NullStore):
        def save_completed(self, ent, message_id, n):
            calls.append(("save", message_id, n))

        def forget_completed(self, ent, message_id, forgotten):
            calls.append(("forget", message_id, forgotten))

    broker = Broker(store=Recording(), completions_kept=0)
    ent, _ = broker.create_entity("kq", "queue")
    for mid in ("x", "y", "x"):
        broker.send(ent, b"b", None, {"MessageId": mid}, [])
        msg = broker.try_receive(ent, peek_lock=True)
        broker.complete(ent, str(msg.seq), msg.lock_token)
    assert calls == [("forget", "x", 1), ("forget", "y", 2), ("forget", "x", 3)]
    assert ent.completed_forgotten == 3 and not ent.completed


def test_record_and_forgotten_count_survive_a_restart_and_the_table_stays_bounded(emulator_factory, tmp_path):
    data = str(tmp_path)
    emu = emulator_factory("--queue", "pq", "--completions-kept", "3", data_dir=data)
    complete_ids(emu, "pq", "m0", "m1", "m2", "m3", "m2", "m4")
    before = record(emu, "pq")
    assert before == ([("m3", 1), ("m2", 2), ("m4", 1)], 2)
    emu.kill()
    assert completed_rows(data, "pq") == ["m3", "m2", "m4"]

    emu.restart()
    assert record(emu, "pq") == before
    complete_ids(emu, "pq", "m5")  # the order came back too: m3 goes, not m2
    assert record(emu, "pq") == ([("m2", 2), ("m4", 1), ("m5", 1)], 3)
    emu.stop()
    assert completed_rows(data, "pq") == ["m2", "m4", "m5"]

    smaller = emulator_factory("--queue", "pq", "--completions-kept", "1", data_dir=data)
    assert record(smaller, "pq") == ([("m5", 1)], 5)
    smaller.stop()
    assert completed_rows(data, "pq") == ["m5"]


def test_data_dir_without_the_forgotten_table_loads(emulator_factory, tmp_path):
    data = str(tmp_path)
    emu = emulator_factory("--queue", "oq", data_dir=data)
    complete_ids(emu, "oq", "old1", "old2")
    emu.stop()
    db = sqlite3.connect(os.path.join(data, "peeklock-emulator.sqlite3"))
    db.execute("DROP TABLE completed_forgotten")  # as an older emulator left the folder
    db.commit()
    db.close()
    emu.restart()
    assert record(emu, "oq") == ([("old1", 1), ("old2", 1)], 0)
    complete_ids(emu, "oq", "new")
    assert record(emu, "oq") == ([("old1", 1), ("old2", 1), ("new", 1)], 0)


def test_reset_and_entity_delete_clear_the_forgotten_count(emulator_factory, tmp_path):
    data = str(tmp_path)
    emu = emulator_factory("--queue", "xq", "--completions-kept", "1", data_dir=data)
    complete_ids(emu, "xq", "a", "b")
    assert record(emu, "xq") == ([("b", 1)], 1)
    emu.reset()
    assert record(emu, "xq") == ([], 0)
    complete_ids(emu, "xq", "c", "d")
    emu.delete_entity("xq")
    emu.create_queue("xq")
    assert record(emu, "xq") == ([], 0)
    emu.restart()
    assert record(emu, "xq") == ([], 0)


def test_negative_bound_is_refused(emulator_factory):
    with pytest.raises(EmulatorError, match="--completions-kept must be >= 0"):
        emulator_factory("--completions-kept", "-1")
