"""Message operations over real sockets: send, peek-lock, renew, unlock, complete,
receive-and-delete, long polls, status codes."""

import json
import re
import time
import uuid

from conftest import SB, Received, in_thread

RFC1123 = re.compile(
    r"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} \d\d:\d\d:\d\d GMT$"
)
GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def test_send_then_peek_lock_has_service_fields(sb, queue):
    assert sb.send_ok(queue, b"hello") == 201
    m = sb.peek_lock(queue)
    assert m.status == 201
    assert m.body == b"hello"
    assert list(m.bp) == sorted(m.bp)
    assert m.bp["DeliveryCount"] == 1
    assert m.bp["SequenceNumber"] == 1
    assert m.bp["EnqueuedSequenceNumber"] == 0
    assert m.bp["State"] == "Active"
    assert re.fullmatch(r"[0-9a-f]{32}", m.bp["MessageId"])
    assert GUID.match(m.bp["LockToken"])
    assert RFC1123.match(m.bp["LockedUntilUtc"]) and RFC1123.match(m.bp["EnqueuedTimeUtc"])
    assert '"TimeToLive":922337203685.47754' in m.bp_raw
    assert m.headers["Content-Type"] == "text/plain"
    assert m.headers["Transfer-Encoding"] == "chunked"
    assert "Content-Length" not in m.headers
    assert m.headers["Server"] == "Microsoft-HTTPAPI/2.0"
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/%s/messages/1/%s" % (queue, m.bp["LockToken"]), m.location)
    assert sb.complete(m) == 200


def test_lock_duration_in_locked_until(sb, fresh_emulator):
    fresh_emulator.create_queue("ld30", lock_duration=30)
    sb.send_ok("ld30")
    m = sb.peek_lock("ld30")
    from email.utils import parsedate_to_datetime

    until = parsedate_to_datetime(m.bp["LockedUntilUtc"]).timestamp()
    enq = parsedate_to_datetime(m.bp["EnqueuedTimeUtc"]).timestamp()
    assert 28 <= until - enq <= 32


def test_unlock_redelivers_with_new_token_and_higher_count(sb, queue):
    sb.send_ok(queue, b"again")
    first = sb.peek_lock(queue)
    assert sb.unlock(first) == 200
    second = sb.peek_lock(queue)
    assert second.status == 201 and second.body == b"again"
    assert second.bp["DeliveryCount"] == 2
    assert second.bp["SequenceNumber"] == first.bp["SequenceNumber"]
    assert second.bp["LockToken"] != first.bp["LockToken"]
    # the old token is dead
    assert sb.complete(first) == 404
    assert sb.complete(second) == 200


def test_complete_removes_and_is_counted_once(sb, queue, fresh_emulator):
    sb.send_ok(queue, props={"MessageId": "m-1"})
    m = sb.peek_lock(queue)
    assert sb.complete(m) == 200
    assert sb.complete(m) == 404
    assert sb.peek_lock(queue).status == 204
    st = fresh_emulator.entity_state(queue)
    assert st["messages"] == [] and st["completed"] == {"m-1": 1}


def test_renew_extends_lock_past_original_expiry(sb, fresh_emulator):
    fresh_emulator.create_queue("rn", lock_duration=30)
    sb.send_ok("rn")
    m = sb.peek_lock("rn")
    fresh_emulator.advance(20)
    status, headers, body = fresh_emulator.request("POST", m.lock_path)
    assert status == 200 and body == b""
    assert "BrokerProperties" not in headers and "Location" not in headers
    assert headers["Content-Type"] == "application/xml; charset=utf-8"
    fresh_emulator.advance(20)  # 40 s after receive, 20 s after renew: still held
    assert fresh_emulator.messages("rn")[0]["locked"] is True
    assert sb.complete(m) == 200


def test_lock_expiry_by_clock_redelivers(sb, fresh_emulator):
    fresh_emulator.create_queue("exp", lock_duration=30)
    sb.send_ok("exp")
    m = sb.peek_lock("exp")
    assert sb.peek_lock("exp").status == 204
    fresh_emulator.advance(31)
    assert sb.renew(m) == 404
    assert sb.complete(m) == 404
    again = sb.peek_lock("exp")
    assert again.status == 201 and again.bp["DeliveryCount"] == 2


def test_receive_and_delete(sb, queue):
    sb.send_ok(queue, b"gone")
    m = sb.receive_and_delete(queue)
    assert m.status == 200 and m.body == b"gone"
    assert m.bp["DeliveryCount"] == 1
    assert "LockToken" not in m.bp and "LockedUntilUtc" not in m.bp
    assert m.location is None
    assert sb.receive_and_delete(queue).status == 204


