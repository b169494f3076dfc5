"""Service semantics through the clock controls: topics, dead-lettering, TTL, scheduling,
size limits, custom-property typing."""

import json

import pytest


@pytest.fixture
def topic(fresh_emulator):
    fresh_emulator.create_topic("news")
    fresh_emulator.create_subscription("news", "a")
    fresh_emulator.create_subscription("news", "B")
    yield "news"
    fresh_emulator.delete_entity("news")


def test_each_subscription_gets_its_own_copy(sb, topic):
    sb.send_ok(topic, b"one")
    sb.send_ok(topic, b"two")
    a1 = sb.peek_lock("news/subscriptions/a")
    assert a1.body == b"one"
    assert a1.bp["SequenceNumber"] == 1 and a1.bp["EnqueuedSequenceNumber"] == 1
    assert a1.location.endswith("/news/subscriptions/a/messages/1/%s" % a1.bp["LockToken"])
    assert sb.complete(a1) == 200
    a2 = sb.receive_and_delete("news/Subscriptions/A")
    assert a2.body == b"two" and a2.bp["EnqueuedSequenceNumber"] == 2 and a2.bp["SequenceNumber"] == 2
    b1 = sb.receive_and_delete("news/subscriptions/b")
    b2 = sb.receive_and_delete("news/subscriptions/b")
    assert (b1.body, b2.body) == (b"one", b"two")
    assert b1.bp["MessageId"] == a1.bp["MessageId"]
    assert sb.receive_and_delete("news/subscriptions/a").status == 204


def test_subscription_created_later_sees_only_later_messages(sb, topic, fresh_emulator):
    sb.send_ok(topic, b"early")
    fresh_emulator.create_subscription("news", "late")
    sb.send_ok(topic, b"later")
    m = sb.receive_and_delete("news/subscriptions/late")
    assert m.body == b"later" and m.bp["SequenceNumber"] == 1 and m.bp["EnqueuedSequenceNumber"] == 2


def test_max_delivery_count_dead_letters(sb, fresh_emulator):
    fresh_emulator.create_queue("mdc", max_delivery_count=3, lock_duration=30)
    sb.send_ok("mdc", b"poison", headers={"tries": "0"})
    m = sb.peek_lock("mdc")
    assert sb.unlock(m) == 200
    m = sb.peek_lock("mdc")
    fresh_emulator.advance(31)  # lock expiry counts as a delivery too
    m = sb.peek_lock("mdc")
    assert m.bp["DeliveryCount"] == 3
    assert sb.unlock(m) == 200
    assert sb.peek_lock("mdc").status == 204
    st = fresh_emulator.entity_state("mdc")
    assert st["messages"] == [] and len(st["dead_letter"]) == 1
    assert st["dead_letter"][0]["dead_letter_reason"] == "MaxDeliveryCountExceeded"
    d = sb.peek_lock("mdc/$DeadLetterQueue")
    assert d.status == 201 and d.body == b"poison"
    assert d.headers["DeadLetterReason"] == '"MaxDeliveryCountExceeded"'
    assert "DeadLetterErrorDescription" in d.headers
    assert d.headers["tries"] == "0"
    assert d.bp["SequenceNumber"] == m.bp["SequenceNumber"]
    assert "/mdc/$DeadLetterQueue/messages/" in d.location
    assert sb.complete(d) == 200
    assert sb.receive_and_delete("mdc/$deadletterqueue").status == 204


def test_subscription_dead_letter_queue(sb, topic, fresh_emulator):
    fresh_emulator.create_subscription("news", "a", max_delivery_count=1)
    sb.send_ok(topic, b"x")
    m = sb.peek_lock("news/subscriptions/a")
    assert sb.unlock(m) == 200
    d = sb.receive_and_delete("news/subscriptions/a/$DeadLetterQueue")
    assert d.status == 200 and d.body == b"x"
    assert sb.receive_and_delete("news/subscriptions/b").body == b"x"


def test_ttl_expiry_drops_without_dead_lettering(sb, queue, fresh_emulator):
    sb.send_ok(queue, b"short", props={"TimeToLive": 10})
    sb.send_ok(queue, b"long", props={"TimeToLive": "100"})
    fresh_emulator.advance(11)
    m = sb.receive_and_delete(queue)
    assert m.body == b"long" and '"TimeToLive":100' in m.bp_raw
    assert fresh_emulator.entity_state(queue)["dead_letter"] == []


