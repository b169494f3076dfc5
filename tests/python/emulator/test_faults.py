"""Fault injection through /$admin/faults: status with Retry-After, delay, dropped connection,
per operation and entity, count, probability with a seed; and the admin validation."""

import http.client
import time

import pytest

from conftest import SB


def test_status_fault_with_retry_after_then_count_exhausted(sb, queue, fresh_emulator):
    fid = fresh_emulator.fault(operation="send", status=503, retry_after=2, count=2)
    assert isinstance(fid, str) and fid
    for _ in range(2):
        status, headers, body = sb.send(queue)
        assert status == 503 and headers["Retry-After"] == "2"
        assert body.startswith(b"<Error><Code>503</Code><Detail>")
    assert sb.send(queue)[0] == 201
    assert len(fresh_emulator.messages(queue)) == 1  # the faulted sends did nothing


def test_fault_is_per_operation_and_entity(sb, fresh_emulator):
    fresh_emulator.create_queue("fa")
    fresh_emulator.create_queue("fb")
    fresh_emulator.fault(operation="complete", entity="fa", status=500)
    for q in ("fa", "fb"):
        sb.send_ok(q)
    ma, mb = sb.peek_lock("fa"), sb.peek_lock("fb")
    assert sb.complete(mb) == 200
    assert sb.complete(ma) == 500
    assert fresh_emulator.messages("fa")[0]["locked"] is True  # not completed
    fresh_emulator.clear_faults()
    assert sb.complete(ma) == 200


def test_drop_closes_connection_without_answer(sb, queue, fresh_emulator):
    fresh_emulator.fault(operation="peek_lock", drop=True, count=1)
    sb.send_ok(queue)
    conn = http.client.HTTPConnection(fresh_emulator.host, fresh_emulator.port, timeout=10)
    conn.request("POST", "/%s/messages/head?timeout=0" % queue, headers={"Authorization": fresh_emulator.sas_token()})
    with pytest.raises((ConnectionError, http.client.RemoteDisconnected, http.client.BadStatusLine)):
        conn.getresponse()
    conn.close()
    m = sb.peek_lock(queue)  # nothing was locked by the dropped request
    assert m.status == 201 and m.bp["DeliveryCount"] == 1


def test_fault_after_operation_loses_only_the_answer(sb, queue, fresh_emulator):
    fresh_emulator.fault(operation="complete", status=503, after=True, count=1)
    sb.send_ok(queue, props={"MessageId": "once"})
    m = sb.peek_lock(queue)
    assert sb.complete(m) == 503  # the complete happened, its answer was replaced
    assert sb.complete(m) == 404
    assert fresh_emulator.entity_state(queue)["completed"] == {"once": 1}


def test_delay_fault(sb, queue, fresh_emulator):
    fresh_emulator.fault(operation="send", delay_ms=300, count=1)
    t0 = time.monotonic()
    assert sb.send(queue)[0] == 201
    assert time.monotonic() - t0 >= 0.3


def test_probability_with_seed_is_reproducible(fresh_emulator):
    def pattern():
        fresh_emulator.reset()
        fresh_emulator.create_queue("pq")
        fresh_emulator.fault(operation="send", status=503, probability=0.5, seed=1234)
        return [SB(fresh_emulator).send("pq")[0] for _ in range(40)]

    first, second = pattern(), pattern()
    assert first == second
    assert 503 in first and 201 in first


def test_any_operation_fault_hits_management(sb, fresh_emulator):
    fresh_emulator.fault(operation="management", status=503, count=1)
    assert fresh_emulator.request("GET", "/someq")[0] == 503
    assert fresh_emulator.request("GET", "/someq")[0] == 404


@pytest.mark.parametrize(
    "rule",
    [
        {"operation": "fly", "status": 500},
        {"status": 200},
        {"operation": "send"},
        {"status": 503, "probability": 2},
        {"status": 503, "count": -1},
        {"status": "503"},
        {"drop": "yes"},
    ],
)
def test_bad_fault_rules_are_400(fresh_emulator, rule):
    import json

    status, _, body = fresh_emulator.request("POST", "/$admin/faults", json.dumps(rule).encode(), auth=False)
    assert status == 400 and "error" in json.loads(body)
    assert fresh_emulator.faults() == []


def test_admin_entity_put_replace_delete(fresh_emulator):
    import json

    st, _, body = fresh_emulator.request(
        "PUT", "/$admin/entities/adm", json.dumps({"kind": "queue", "lock_duration": 10}).encode(), auth=False
    )
    assert st == 201 and json.loads(body)["lock_duration"] == 10
    st, _, body = fresh_emulator.request(
        "PUT", "/$admin/entities/adm", json.dumps({"kind": "queue", "max_delivery_count": 2}).encode(), auth=False
    )
    assert st == 200 and json.loads(body)["max_delivery_count"] == 2 and json.loads(body)["lock_duration"] == 10
    st, _, _ = fresh_emulator.request(
        "PUT", "/$admin/entities/adm2", json.dumps({"kind": "queue", "lock_duration": 1000}).encode(), auth=False
    )
    assert st == 400
    st, _, _ = fresh_emulator.request(
        "PUT", "/$admin/entities/nosuch/subscriptions/s", json.dumps({"kind": "subscription"}).encode(), auth=False
    )
    assert st == 404
    assert fresh_emulator.request("DELETE", "/$admin/entities/adm", auth=False)[0] == 200
    assert fresh_emulator.request("DELETE", "/$admin/entities/adm", auth=False)[0] == 404
    assert fresh_emulator.request("POST", "/$admin/clock/advance", b'{"seconds": -1}', auth=False)[0] == 400
    assert fresh_emulator.request("POST", "/$admin/clock/advance", b"nope", auth=False)[0] == 400
    assert fresh_emulator.request("GET", "/$admin/nothing", auth=False)[0] == 404