def test_empty_receive_is_204_with_zero_length(sb, queue):
    status, headers, body = sb.emu.request("POST", "/%s/messages/head?timeout=0" % queue)
    assert status == 204 and body == b""
    assert headers["Content-Length"] == "0"
    assert headers["Content-Type"] == "application/xml; charset=utf-8"


def test_fifo_and_sequence_numbers(sb, queue):
    for i in range(5):
        sb.send_ok(queue, b"m%d" % i)
    got = [sb.receive_and_delete(queue) for _ in range(5)]
    assert [g.body for g in got] == [b"m%d" % i for i in range(5)]
    assert [g.bp["SequenceNumber"] for g in got] == [1, 2, 3, 4, 5]


def test_lock_by_message_id_and_case_insensitive_paths(sb, fresh_emulator):
    fresh_emulator.create_queue("CaseQ")
    sb.send_ok("caseq", props={"MessageId": "order-17"})
    m = Received(*fresh_emulator.request("POST", "/CASEQ/Messages/Head?timeout=0&api-version=2013-07"))
    assert m.status == 201
    assert "/CaseQ/messages/" in m.location
    token = m.bp["LockToken"]
    assert fresh_emulator.request("POST", "/caseq/messages/order-17/%s?api-version=2016-07" % token)[0] == 200
    assert fresh_emulator.request("DELETE", "/CaseQ/MESSAGES/order-17/%s" % token.upper())[0] == 200


def test_wrong_sequence_number_with_valid_token_is_404(sb, queue):
    sb.send_ok(queue)
    m = sb.peek_lock(queue)
    token = m.bp["LockToken"]
    assert sb.emu.request("DELETE", "/%s/messages/99/%s" % (queue, token))[0] == 404
    assert sb.emu.request("DELETE", "/%s/messages/1/%s" % (queue, uuid.uuid4()))[0] == 404
    assert sb.emu.request("DELETE", "/%s/messages/1/not-a-guid" % queue)[0] == 404
    assert sb.complete(m) == 200


def test_unknown_entity_is_410(sb):
    for method, path in [
        ("POST", "/nope/messages"),
        ("POST", "/nope/messages/head?timeout=0"),
        ("DELETE", "/nope/messages/head?timeout=0"),
        ("PUT", "/nope/messages/1/%s" % uuid.uuid4()),
        ("DELETE", "/nope/messages/1/%s" % uuid.uuid4()),
        ("POST", "/nope/messages/1/%s" % uuid.uuid4()),
    ]:
        status, headers, body = sb.emu.request(method, path, b"")
        assert status == 410, (method, path)
        assert body.startswith(b"<Error><Code>410</Code><Detail>")
        assert headers["Content-Type"] == "application/xml; charset=utf-8"


def test_long_poll_woken_by_send(fresh_emulator, queue):
    other = fresh_emulator.client()
    started = time.monotonic()
    t, out = in_thread(lambda: SB(other).peek_lock(queue, timeout=60))
    time.sleep(0.2)  # let the poll reach the server (a send before it would also be found)
    SB(fresh_emulator).send_ok(queue, b"wake")
    t.join(30)
    assert not t.is_alive()
    m = out["value"]
    assert m.status == 201 and m.body == b"wake"
    assert time.monotonic() - started < 30  # well before the 60 s timeout


def test_long_poll_follows_moved_clock(fresh_emulator, queue):
    other = fresh_emulator.client()
    t, out = in_thread(lambda: SB(other).peek_lock(queue, timeout=120))
    deadline = time.monotonic() + 10
    while fresh_emulator.state()["counters"].get("requests.peek_lock", 0) < 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    fresh_emulator.advance(121)
    t.join(30)
    assert not t.is_alive()
    assert out["value"].status == 204


def test_long_poll_gets_message_whose_lock_expired(fresh_emulator):
    fresh_emulator.create_queue("lp", lock_duration=30)
    sb = SB(fresh_emulator)
    sb.send_ok("lp", b"one")
    first = sb.peek_lock("lp")
    other = fresh_emulator.client()
    t, out = in_thread(lambda: SB(other).peek_lock("lp", timeout=120))
    deadline = time.monotonic() + 10
    while fresh_emulator.state()["counters"].get("requests.peek_lock", 0) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    fresh_emulator.advance(31)
    t.join(30)
    m = out["value"]
    assert m.status == 201 and m.body == b"one" and m.bp["DeliveryCount"] == 2
    assert sb.complete(first) == 404


def test_timeout_parameter_validation(sb, queue):
    for bad in ("abc", "-1", "nan"):
        status, _, body = sb.emu.request("POST", "/%s/messages/head?timeout=%s" % (queue, bad))
        assert status == 400 and b"timeout" in body