def test_ttl_expiry_dead_letters_when_enabled(sb, fresh_emulator):
    fresh_emulator.create_queue("ttldl", dead_lettering_on_message_expiration=True, default_message_time_to_live=100)
    sb.send_ok("ttldl", b"a")
    sb.send_ok("ttldl", b"b", props={"TimeToLive": 50})
    fresh_emulator.advance(60)
    m = sb.receive_and_delete("ttldl")
    assert m.body == b"a" and '"TimeToLive":100' in m.bp_raw
    d = sb.receive_and_delete("ttldl/$DeadLetterQueue")
    assert d.body == b"b" and d.headers["DeadLetterReason"] == '"TTLExpiredException"'
    assert '"TimeToLive":50' in d.bp_raw
    fresh_emulator.advance(1000)  # TTL is not enforced in the dead-letter queue
    sb.send_ok("ttldl", b"c", props={"TimeToLive": 10})
    fresh_emulator.advance(11)
    assert sb.peek_lock("ttldl/$DeadLetterQueue").body == b"c"


def test_entity_default_ttl_caps_message_ttl(sb, fresh_emulator):
    fresh_emulator.create_queue("cap", default_message_time_to_live=30)
    sb.send_ok("cap", props={"TimeToLive": 1000})
    fresh_emulator.advance(31)
    assert sb.receive_and_delete("cap").status == 204


def test_locked_message_expires_when_released(sb, fresh_emulator):
    fresh_emulator.create_queue("lockttl", lock_duration=60)
    sb.send_ok("lockttl", props={"TimeToLive": 30})
    m = sb.peek_lock("lockttl")
    fresh_emulator.advance(40)  # TTL passed while locked: still held
    assert sb.renew(m) == 200
    assert sb.unlock(m) == 200  # released after expiry: gone
    assert sb.peek_lock("lockttl").status == 204


def test_scheduled_enqueue(sb, queue, fresh_emulator):
    from email.utils import formatdate

    now = fresh_emulator.clock()["now"]
    sb.send_ok(queue, b"later", props={"ScheduledEnqueueTimeUtc": formatdate(now + 120, usegmt=True)})
    assert sb.peek_lock(queue).status == 204
    fresh_emulator.advance(121)
    m = sb.peek_lock(queue)
    assert m.status == 201 and m.body == b"later" and "ScheduledEnqueueTimeUtc" in m.bp


def test_broker_properties_round_trip(sb, queue):
    props = {
        "CorrelationId": "c1",
        "Label": "L",
        "MessageId": "mid",
        "ReplyTo": "r",
        "To": "t",
        "SessionId": "s1",
        "ReplyToSessionId": "rs",
        "TimeToLive": 3.5,
        "State": "ignored",
        "SequenceNumber": 999,
        "Unknown": 1,
    }
    sb.send_ok(queue, props=props)
    m = sb.peek_lock(queue)
    for k in ("CorrelationId", "Label", "MessageId", "ReplyTo", "To", "SessionId", "ReplyToSessionId"):
        assert m.bp[k] == props[k]
    assert m.bp["PartitionKey"] == "s1"  # the service derives it from SessionId
    assert m.bp["TimeToLive"] == 3.5 and m.bp["State"] == "Active" and m.bp["SequenceNumber"] == 1
    assert "Unknown" not in m.bp
    assert list(m.bp) == sorted(m.bp)


@pytest.mark.parametrize(
    "raw",
    [
        "{'Label': 'x'}",
        "not json",
        "[1,2]",
        '{"TimeToLive": "soon"}',
        '{"TimeToLive": -5}',
        '{"MessageId": ""}',
        '{"MessageId": {"a": 1}}',
        '{"SessionId": "a", "PartitionKey": "b"}',
        '{"ScheduledEnqueueTimeUtc": "tomorrow"}',
        '{"MessageId": "%s"}' % ("x" * 129),
    ],
)
def test_bad_broker_properties_are_400_naming_the_header(sb, queue, fresh_emulator, raw):
    status, _, body = sb.send(queue, b"x", props=raw)
    assert status == 400
    assert b"BrokerProperties" in body
    assert fresh_emulator.messages(queue) == []


