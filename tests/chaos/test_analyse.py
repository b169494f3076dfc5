"""The chaos proof's analyser must catch each violation it claims to catch.

Synthetic worker logs and emulator states are fed to ``chaos.analyse``; each
test breaks one promise and asserts that exactly the matching check fails (and
that a clean history passes every check).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, Dict, List, Optional

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import chaos


class FakeWorkers:
    def __init__(self, killed: Optional[Dict[str, float]] = None, crashed: Optional[Dict[str, int]] = None) -> None:
        self.killed = dict(killed or {})
        self.crashed = dict(crashed or {})
        self.termed: Dict[str, float] = {}


def args(*extra: str):
    return chaos.build_parser().parse_args(
        [
            "--kill-interval",
            "0",
            "--emulator-restarts",
            "0",
            "--fault-503",
            "0",
            "--fault-500",
            "0",
            "--fault-delay",
            "0",
            "--fault-drop",
            "0",
            "--fault-drop-after",
            "0",
            *extra,
        ]
    )


def state(completed: Dict[str, int], left: int = 0, dlq: List[str] = ()) -> Dict[str, Any]:
    return {
        "entities": {
            chaos.ENTITY: {
                "message_count": left,
                "completed": completed,
                "dead_letter": [{"message_id": m} for m in dlq],
            }
        }
    }


def execution(
    w: str,
    n: int,
    mid: str,
    t0: float,
    t1: Optional[float],
    outcome: Optional[str],
    lost_at: Optional[float] = None,
    dc: Optional[int] = None,
    **extra: Any,
) -> List[Dict[str, Any]]:
    x = f"{w}:{n}"
    # by default the delivery count grows with the start time, as the broker's does
    recs = [{"ev": "start", "x": x, "mid": mid, "seq": 1, "dc": int(t0) if dc is None else dc, "w": w, "t": t0}]
    if t1 is not None:
        recs.append({"ev": "end", "x": x, "mid": mid, "w": w, "t0": t0, "t1": t1, "lost_at": lost_at})
    if outcome is not None:
        o = {
            "ev": "outcome",
            "x": x,
            "mid": mid,
            "w": w,
            "outcome": outcome,
            "t": (t1 or t0) + 0.01,
            "remaining": 3.0,
            "settle_s": 0.01,
        }
        o.update(extra)
        recs.append(o)
    return recs


def analyse(
    tmp_path,
    records: List[Dict[str, Any]],
    st: Dict[str, Any],
    workers=None,
    sent=("m1", "m2", "m3"),
    poison=(),
    a=None,
    torn: str = "",
) -> Dict[str, bool]:
    logdir = tmp_path / "logs"
    logdir.mkdir(exist_ok=True)
    by_w: Dict[str, List[str]] = {}
    for r in records:
        by_w.setdefault(r["w"], []).append(json.dumps(r))
    for w, lines in by_w.items():
        (logdir / f"{w}.jsonl").write_text("\n".join(lines) + "\n" + torn)
    f = {"accepted": len(sent), "processing_seconds": 1.0, "restarts": [], "fault_hits": 0, "server_renews": 0}
    out = chaos.analyse(a or args(), f, st, str(logdir), workers or FakeWorkers(), set(sent), set(poison))
    return {c["check"].split(" ")[0] + " " + c["check"].split(" ")[1]: c["ok"] for c in out["checks"]}


def failing(res: Dict[str, bool]) -> List[str]:
    return sorted(k for k, ok in res.items() if not ok)


def clean() -> List[Dict[str, Any]]:
    return (
        execution("w1", 1, "m1", 10.0, 11.0, "completed")
        + execution("w1", 2, "m2", 10.0, 12.0, "completed")
        + execution("w2", 1, "m3", 10.5, 10.6, "completed")
    )


def test_clean_history_passes_every_check(tmp_path):
    res = analyse(tmp_path, clean(), state({"m1": 1, "m2": 1, "m3": 1}))
    assert failing(res) == []
    assert len(res) == 13


def test_torn_last_line_of_a_killed_worker_is_ignored(tmp_path):
    res = analyse(tmp_path, clean(), state({"m1": 1, "m2": 1, "m3": 1}), torn='{"ev":"sta')
    assert failing(res) == []


def test_lost_message_fails(tmp_path):
    res = analyse(tmp_path, clean(), state({"m1": 1, "m2": 1}, left=1))
    assert failing(res) == ["lost =", "queue empty"]


def test_completed_twice_fails(tmp_path):
    res = analyse(tmp_path, clean(), state({"m1": 2, "m2": 1, "m3": 1}))
    assert failing(res) == ["no message"]


def test_completion_without_finished_handler_fails(tmp_path):
    recs = (
        execution("w1", 1, "m1", 10.0, None, None)
        + execution("w1", 2, "m2", 10.0, 12.0, "completed")
        + execution("w2", 1, "m3", 10.5, 10.6, "completed")
    )
    res = analyse(tmp_path, recs, state({"m1": 1, "m2": 1, "m3": 1}))
    assert "no completion" in failing(res)


def test_duplicate_after_worker_kill_is_explained(tmp_path):
    recs = clean() + execution("w3", 1, "m1", 5.0, None, None)
    res = analyse(tmp_path, recs, state({"m1": 1, "m2": 1, "m3": 1}), FakeWorkers(killed={"w3": 6.0}))
    assert failing(res) == []


def test_duplicate_without_a_reason_fails(tmp_path):
    # w3 ran m1 earlier, finished its handler, and nothing says why it did not complete
    recs = clean() + execution("w3", 1, "m1", 5.0, 6.0, None)
    res = analyse(tmp_path, recs, state({"m1": 1, "m2": 1, "m3": 1}))
    assert failing(res) == ["every duplicate"]


def test_duplicate_after_reported_loss_is_explained(tmp_path):
    recs = clean() + execution("w3", 1, "m1", 5.0, 8.0, "lost", lost_at=8.0)
    res = analyse(tmp_path, recs, state({"m1": 1, "m2": 1, "m3": 1}))
    assert failing(res) == []


def test_silent_lock_loss_at_settle_fails(tmp_path):
    # complete found no lock although the client's estimate still had 3 s left
    recs = clean() + execution("w3", 1, "m1", 5.0, 8.0, "lost-at-settle", remaining=3.0, settle_s=0.02)
    res = analyse(tmp_path, recs, state({"m1": 1, "m2": 1, "m3": 1}))
    assert failing(res) == ["no silent"]


def test_lock_running_out_during_a_slow_settle_is_explained(tmp_path):
    recs = clean() + execution("w3", 1, "m1", 5.0, 8.0, "lost-at-settle", remaining=0.5, settle_s=1.5)
    res = analyse(tmp_path, recs, state({"m1": 1, "m2": 1, "m3": 1}))
    assert failing(res) == []


def test_overlapping_executions_fail(tmp_path):
    # w3 still worked on m1 (until 10.8) when w1 started it at 10.0: the renewal failed silently
    recs = clean() + execution("w3", 1, "m1", 5.0, 10.8, "lost", lost_at=10.8)
    res = analyse(tmp_path, recs, state({"m1": 1, "m2": 1, "m3": 1}))
    assert failing(res) == ["no two"]


def test_overlap_within_tolerance_passes(tmp_path):
    recs = clean() + execution("w3", 1, "m1", 5.0, 10.1, "lost", lost_at=10.1)
    res = analyse(tmp_path, recs, state({"m1": 1, "m2": 1, "m3": 1}))
    assert failing(res) == []


def test_two_deliveries_with_the_same_delivery_count_fail(tmp_path):
    recs = clean() + execution("w3", 1, "m1", 5.0, None, None, dc=10)
    res = analyse(tmp_path, recs, state({"m1": 1, "m2": 1, "m3": 1}), FakeWorkers(killed={"w3": 6.0}))
    assert failing(res) == ["each execution"]


def test_client_reporting_two_completions_fails(tmp_path):
    recs = clean() + execution("w3", 1, "m1", 5.0, 6.0, "completed")
    res = analyse(tmp_path, recs, state({"m1": 1, "m2": 1, "m3": 1}))
    assert "the client" in failing(res)


def test_unexpected_dead_letter_fails_and_poison_is_expected(tmp_path):
    res = analyse(tmp_path, clean(), state({"m1": 1, "m2": 1, "m3": 1}, dlq=["m3"]))
    assert failing(res) == ["dead-letter queue"]
    recs = (
        clean()[:-3]
        + execution("w2", 1, "m3", 10.5, 10.6, "abandoned")
        + execution("w2", 2, "m3", 11.0, 11.1, "abandoned")
    )
    res = analyse(tmp_path, recs, state({"m1": 1, "m2": 1}, dlq=["m3"]), poison=("m3",))
    assert failing(res) == []


def test_graceful_stop_abandon_is_explained_but_work_after_it_is_an_overlap(tmp_path):
    workers = FakeWorkers()
    workers.termed["w3"] = 6.0
    bye = [{"ev": "bye", "w": "w3", "t": 9.0, "stopped_by": "signal"}]
    # the drain abandoned m1 at 9.0 and the handler stopped at once: explained, no overlap
    recs = clean() + execution("w3", 1, "m1", 5.0, 9.0, "drained", lost_at=9.0) + bye
    assert failing(analyse(tmp_path, recs, state({"m1": 1, "m2": 1, "m3": 1}), workers)) == []
    # the process exited (bye at 9.0) with the handler still running and no record: explained
    recs = clean() + execution("w3", 1, "m1", 5.0, None, None) + bye
    assert failing(analyse(tmp_path, recs, state({"m1": 1, "m2": 1, "m3": 1}), workers)) == []
    # the handler kept working after the abandon while w1 already ran m1 (from 10.0)
    recs = clean() + execution("w3", 1, "m1", 5.0, 10.9, "drained") + bye
    assert failing(analyse(tmp_path, recs, state({"m1": 1, "m2": 1, "m3": 1}), workers)) == ["no two"]


def test_worker_crash_fails(tmp_path):
    res = analyse(tmp_path, clean(), state({"m1": 1, "m2": 1, "m3": 1}), FakeWorkers(crashed={"w2": 1}))
    assert failing(res) == ["no worker"]


def test_chaos_that_did_not_happen_fails(tmp_path):
    res = analyse(
        tmp_path,
        clean(),
        state({"m1": 1, "m2": 1, "m3": 1}),
        a=args("--kill-interval", "3", "--emulator-restarts", "1"),
    )
    assert failing(res) == ["the chaos"]


@pytest.mark.parametrize(
    "bad", [["--messages", "0"], ["--fault-503", "1.5"], ["--restart-downtime", "x"], ["--workers", "-1"]]
)
def test_bad_flags_are_rejected_naming_the_flag(bad, capsys):
    with pytest.raises(SystemExit):
        chaos.build_parser().parse_args(bad)
    assert bad[0] in capsys.readouterr().err
