"""What a receiver sees for each way of sending (docs/c-api.md, "Content types and DateTime
properties"): content types by path, a batched content type refused instead of dropped,
DateTime properties in whole seconds, ViaPartitionKey. Against the emulator, which marks
batched messages as the service does."""

import asyncio
import datetime as dt
import json
import os
import subprocess
import sys

import pytest

import peeklock
import peeklock.aio
from peeklock import errors

BIN = os.path.join(os.path.dirname(sys.executable), "peeklock")
UTC = dt.timezone.utc
FRACTION = dt.datetime(2026, 1, 2, 3, 4, 5, 250000, tzinfo=UTC)
WHOLE = FRACTION.replace(microsecond=0)
# the core's refusal of a fraction (pl_outgoing_add_datetime, pl_check_datetime)
WORDS = "^property 'T': DateTime keeps whole seconds; round it or send it as a string$"


def cli(cs, *args):
    env = dict(os.environ, PEEKLOCK_CONNECTION_STRING=cs)
    return subprocess.run([BIN, *args], capture_output=True, text=True, env=env, timeout=60)


def test_each_path_gives_the_documented_content_type(client, emu, queue):
    client.send(queue, b"{}", content_type="application/json")
    client.send(queue, b"raw")
    client.send_batch(queue, [b"b1", peeklock.OutgoingMessage(b"b2", label="L")])
    got = [client.receive_and_delete(queue, timeout=5) for _ in range(4)]
    assert [(m.body, m.content_type) for m in got] == [
        (b"{}", "application/json"),
        (b"raw", "application/octet-stream"),
        (b"b1", "application/xml; charset=utf-8"),
        (b"b2", "application/xml; charset=utf-8"),
    ]


def test_send_batch_refuses_a_content_type_it_would_lose(client, emu, queue):
    batch = [peeklock.OutgoingMessage(b"a"), peeklock.OutgoingMessage(b"{}", content_type="application/json")]
    with pytest.raises(ValueError, match="content type.*one by one") as ei:
        client.send_batch(queue, batch)
    assert isinstance(ei.value, errors.InvalidArgument) and ei.value.code == errors.PL_EINVAL
    assert emu.messages(queue) == []  # nothing of the batch was sent
    # one by one, the content type arrives
    for m in batch:
        client.send(queue, m)
    got = [client.receive_and_delete(queue, timeout=5) for _ in batch]
    assert [m.content_type for m in got] == ["application/octet-stream", "application/json"]


def test_aio_send_batch_refuses_a_content_type_too(emu, queue):
    async def main():
        async with peeklock.aio.Client.from_connection_string(emu.connection_string) as c:
            with pytest.raises(ValueError, match="content type"):
                await c.send_batch(queue, [peeklock.OutgoingMessage(b"x", content_type="text/plain")])
            with pytest.raises(ValueError, match=WORDS):
                await c.send(queue, b"x", properties={"T": FRACTION})
            with pytest.raises(ValueError, match="property 'T'"):
                await c.send_batch(queue, [peeklock.OutgoingMessage(b"x", properties={"T": FRACTION})])

    asyncio.run(main())
    assert emu.messages(queue) == []


def test_datetime_with_a_fraction_is_refused_whole_seconds_round_trip(client, emu, queue):
    # the core's rule (pl_outgoing_add_datetime) in its words, as InvalidArgument
    with pytest.raises(ValueError, match=WORDS) as ei:
        client.send(queue, b"x", properties={"T": FRACTION})
    assert isinstance(ei.value, errors.InvalidArgument) and ei.value.code == errors.PL_EINVAL
    with pytest.raises(ValueError, match="property 'T'"):
        client.send(queue, b"x", properties={"T": FRACTION}, label="general path")
    with pytest.raises(ValueError, match="property 'T'"):
        peeklock.OutgoingMessage(b"x", properties={"T": FRACTION})
    with pytest.raises(ValueError, match="property 'T'"):
        client.send_batch(queue, [b"x", _late_fraction()])
    assert emu.messages(queue) == []
    client.send(queue, b"w", properties={"T": WHOLE, "S": FRACTION.isoformat()})
    client.send_batch(queue, [peeklock.OutgoingMessage(b"b", properties={"T": WHOLE})])
    a, b = (client.receive_and_delete(queue, timeout=5) for _ in range(2))
    assert a.properties == {"T": WHOLE, "S": "2026-01-02T03:04:05.250000+00:00"}
    assert b.properties == {"T": WHOLE}