def test_custom_property_typing_and_verbatim_echo(sb, queue):
    headers = {
        "hello": '"world"',
        "number": "42",
        "large": "8555111000",
        "floating": "3.14",
        "active": "true",
        "dob": '"Wed, 14 Dec 2011 00:00:00 GMT"',
        "quote_message": '"This \\"should\\" work fine"',
        "neg": "-7",
        "exp": "1e3",
        "propdate": '"Wed, 07 Mar 2012 14:27:00 PST"',
        "MixedCase": '"kept"',
    }
    sb.send_ok(queue, headers=headers)
    m = sb.peek_lock(queue)
    for k, v in headers.items():
        assert m.headers[k] == v
    # the header name is spelled as sent
    assert "MixedCase" in [k for k in m.headers.keys()]


@pytest.mark.parametrize(
    "name,value", [("bad", "world"), ("bad", "True"), ("bad", "1.2.3"), ("bad", "'single'"), ("bad", '"open')]
)
def test_bad_custom_property_is_400_naming_the_header(sb, queue, fresh_emulator, name, value):
    status, _, body = sb.send(queue, b"x", headers={name: value})
    assert status == 400
    assert ("HTTP header '%s'" % name).encode() in body
    assert fresh_emulator.messages(queue) == []


def test_message_too_large_is_403(sb, fresh_emulator):
    fresh_emulator.create_queue("small", max_message_size=1024)
    assert sb.send("small", b"x" * 1000)[0] == 201
    status, _, body = sb.send("small", b"x" * 1025)
    assert status == 403 and b"exceeds the maximum message size" in body
    status, _, body = sb.send("small", b"x" * 900, headers={"big": '"%s"' % ("p" * 200)})
    assert status == 403
    assert len(fresh_emulator.messages("small")) == 1


def test_default_message_size_limit_256k(sb, queue):
    assert sb.send(queue, b"x" * 262000)[0] == 201
    assert sb.send(queue, b"x" * 262145)[0] == 403
    assert sb.send(queue, b"x" * (2 * 1024 * 1024))[0] == 403


def test_reset_empties_but_keeps_entities(sb, queue, fresh_emulator):
    sb.send_ok(queue)
    fresh_emulator.fault(operation="send", status=503)
    fresh_emulator.reset()
    assert fresh_emulator.messages(queue) == []
    assert fresh_emulator.state()["faults"] == []
    sb.send_ok(queue)
    assert sb.peek_lock(queue).bp["SequenceNumber"] == 1


def test_state_dump_shape(sb, queue, fresh_emulator):
    sb.send_ok(queue, props={"MessageId": "a"})
    sb.send_ok(queue, props={"MessageId": "b"})
    m = sb.peek_lock(queue)
    st = fresh_emulator.state()
    e = st["entities"][queue]
    assert e["kind"] == "queue" and e["lock_duration"] == 60 and e["max_delivery_count"] == 10
    msgs = {x["message_id"]: x for x in e["messages"]}
    assert msgs["a"]["locked"] is True and msgs["a"]["delivery_count"] == 1
    assert msgs["a"]["locked_until"] == pytest.approx(st["now"] + 60, abs=5)
    assert msgs["b"]["locked"] is False and msgs["b"]["state"] == "available"
    assert st["counters"]["requests.send"] >= 2
    sb.complete(m)
    assert fresh_emulator.entity_state(queue)["completed"] == {"a": 1}
    assert json.dumps(st)


def test_date_header_follows_the_moved_clock(sb, fresh_emulator):
    """A client learns the lock duration as LockedUntilUtc - Date (architecture.md lock rules), so the
    Date header must come from the same clock as LockedUntilUtc, also after a clock advance."""
    import email.utils

    fresh_emulator.create_queue("dated", lock_duration=20)
    fresh_emulator.advance(3600)
    sb.send_ok("dated", b"x")
    m = sb.peek_lock("dated")
    date = email.utils.parsedate_to_datetime(m.headers["Date"]).timestamp()
    until = email.utils.parsedate_to_datetime(m.bp["LockedUntilUtc"]).timestamp()
    assert 19 <= until - date <= 21
    assert abs(date - fresh_emulator.clock()["now"]) <= 1.5
