"""Every client operation against the emulator over real sockets."""

import datetime as dt
import json
import time
import urllib.parse

import pytest

import peeklock
from peeklock import _core
from conftest import completed, wait_for


def test_send_peek_lock_complete(client, emu, queue):
    client.send(
        queue,
        b"payload",
        properties={"Priority": "High", "Attempt": 3, "Ratio": 0.5, "Urgent": True, "Quote": 'say "hi"'},
        message_id="o-17",
        label="M1",
        content_type="application/json",
        time_to_live=600,
    )
    msg = client.peek_lock(queue, timeout=5)
    assert msg is not None
    assert msg.body == b"payload"
    assert msg.message_id == "o-17"
    assert msg.label == "M1"
    assert msg.content_type == "application/json"
    assert msg.sequence_number == 1
    assert msg.delivery_count == 1
    assert msg.entity == queue
    assert msg.time_to_live == 600
    assert msg.properties == {"Priority": "High", "Attempt": 3, "Ratio": 0.5, "Urgent": True, "Quote": 'say "hi"'}
    assert isinstance(msg.enqueued_time, dt.datetime)
    assert msg.locked_until > msg.enqueued_time
    assert msg.lock_duration == pytest.approx(5, abs=1)
    assert 0 < msg.lock_remaining <= 5
    assert msg.state == "held"
    msg.complete()
    assert msg.state == "settled"
    assert completed(emu, queue) == {"o-17": 1}
    assert client.peek_lock(queue, timeout=0) is None


def test_no_time_to_live_reads_as_none(client, queue):
    # The service sends TimeSpan.MaxValue (922337203685.47754 s) for a message sent
    # without one; the core reports it as absent.
    client.send(queue, b"x")
    client.send(queue, b"y", time_to_live=40)
    first = client.peek_lock(queue, timeout=5)
    second = client.peek_lock(queue, timeout=5)
    assert first is not None and second is not None
    assert first.time_to_live is None
    assert second.time_to_live == 40
    first.complete()
    second.complete()


def test_entity_name_that_needs_percent_encoding(client):
    # Service Bus names are ASCII letters, digits, '.', '-', '_': no such entity can exist, and
    # the answer says so (410), not that the token is wrong. The name is percent-encoded in the
    # URL and in the token's scope; the emulator checks the scope decoded, as the path is.
    for name in ("caf\u00e9", "two words"):
        with pytest.raises(peeklock.EntityNotFoundError):
            client.peek_lock(name, timeout=0)
        with pytest.raises(peeklock.EntityNotFoundError):
            client.send(name, b"x")


def test_datetime_property_and_str_body(client, queue):
    when = dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
    client.send(queue, "héllo", properties={"When": when})
    msg = client.receive_and_delete(queue, timeout=5)
    assert msg.body == "héllo".encode()
    assert msg.text == "héllo"
    assert msg.properties["When"] == when
    assert msg.state == "none"


def test_send_outgoing_and_batch(client, emu, queue):
    n = client.send_batch(
        queue,
        [
            peeklock.OutgoingMessage(b"a", message_id="a"),
            peeklock.OutgoingMessage(b"b", message_id="b", properties={"k": 1}),
            b"c",
        ],
    )
    assert n == 3
    client.send(queue, peeklock.OutgoingMessage(b"d", message_id="d"))
    got = [client.receive_and_delete(queue, timeout=5) for _ in range(4)]
    assert [m.body for m in got] == [b"a", b"b", b"c", b"d"]
    assert got[1].properties == {"k": 1}
    assert [m.sequence_number for m in got] == [1, 2, 3, 4]
    assert client.receive_and_delete(queue, timeout=0) is None


def _sent_broker_properties(msg):
    """The BrokerProperties the emulator served for a received message (what it stored)."""
    return json.loads(_core.pl_message_broker_properties_json(msg._h))


def test_send_force_persistence_reaches_broker_properties(client, queue):
    client.send(queue, b"t", force_persistence=True)
    client.send(queue, b"f", force_persistence=False)
    client.send(queue, b"n")
    client.send(queue, peeklock.OutgoingMessage(b"o", force_persistence=True))
    client.send_batch(queue, [peeklock.OutgoingMessage(b"b", force_persistence=False)])
    got = {}
    for _ in range(5):
        m = client.receive_and_delete(queue, timeout=5)
        got[m.body] = _sent_broker_properties(m).get("ForcePersistence")
    assert got == {b"t": True, b"f": False, b"n": None, b"o": True, b"b": False}


