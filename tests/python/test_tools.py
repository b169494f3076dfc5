"""The operator tools from Python: entities with settings, dead-letter resubmission."""

import pytest

import peeklock


def test_entities_lists_queues_topics_and_subscriptions(emu, client, make_queue):
    q = make_queue(lock_duration=11, max_delivery_count=4)
    emu.create_topic("t-tools")
    emu.create_subscription("t-tools", "audit")
    ents = {e.path.lower(): e for e in client.entities()}
    assert (ents[q].kind, ents[q].lock_duration, ents[q].max_delivery_count) == ("queue", 11, 4)
    assert ents["t-tools"].kind == "topic"
    assert ents["t-tools/subscriptions/audit"].kind == "subscription"
    html = client.entities()._repr_html_()
    assert "peeklock-entities" in html and q in html


def test_entities_needs_valid_credentials(emu):
    bad = emu.connection_string.replace("SharedAccessKey=", "SharedAccessKey=x")
    with peeklock.Client.from_connection_string(bad) as c:
        try:
            c.entities()
        except peeklock.AuthError as e:
            assert e.status == 401 and "sig=" not in str(e)
        else:
            raise AssertionError("a wrong key listed entities")


@pytest.mark.parametrize(
    "status, cls, retryable",
    [
        (503, peeklock.ThrottledError, True),
        (429, peeklock.ThrottledError, True),
        (500, peeklock.ServerError, True),
        (400, peeklock.BadRequestError, False),
        (403, peeklock.AuthError, False),
    ],
)
def test_management_statuses_mean_what_the_core_says(emu, client, status, cls, retryable):
    """A management answer's status is read by the table the REST answers are read by
    (the core's pl_http_status_error): a busy service is ThrottledError, retryable."""
    emu.fault(operation="management", status=status, count=1)
    with pytest.raises(peeklock.Error) as got:
        client.entities()
    e = got.value
    assert (type(e), e.status, e.retryable) == (cls, status, retryable), repr(e)
    assert "management GET" in str(e) and "sig=" not in str(e) and e.__suppress_context__
    assert client.entities() is not None  # one answer only


def test_resubmit_dead_letters_from_python(emu, client, make_queue):
    q = make_queue(max_delivery_count=1)
    for i in range(3):
        client.send(q, b"x%d" % i, message_id=f"r{i}", properties={"Tenant": f"t{i}"})
        client.peek_lock(q, timeout=1).abandon()  # dead-lettered
    dry = client.resubmit_dead_letters(q, dry_run=True, timeout=1)
    assert [m["message_id"] for m in dry.moved] == ["r0", "r1", "r2"]
    assert len(emu.entity_state(q)["dead_letter"]) == 3
    rep = client.resubmit_dead_letters(q, filters={"Tenant": "t[02]"}, timeout=1)
    assert [m["message_id"] for m in rep.moved] == ["r0", "r2"] and rep.skipped == 1
    assert sorted(m["message_id"] for m in emu.messages(q)) == ["r0", "r2"]
    assert [m["message_id"] for m in emu.entity_state(q)["dead_letter"]] == ["r1"]
    m = client.receive_and_delete(q, timeout=0)
    assert "DeadLetterReason" not in m.properties and m.properties["Tenant"] == "t0"


@pytest.mark.parametrize(
    "limits, named",
    [({"max_messages": 0}, "max_messages"), ({"max_messages": 1.5}, "max_messages"), ({"rate": -1}, "rate")],
)
def test_resubmit_limits_are_checked_by_the_tools_function_too(emu, client, make_queue, limits, named):
    """One rule for a resubmission's limits (tools.check_resubmit_limits), whichever
    door is used: peeklock.tools directly, the Client method, the command line."""
    from peeklock import tools

    q = make_queue(max_delivery_count=1)
    client.send(q, b"x", message_id="d")
    client.peek_lock(q, timeout=1).abandon()  # dead-lettered
    for call in (tools.resubmit_dead_letters, type(client).resubmit_dead_letters):
        with pytest.raises(ValueError, match=named):
            call(client, q, timeout=1, **limits)
    assert [m["message_id"] for m in emu.entity_state(q)["dead_letter"]] == ["d"]  # nothing moved