def test_send_to_subscription_or_receive_from_topic_is_400(sb, fresh_emulator):
    fresh_emulator.create_topic("tp")
    fresh_emulator.create_subscription("tp", "s")
    assert sb.send("tp/subscriptions/s")[0] == 400
    assert sb.peek_lock("tp").status == 400


def test_batch_send(sb, queue):
    batch = [
        {"Body": "first", "BrokerProperties": {"Label": "M1", "TimeToLiveTimeSpan": "0.00:00:40"}},
        {"Body": "second", "UserProperties": {"Priority": "Low", "n": 3, "ok": True}},
        {"Body": "dGhpcmQ=", "IsBodyBase64": True},
    ]
    status, headers, body = sb.emu.request(
        "POST",
        "/%s/messages" % queue,
        json.dumps(batch).encode(),
        {"Content-Type": "application/vnd.microsoft.servicebus.json"},
    )
    assert status == 201 and body == b""
    a, b, c = (sb.receive_and_delete(queue) for _ in range(3))
    assert (a.body, b.body, c.body) == (b"first", b"second", b"third")
    assert a.bp["Label"] == "M1" and '"TimeToLive":40' in a.bp_raw
    assert a.headers["Content-Type"] == "application/xml; charset=utf-8"
    assert b.headers["Priority"] == '"Low"' and b.headers["n"] == "3" and b.headers["ok"] == "true"
    assert [m.bp["SequenceNumber"] for m in (a, b, c)] == [1, 2, 3]


def test_batch_marks_every_message_xml_whatever_the_sender_says(sb, queue):
    # as the service: a batch element's ContentType (BrokerProperties) and the request's
    # own headers are not applied to the messages
    batch = [{"Body": "{}", "BrokerProperties": {"ContentType": "application/json", "Label": "J"}}, {"Body": "plain"}]
    status, _, _ = sb.emu.request(
        "POST",
        "/%s/messages" % queue,
        json.dumps(batch).encode(),
        {
            "Content-Type": "application/vnd.microsoft.servicebus.json",
            "BrokerProperties": '{"ContentType": "text/plain"}',
        },
    )
    assert status == 201
    a, b = (sb.receive_and_delete(queue) for _ in range(2))
    assert a.bp["Label"] == "J" and "ContentType" not in a.bp
    assert [m.headers["Content-Type"] for m in (a, b)] == ["application/xml; charset=utf-8"] * 2


def test_bad_batch_is_400_and_nothing_enqueued(sb, queue, fresh_emulator):
    for body in (
        b"{not json",
        b'{"Body": "x"}',
        b'[{"Body": 5}]',
        b'[{"Body": "x"}, 7]',
        b'[{"Body": "x", "BrokerProperties": {"TimeToLive": "abc"}}]',
    ):
        status, _, _ = sb.emu.request(
            "POST",
            "/%s/messages" % queue,
            body,
            {"Content-Type": "application/vnd.microsoft.servicebus.json; charset=utf-8"},
        )
        assert status == 400, body
    assert fresh_emulator.messages(queue) == []


def test_timeout_is_capped_at_300_seconds(fresh_emulator, queue):
    other = fresh_emulator.client()
    t, out = in_thread(lambda: SB(other).peek_lock(queue, timeout=1000))
    deadline = time.monotonic() + 10
    while fresh_emulator.state()["counters"].get("requests.peek_lock", 0) < 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    fresh_emulator.advance(299)
    t.join(0.5)
    assert t.is_alive()  # still waiting before 300 s
    fresh_emulator.advance(2)
    t.join(30)
    assert not t.is_alive() and out["value"].status == 204


def test_batch_too_large_is_403_and_nothing_enqueued(sb, fresh_emulator):
    fresh_emulator.create_queue("bsmall", max_message_size=100)
    batch = [{"Body": "ok"}, {"Body": "x" * 200}]
    status, _, body = sb.emu.request(
        "POST",
        "/bsmall/messages",
        json.dumps(batch).encode(),
        {"Content-Type": "application/vnd.microsoft.servicebus.json"},
    )
    assert status == 403 and b"exceeds" in body
    assert fresh_emulator.messages("bsmall") == []


def test_entity_size_quota_is_403(sb, fresh_emulator):
    fresh_emulator.create_queue("quota", max_size_in_megabytes=1)
    chunk = b"x" * 200000
    statuses = [sb.send("quota", chunk)[0] for _ in range(6)]
    assert statuses[:5] == [201] * 5 and statuses[5] == 403


def test_unknown_expectation_is_417(fresh_emulator, queue):
    status, _, _ = fresh_emulator.request("POST", "/%s/messages" % queue, b"x", {"Expect": "something-else"})
    assert status == 417
    assert fresh_emulator.messages(queue) == []