def test_abandon_redelivers_and_renew(client, emu, queue):
    client.send(queue, b"x", message_id="x")
    msg = client.peek_lock(queue, timeout=5)
    msg.renew_lock()
    assert client.stats()["renewed"] == 1
    msg.abandon()
    with pytest.raises(peeklock.StateError):
        msg.complete()  # settled exactly once
    again = client.peek_lock(queue, timeout=5)
    assert again.sequence_number == msg.sequence_number
    assert again.delivery_count == 2
    again.complete()
    assert completed(emu, queue) == {"x": 1}


def test_receive_iterator_stops_on_count_and_timeout(client, queue):
    for i in range(5):
        client.send(queue, str(i))
    got = []
    for msg in client.receive(queue, timeout=1, max_messages=3):
        with msg:
            got.append(msg.text)
    assert got == ["0", "1", "2"]
    rest = []
    for msg in client.receive(queue, timeout=0):
        with msg:
            rest.append(msg.text)
    assert rest == ["3", "4"]


def test_dead_letter_queue(client, emu, make_queue):
    q = make_queue(lock_duration=5, max_delivery_count=1)
    client.send(q, b"poison", message_id="p")
    client.peek_lock(q, timeout=5).abandon()
    assert client.peek_lock(q, timeout=0) is None
    dead = client.peek_lock(q + "/$DeadLetterQueue", timeout=5)
    assert dead.body == b"poison"
    assert dead.properties["DeadLetterReason"] == "MaxDeliveryCountExceeded"
    dead.complete()


def test_topic_subscription(client, emu):
    emu.create_topic("t1")
    emu.create_subscription("t1", "s1", lock_duration=5)
    emu.create_subscription("t1", "s2", lock_duration=5)
    client.send("t1", b"fan-out")
    for sub in ("t1/subscriptions/s1", "t1/subscriptions/s2"):
        with client.peek_lock(sub, timeout=5) as msg:
            assert msg.body == b"fan-out"
    emu.delete_entity("t1")


def test_stats(client, queue):
    client.send(queue, b"1")
    client.send(queue, b"2")
    with client.peek_lock(queue, timeout=5):
        pass
    client.peek_lock(queue, timeout=5).abandon()
    s = client.stats()
    assert s["sent"] == 2 and s["received"] == 2
    assert s["completed"] == 1 and s["abandoned"] == 1
    assert s["renewer"]["threads"] == 1


def test_sas_token_published_vector():
    assert peeklock.sas_token("audience", "keyName", "key", 1578099723) == (
        "SharedAccessSignature sr=audience&sig=8UM0iIfFCfeBSqxSdBMW8pUbhAm7mnjSUaIZTZx8V0g%3D&se=1578099723&skn=keyName"
    )


def test_sas_token_refuses_a_lifetime_or_expiry_past_a_64_bit_unix_time():
    for bad in (99999999999999999999, 1e300, 10**400):
        with pytest.raises(ValueError, match=r"^lifetime is too long: .*64-bit Unix time, got "):
            peeklock.sas_token("u", "k", "v", lifetime=bad)
    for bad in (float("inf"), float("nan"), 0, -1):
        with pytest.raises(ValueError, match=r"^lifetime must be a positive number of seconds, got "):
            peeklock.sas_token("u", "k", "v", lifetime=bad)
    # the core's range (pl_check_expiry), its message; Lua's sas_token has the same edges
    for bad in (2**63, 2.0**63, -(2**63), float("inf"), float("nan"), 10**400):
        with pytest.raises(peeklock.InvalidArgument, match=r"^expiry: must be a 64-bit Unix time \(seconds\), got "):
            peeklock.sas_token("u", "k", "v", bad)
    for edge in (9.21e18, 2**63 - 1024, 2.0**63 - 1024):
        assert f"&se={int(edge)}&" in peeklock.sas_token("u", "k", "v", edge)
    assert "&se=" in peeklock.sas_token("u", "k", "v", lifetime=2.0**40)


def test_parse_connection_string_hides_key(emu):
    cs = peeklock.parse_connection_string(emu.connection_string)
    assert cs.endpoint == emu.endpoint
    assert cs.development_emulator is True
    assert cs.key == emu.key
    assert emu.key not in repr(cs)


def test_client_from_key_and_sas_token(emu, queue):
    c1 = peeklock.Client(emu.endpoint, key_name=emu.key_name, key=emu.key)
    c1.send(queue, b"k")
    c2 = peeklock.Client(emu.endpoint, sas_token=emu.sas_token(""))
    assert c2.receive_and_delete(queue, timeout=5).body == b"k"
    assert emu.key not in repr(c1)


