"""The operator tools from Python: entities with settings, dead-letter resubmission."""
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
    assert "<table>" in html and q in html


def test_entities_needs_valid_credentials(emu):
    bad = emu.connection_string.replace("SharedAccessKey=", "SharedAccessKey=x")
    with peeklock.Client.from_connection_string(bad) as c:
        try:
            c.entities()
        except peeklock.AuthError as e:
            assert e.status == 401 and "sig=" not in str(e)
        else:
            raise AssertionError("a wrong key listed entities")


def test_resubmit_dead_letters_from_python(emu, client, make_queue):
    q = make_queue(max_delivery_count=1)
    for i in range(3):
        client.send(q, b"x%d" % i, message_id=f"r{i}", properties={"Tenant": f"t{i}"})
        client.peek_lock(q, timeout=1).abandon()               # dead-lettered
    dry = client.resubmit_dead_letters(q, dry_run=True, timeout=1)
    assert [m["message_id"] for m in dry.moved] == ["r0", "r1", "r2"]
    assert len(emu.entity_state(q)["dead_letter"]) == 3
    rep = client.resubmit_dead_letters(q, filters={"Tenant": "t[02]"}, timeout=1)
    assert [m["message_id"] for m in rep.moved] == ["r0", "r2"] and rep.skipped == 1
    assert sorted(m["message_id"] for m in emu.messages(q)) == ["r0", "r2"]
    assert [m["message_id"] for m in emu.entity_state(q)["dead_letter"]] == ["r1"]
    m = client.receive_and_delete(q, timeout=0)
    assert "DeadLetterReason" not in m.properties and m.properties["Tenant"] == "t0"