@pytest.mark.parametrize("concurrency", [0, -2, 1.5, True])
def test_purge_refuses_a_concurrency_that_is_no_thread_count(emu, client, make_queue, concurrency):
    """tools.purge used to raise 0 or -2 threads to 1 and purge anyway; it now
    refuses them, as the command line's --concurrency does, and deletes nothing."""
    from peeklock import tools

    q = make_queue()
    client.send(q, b"x", message_id="kept")
    with pytest.raises(ValueError, match="concurrency must be a whole number, at least 1"):
        tools.purge(client, q, concurrency=concurrency, timeout=1)
    assert [m["message_id"] for m in emu.messages(q)] == ["kept"]


def test_lock_yields_none_on_an_empty_queue_and_settles_like_with_msg(emu, client, make_queue):
    q = make_queue()
    with client.lock(q, timeout=0) as msg:
        assert msg is None  # no TypeError on an empty queue
    client.send(q, b"a", message_id="a")
    client.send(q, b"b", message_id="b")
    with client.lock(q, timeout=1) as msg:
        assert msg is not None and msg.body == b"a"
    try:
        with client.lock(q, timeout=1) as msg:
            raise RuntimeError("handler failed")
    except RuntimeError:
        pass
    assert emu.entity_state(q)["completed"] == {"a": 1}
    [m] = emu.messages(q)
    assert (m["message_id"], m["state"]) == ("b", "available")  # abandoned


def test_sas_token_lifetime_and_expiry_are_told_apart():
    import time
    import pytest

    tok = peeklock.sas_token("https://ns/q", "k", "v", lifetime=3600)
    se = int(tok.split("se=")[1].split("&")[0])
    assert abs(se - (time.time() + 3600)) < 60
    with pytest.raises(peeklock.InvalidArgument) as ei:
        peeklock.sas_token("https://ns/q", "k", "v", 3600)  # 1970: refused by the core
    assert str(ei.value) == (
        "expiry: is an absolute time (Unix seconds) and 3600 is in 1970-2001; "
        "for a token valid 3600 seconds from now pass now + 3600"
    )
    with pytest.raises(TypeError):
        peeklock.sas_token("https://ns/q", "k", "v", time.time() + 60, lifetime=60)
    assert "se=2000000000" in peeklock.sas_token("https://ns/q", "k", "v", 2_000_000_000)


def test_dead_letter_fields_and_lock_token(emu, client, make_queue):
    q = make_queue(max_delivery_count=1)
    client.send(q, b"x", message_id="x")
    m = client.peek_lock(q, timeout=1)
    assert m.dead_letter_reason is None and len(m.lock_token) == 36
    assert m.lock_token not in repr(m) and m.lock_token not in m._repr_html_()
    m.abandon()
    d = client.peek_lock(q + "/$DeadLetterQueue", timeout=1)
    assert d.dead_letter_reason == "MaxDeliveryCountExceeded"
    assert "1 delivery" in d.dead_letter_description
    d.complete()
    assert client.receive_and_delete(q, timeout=0) is None


def test_stats_has_the_renewer_keys_before_any_lock(emu):
    with peeklock.Client.from_connection_string(emu.connection_string) as c:
        before = c.stats()["renewer"]
        assert before["held"] == 0 and before["renewals"] == 0
        q = "st-" + str(id(c))
        emu.create_queue(q)
        c.send(q, b"x")
        with c.peek_lock(q, timeout=1):
            pass
        assert set(c.stats()["renewer"]) == set(before)


def test_outcome_tells_completed_abandoned_lost_and_unknown(emu, client, make_queue):
    q = make_queue(lock_duration=5)
    for i in range(4):
        client.send(q, b"x", message_id=f"o{i}")
    a = client.peek_lock(q, timeout=1)
    assert a.outcome is None  # held
    a.complete()
    assert a.outcome == "completed"
    b = client.peek_lock(q, timeout=1)
    b.abandon()
    assert b.outcome == "abandoned"
    c = client.peek_lock(q, timeout=1)  # o1 again (abandoned)
    emu.advance(30)  # its lock runs out on the server
    with pytest.raises(peeklock.LockLostError):
        c.complete()
    assert c.outcome == "lost"
    d = client.peek_lock(q, timeout=1)
    emu.fault(operation="complete", drop=True, after=True)  # applied, answer lost
    with pytest.raises(peeklock.OutcomeUnknownError):
        d.complete()
    assert d.outcome == "unknown"
    with pytest.raises(peeklock.OutcomeUnknownError):
        d.abandon()  # remembered
    emu.clear_faults()
    r = client.receive_and_delete(q, timeout=1)
    assert r.message_id == "o2" and r.outcome is None  # nothing to settle