def test_token_provider_is_called(emu, queue):
    calls = []

    def provider(audience):
        calls.append(audience)
        return "header.payload.signature", 4102444800  # far expiry: fetched once

    c = peeklock.Client(emu.endpoint, token_provider=provider)
    assert calls == [c.endpoint + "/"]  # the namespace, as docs/python.md says
    assert c.endpoint.startswith("http") and not c.endpoint.endswith("/")
    # the emulator checks SAS only, so the bearer token is refused (401) after being sent
    with pytest.raises(peeklock.AuthError):
        c.send(queue, b"t")
    with pytest.raises(peeklock.AuthError):
        c.send(queue, b"t")
    assert len(calls) == 1
    assert "header.payload.signature" not in repr(c)


def test_errors_map_to_the_hierarchy(emu, queue, make_queue):
    bad = peeklock.Client(emu.endpoint, key_name=emu.key_name, key="wrong-key")
    with pytest.raises(peeklock.AuthError) as ei:
        bad.send(queue, b"x")
    assert ei.value.status == 401 and ei.value.code < 0
    assert "wrong-key" not in str(ei.value) and "wrong-key" not in repr(ei.value)
    c = peeklock.Client.from_connection_string(emu.connection_string)
    with pytest.raises(peeklock.EntityNotFoundError) as ei:
        c.send("no-such-queue", b"x")
    assert ei.value.status == 410
    small = make_queue(max_message_size=1024)
    with pytest.raises(peeklock.MessageTooLargeError) as ei:
        c.send(small, b"x" * 4096)
    assert ei.value.status == 403
    emu.fault(operation="send", status=503)
    with pytest.raises(peeklock.ThrottledError) as ei:
        c.send(queue, b"x")
    assert ei.value.status == 503
    assert isinstance(ei.value, peeklock.Error)


def test_closed_client(emu, queue):
    c = peeklock.Client.from_connection_string(emu.connection_string)
    c.close()
    with pytest.raises(peeklock.ClosedError):
        c.send(queue, b"x")


def test_connection_refused_is_connection_error(queue):
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    c = peeklock.Client(f"http://127.0.0.1:{port}", key_name="k", key="v", max_retries=0)
    with pytest.raises(peeklock.ConnectionError) as ei:
        c.send(queue, b"x")
    assert ei.value.status == 0 and isinstance(ei.value, ConnectionError)


def test_server_error_after_retries(client, emu, queue):
    emu.fault(operation="peek_lock", status=500)
    with pytest.raises(peeklock.ServerError) as ei:
        client.peek_lock(queue, timeout=0)
    assert ei.value.status == 500
    assert client.stats()["retries"] == 3


def test_send_answered_500_is_an_unknown_outcome(client, emu, queue):
    # a 500 may come after the message was stored: never retried, never a plain error
    emu.fault(operation="send", status=500, after=True, count=1)
    with pytest.raises(peeklock.OutcomeUnknownError) as ei:
        client.send(queue, b"x")
    assert ei.value.status == 500 and ei.value.code == -12
    assert "may have been stored" in str(ei.value)
    assert isinstance(ei.value, peeklock.Error)
    assert len(emu.messages(queue)) == 1


def test_transient_faults_are_retried(client, emu, queue):
    emu.fault(operation="send", status=503, count=1)
    emu.fault(operation="peek_lock", drop=True, count=1)
    client.send(queue, b"survives", message_id="r")
    msg = client.peek_lock(queue, timeout=5)
    assert msg is not None and msg.body == b"survives"
    msg.complete()
    assert completed(emu, queue) == {"r": 1}
    assert client.stats()["retries"] >= 1


def test_token_provider_refreshes_in_the_background(emu):
    calls = []

    def provider(audience):
        calls.append(time.monotonic())
        return "header.payload.signature", time.time() + 301  # due again in ~1 s

    c = peeklock.Client(emu.endpoint, token_provider=provider)
    wait_for(lambda: len(calls) >= 2, timeout=15)  # no client call made meanwhile
    c.close()


class _Text(str):
    pass


def test_send_properties_same_through_both_paths(client, queue):
    """A bytes body with a dict of plain str/int/float/bool properties goes out in
    one C call; anything else (a datetime, a str subclass, another mapping, a
    str body) takes the general path. Both send the same properties."""
    import types

    assert client.peek_lock(queue, timeout=0) is None  # the entity known: the C path
    when = dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
    plain = {"S": "text é", "I": -(2**63), "J": 2**53, "F": 1.5, "T": True, "N": False}
    for props in (plain, types.MappingProxyType(plain), {**plain, "D": when}, {**plain, "Sub": _Text("sub")}, None, {}):
        client.send(queue, b"body", properties=props)
        client.send(queue, peeklock.OutgoingMessage(b"body", properties=props))
        a = client.receive_and_delete(queue, timeout=5)
        b = client.receive_and_delete(queue, timeout=5)
        want = {k: str(v) if isinstance(v, _Text) else v for k, v in (props or {}).items()}
        assert a.properties == b.properties == want
        assert a.body == b.body == b"body"