def _late_fraction():
    """An OutgoingMessage whose datetime got its fraction after it was made (checked again
    when it is built)."""
    m = peeklock.OutgoingMessage(b"y", properties={"T": WHOLE})
    m.properties["T"] = FRACTION
    return m


def test_via_partition_key_is_sent_and_read_back(client, emu, queue):
    client.send(queue, b"v", via_partition_key="vpk-1", partition_key="pk-1")
    client.send(queue, peeklock.OutgoingMessage(b"o", via_partition_key="vpk-2"))
    a, b = (client.receive_and_delete(queue, timeout=5) for _ in range(2))
    assert (a.via_partition_key, a.partition_key, b.via_partition_key) == ("vpk-1", "pk-1", "vpk-2")
    from peeklock.tools import message_to_record, record_to_outgoing, to_outgoing

    assert to_outgoing(b).via_partition_key == "vpk-2"
    assert record_to_outgoing(message_to_record(b)).via_partition_key == "vpk-2"
    with pytest.raises(TypeError):
        client.send(queue, b"v", via_partition_key=5)


def test_every_broker_field_of_the_core_is_sent_and_read_back(client, emu, queue):
    # Message's getters are made from the core's field table: each reads its own field
    from peeklock.client import _BROKER_FIELDS

    sent = {arg: f"v-{arg}" for arg in _BROKER_FIELDS}
    sent["partition_key"] = sent["session_id"]  # the service refuses them apart
    client.send(queue, b"f", **sent)  # type: ignore[arg-type]
    m = client.receive_and_delete(queue, timeout=5)
    assert m is not None and {arg: getattr(m, arg) for arg in _BROKER_FIELDS} == sent
    client.send(queue, b"none")
    m = client.receive_and_delete(queue, timeout=5)
    assert m is not None and all(getattr(m, arg) is None for arg in _BROKER_FIELDS if arg != "message_id")


def test_error_code_names_match_the_c_core():
    from peeklock import _core

    names = [n for n in vars(errors) if n.startswith("PL_")]
    assert len(names) == 21
    for n in names:
        assert getattr(errors, n) == getattr(_core, n), n
        assert errors.CODE_NAMES[getattr(errors, n)] == n


def test_cli_keeps_content_types_and_refuses_fractions(emu, make_queue, tmp_path):
    q = make_queue()
    cs = emu.connection_string
    r = cli(cs, "send", q, "x", "-p", "T:datetime=2026-01-02T03:04:05.25Z")
    assert r.returncode == 2 and "DateTime keeps whole seconds" in r.stderr and "Traceback" not in r.stderr
    recs = [
        {"body": "a", "content_type": "application/json"},
        {"body": "b"},
        {
            "body": "c",
            "content_type": "text/csv",
            "properties": {"T": {"type": "datetime", "value": "2026-01-02T03:04:05Z"}},
        },
    ]
    f = tmp_path / "in.ndjson"
    f.write_text("".join(json.dumps(x) + "\n" for x in recs))
    r = cli(cs, "send", q, "--from", str(f))
    assert r.returncode == 0, r.stderr
    with peeklock.Client.from_connection_string(cs) as c:
        got = [c.receive_and_delete(q, timeout=5) for _ in recs]
    assert [(m.body, m.content_type) for m in got] == [
        (b"a", "application/json"),
        (b"b", "application/octet-stream"),
        (b"c", "text/csv"),
    ]
    assert got[2].properties == {"T": WHOLE}
    recs[2]["properties"]["T"]["value"] = "2026-01-02T03:04:05.25Z"
    f.write_text("".join(json.dumps(x) + "\n" for x in recs))
    r = cli(cs, "send", q, "--from", str(f))
    assert r.returncode == 2 and "line 3" in r.stderr and "DateTime keeps whole seconds" in r.stderr
    assert emu.messages(q) == []  # checked before the first send