def test_send_property_errors_same_through_both_paths(client, queue):
    assert client.peek_lock(queue, timeout=0) is None  # the entity known: the C path
    with pytest.raises(OverflowError):
        client.send(queue, b"x", properties={"Big": 2**64})
    with pytest.raises(peeklock.InvalidArgument):
        client.send(queue, b"x", properties={"ok": 1, "bad name": 1})
    with pytest.raises(TypeError, match="property 'a'"):
        client.send(queue, b"x", properties={"ok": 1, "a": [1]})
    with pytest.raises(TypeError, match="property names"):
        client.send(queue, b"x", properties={1: "x"})
    assert client.peek_lock(queue, timeout=0) is None  # nothing half-sent


def test_outgoing_message_refuses_what_a_send_refuses(client, queue):
    """OutgoingMessage checks its properties when made by the rule every send adds them
    by (one function): the same error, in the same words, from both."""
    bad_date = dt.datetime(1960, 1, 1, tzinfo=dt.timezone.utc)
    for props, exc in (
        ({1: "x"}, TypeError),
        ({_Text("name"): 1}, TypeError),
        ({"a": [1]}, TypeError),
        ({"P": "a\x00b"}, ValueError),
        ({"Q\x00R": "v"}, ValueError),
        ({"D": bad_date}, peeklock.InvalidArgument),
    ):
        with pytest.raises(exc) as made:
            peeklock.OutgoingMessage(b"x", properties=props)
        with pytest.raises(exc) as sent:
            client.send(queue, b"x", properties=props)
        assert str(made.value) == str(sent.value), (props, made.value, sent.value)
    assert client.peek_lock(queue, timeout=0) is None  # nothing sent


def test_a_bare_token_lives_the_core_s_token_lifetime(emu):
    # a token provider returning a token without its expiry: taken to live as long as
    # the core's own tokens, then fetched again 5 min before that
    c = peeklock.Client(emu.endpoint, token_provider=lambda audience: "header.payload.signature")
    left = c._token_expiry - time.time()
    c.close()
    assert _core.PL_DEFAULT_TOKEN_LIFETIME_S - 60 < left <= _core.PL_DEFAULT_TOKEN_LIFETIME_S, left


def test_management_tokens_live_only_as_long_as_a_request(emu):
    # the management (Atom) requests' SAS tokens are signed anew for each request: they live
    # minutes (a leaked header is soon useless), not the hour of the core's reused tokens
    with peeklock.Client.from_connection_string(emu.connection_string) as c:
        auth = c._authorization(c.endpoint + "/")
        assert c.entities() is not None  # and the service takes them
    se = int(urllib.parse.parse_qs(auth.split(" ", 1)[1])["se"][0])
    assert 240 < se - time.time() <= 300 < _core.PL_DEFAULT_TOKEN_LIFETIME_S, se


def test_message_getters(client, queue):
    """body, message_id and sequence_number are read by C getters that take the
    Message; the body is made once and kept."""
    client.send(queue, b"", message_id="empty")
    client.send(queue, "é".encode())
    a = client.peek_lock(queue, timeout=5)
    b = client.receive_and_delete(queue, timeout=5)
    assert a.body == b"" and a.body is a.body
    assert a.message_id == "empty" and isinstance(a.sequence_number, int)
    assert b.body == "é".encode() and b.text == "é" and b.body is b.body
    assert isinstance(b.message_id, str) and b.sequence_number == a.sequence_number + 1
    a.complete()
    assert a.body == b"" and a.message_id == "empty"  # still readable once settled
    for getter in (peeklock.Message.body, peeklock.Message.message_id, peeklock.Message.sequence_number):
        with pytest.raises(TypeError, match="peeklock.Message"):
            getter.fget(object())


def test_send_keywords_are_one_list(client, queue):
    """Client.send, aio.Client.send and OutgoingMessage take the keywords of one
    TypedDict (SendOptions): their signatures spell them out, in its order, and a
    keyword it lacks is a TypeError naming it."""
    import inspect

    import peeklock.aio
    from peeklock.client import SendOptions

    options = list(SendOptions.__annotations__)
    assert len(options) == 14 and options[0] == "properties"
    sync = inspect.signature(peeklock.Client.send)
    assert list(sync.parameters) == ["self", "entity", "body", *options]
    assert list(inspect.signature(client.send).parameters) == ["entity", "body", *options]
    assert inspect.signature(peeklock.aio.Client.send) == sync
    assert list(inspect.signature(peeklock.OutgoingMessage).parameters) == ["body", *options, "resend"]
    assert all(
        sync.parameters[k].default is None and sync.parameters[k].kind is inspect.Parameter.KEYWORD_ONLY
        for k in options
    )
    assert sync.parameters["message_id"].annotation == "Optional[str]"
    with pytest.raises(TypeError, match=r"OutgoingMessage\.__init__\(\) got an unexpected keyword argument 'ttl'"):
        peeklock.OutgoingMessage(b"x", ttl=3)
    for body in (b"x", "x", peeklock.OutgoingMessage(b"x")):
        with pytest.raises(TypeError, match=r"Client\.send\(\) got an unexpected keyword argument 'ttl'"):
            client.send(queue, body, message_id="1", ttl=3)
    assert client.peek_lock(queue, timeout=0) is None  # nothing was sent
    # None is "not set", as when left out: the message goes as if given none
    client.send(queue, b"n", **dict.fromkeys(options))
    m = client.peek_lock(queue, timeout=5)
    assert m.body == b"n" and m.label is None and m.correlation_id is None
    m.complete()


def test_c_methods_take_the_common_case_and_hand_on_the_rest(client, emu, queue):
    """send, peek_lock and complete are C methods for their common case; every
    other call runs the Python method each was made from (its __wrapped__), which
    checks, refreshes and raises as before. Both make the same Message."""
    import inspect

    for cls, name in ((peeklock.Client, "send"), (peeklock.Client, "peek_lock"), (peeklock.Message, "complete")):
        method = getattr(cls, name)
        general = method.__wrapped__
        # made in the class body from the def a reader sees, not set on the class afterwards
        assert type(method).__name__ == "method" and vars(cls)[name] is method
        assert general.__qualname__ == method.__qualname__ == f"{cls.__name__}.{name}"
        assert inspect.signature(method) == inspect.signature(general)  # annotations too
        assert method.__doc__ == general.__doc__ and method.__doc__
        with pytest.raises(TypeError, match="doesn't apply to a 'object' object"):
            method(object())
    assert list(inspect.signature(client.peek_lock).parameters) == ["entity", "timeout", "max_renew"]
    # a keyword no method takes: rejected by the Python method, under the method's own name
    with pytest.raises(TypeError, match=r"Client\.send\(\) got an unexpected keyword argument 'lable'"):
        client.send(queue, b"x", lable="l")
    for i in range(4):
        client.send(queue, b"m", properties={"I": i})
    a = client.peek_lock(queue, 5, max_renew=7)  # C: an int max_renew
    b = peeklock.Client.peek_lock.__wrapped__(client, queue, 5, max_renew=7)  # Python
    c = client.peek_lock(entity=queue, timeout=5, max_renew=2.5)
    d = client.peek_lock(queue, timeout=4.5)  # a float: handed on, rounded up
    for m, mr in ((a, 7.0), (b, 7.0), (c, 2.5), (d, None)):
        assert type(m) is peeklock.Message and m.state == "held" and m.body == b"m"
        assert m.max_renew == mr and type(m.max_renew) is type(mr)
        assert m._client is client and m._props is None and m._in_renewer is False
    assert [m.properties["I"] for m in (a, b, c, d)] == [0, 1, 2, 3]
    for bad, exc in (((queue, 5, 3), TypeError), ((queue,), TypeError)):
        with pytest.raises(exc):
            client.peek_lock(*bad, nonsense=1)
    with pytest.raises(TypeError):
        client.peek_lock(queue, 5, max_renew=float("nan"), timeout=5)
    with pytest.raises(ValueError, match="max_renew"):
        client.peek_lock(queue, 0, max_renew=float("inf"))
    with pytest.raises(TypeError):
        a.complete(1)
    a.complete()
    peeklock.Message.complete.__wrapped__(b)
    with pytest.raises(peeklock.StateError):
        a.complete()  # settled once
    with c:  # in the renewer: handed on
        c.complete()
    d.complete()
    with pytest.raises(TypeError):
        client.send(queue, b"x", {"I": 1})  # properties is keyword-only
    client.close()
    with pytest.raises(peeklock.ClosedError):
        client.peek_lock(queue, 0)
    with pytest.raises(peeklock.ClosedError):
        client.send(queue, b"x", properties={"I": 1})
    assert len(completed(emu, queue)) == 4
