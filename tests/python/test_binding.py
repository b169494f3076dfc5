"""The SWIG layer itself (peeklock._core): ownership, parents kept alive,
output pointers as return values, the error bridge, and a renewer that a
GIL-holding handler cannot starve."""

import dataclasses
import gc
import time

import pytest

import peeklock
from peeklock import _core
from conftest import completed


def _client(emu):
    peeklock.Client  # registers the exception factory
    return _core.pl_client_new(connection_string=emu.connection_string)


def test_the_default_max_renew_is_the_core_s():
    # one default cap (PL_DEFAULT_MAX_RENEW_MS), in seconds in every call that takes max_renew
    import inspect

    import peeklock.aio

    assert _core.PL_DEFAULT_MAX_RENEW_MS == 300000
    for f in (
        peeklock.Client.__init__,
        peeklock.Client.from_connection_string,
        peeklock.aio.Client.__init__,
        peeklock.aio.Client.from_connection_string,
    ):
        assert inspect.signature(f).parameters["max_renew"].default == 300.0, f


def test_the_bindings_defaults_are_the_core_s():
    # each default a Python signature shows is read from peeklock.h's PL_DEFAULT_*
    import inspect

    import peeklock.aio
    import peeklock.processor
    from peeklock.cli import build_parser

    def default(f, name):
        return inspect.signature(f).parameters[name].default

    clients = (peeklock.Client, peeklock.aio.Client)
    for cls in clients:
        for f in (cls.__init__, cls.from_connection_string):
            for name in ("connect_timeout", "request_timeout", "max_retries"):
                assert default(f, name) is None, (f, name)  # None: the core's
    for f in (
        peeklock.Client.peek_lock,
        peeklock.Client.lock,
        peeklock.Client.receive_and_delete,
        peeklock.Client.receive,
        peeklock.aio.Client.peek_lock,
        peeklock.aio.Client.receive_and_delete,
        peeklock.aio.Client.messages,
    ):
        assert default(f, "timeout") == _core.PL_DEFAULT_RECEIVE_TIMEOUT_S, f
    for f in (peeklock.Client.process, peeklock.aio.Client.process, peeklock.processor.Processor.__init__):
        assert default(f, "poll_timeout") == _core.PL_DEFAULT_POLL_TIMEOUT_S, f
        assert default(f, "max_wait") == _core.PL_DEFAULT_MAX_WAIT_S, f
    token = build_parser().parse_args(["token", "https://ns.example/q"])
    assert token.expiry == _core.PL_DEFAULT_TOKEN_LIFETIME_S


def test_client_s_effective_options_are_the_core_s(emu):
    # left None, the options are what pl_client_options_init leaves them: the core's
    c = peeklock.Client.from_connection_string(emu.connection_string)
    assert _core.pl_client_connect_timeout_ms(c._h) == _core.PL_DEFAULT_CONNECT_TIMEOUT_MS
    assert _core.pl_client_request_timeout_ms(c._h) == _core.PL_DEFAULT_REQUEST_TIMEOUT_MS
    given = peeklock.Client.from_connection_string(emu.connection_string, connect_timeout=2.5, request_timeout=7)
    assert _core.pl_client_connect_timeout_ms(given._h) == 2500
    assert _core.pl_client_request_timeout_ms(given._h) == 7000
    with pytest.raises(ValueError):
        peeklock.Client.from_connection_string(emu.connection_string, connect_timeout=0)
    with pytest.raises(TypeError):
        peeklock.Client.from_connection_string(emu.connection_string, max_retries=1.5)  # type: ignore[arg-type]
    c.close()
    given.close()


def test_no_renewer_stats_are_the_core_s_zeros(emu):
    # pl_renewer_stats_get(NULL): the same fields as a renewer's, nothing counted
    zeros = _core.pl_renewer_stats_get(None)
    assert set(zeros) >= {"held", "renewals", "lost", "slack_buckets", "state_bytes"}
    assert all(v == 0 for k, v in zeros.items() if k != "slack_buckets")
    n = _core.PL_SLACK_BUCKETS  # the header's count sizes both bindings' lists
    assert n > 0 and list(zeros["slack_buckets"]) == [0] * n
    c = peeklock.Client.from_connection_string(emu.connection_string)
    assert c.stats()["renewer"] == dict(zeros, slack_buckets=[0] * n)
    c.close()


def test_message_outlives_its_client_object(emu, queue):
    c = _client(emu)
    out = _core.pl_outgoing_new(b"abc\x00def")
    _core.pl_outgoing_add_int(out, "n", 7)
    assert _core.pl_send(c, queue, out) is None
    m = _core.pl_peek_lock(c, queue, 5)
    assert isinstance(m, _core.pl_message)
    r = _core.pl_renewer_new(c)
    del c
    gc.collect()
    # the message and the renewer hold the C client: both still work
    assert _core.pl_message_body(m) == b"abc\x00def"
    assert _core.pl_message_property_int(m, 0) == 7
    _core.pl_renewer_add(r, m, 60000)
    assert _core.pl_renewer_stats_get(r)["held"] == 1
    _core.pl_renewer_close(r, 1)  # unlocks what it held, through the freed-by-Python client
    assert _core.pl_message_lock_state(m) == 3
    del m, r
    gc.collect()
    assert emu.messages(queue)[0]["locked"] is False


def test_empty_receive_returns_none_and_errors_raise(emu, queue):
    c = _client(emu)
    assert _core.pl_peek_lock(c, queue, 0) is None
    with pytest.raises(peeklock.EntityNotFoundError) as ei:
        _core.pl_peek_lock(c, "missing", 0)
    assert ei.value.status == 410
    code, status, retryable, message = _core.pl_py_error_last()
    assert code == -4 and status == 410 and "missing" in message


def test_owned_string_and_bytes_typemaps():
    tok = _core.pl_sas_token("audience", "keyName", "key", 1578099723)
    assert isinstance(tok, str) and tok.endswith("&se=1578099723&skn=keyName")
    with pytest.raises(TypeError, match="body"):
        _core.pl_outgoing_new("text is not bytes")
    assert _core.pl_batch_count(_core.pl_batch_new()) == 0
    req_body = memoryview(b"xyz")
    out = _core.pl_outgoing_new(req_body)  # any buffer
    assert out is not None


def test_a_30s_handler_keeps_its_5s_lock_through_20s_of_gil_holding_busy_loop(client, emu, queue):
    """Issue 4's promise: with a 5 s lock, a handler that runs 30 s keeps its lock (delivery
    count stays 1, never redelivered, then completed once), and the first 20 s of it are a
    pure-Python busy loop. Renewal needs no Python thread and never takes the GIL, so the
    busy loop cannot starve it (a Python-thread renewer would be left to the interpreter's
    switch interval)."""
    client.send(queue, b"busy", message_id="busy")
    other = peeklock.Client.from_connection_string(emu.connection_string)
    try:
        msg = client.peek_lock(queue, timeout=5)
        start = time.monotonic()
        with msg:
            n = 0
            while time.monotonic() - start < 20.0:  # 4 lock durations of pure-Python work
                n += 1
            renewed_in_busy_loop = client.stats()["renewer"]["renewals"]
            while time.monotonic() - start < 30.0:  # 2 more lock durations, checking
                assert other.peek_lock(queue, timeout=0) is None  # nobody else can have it
                [m] = emu.messages(queue)
                assert m["locked"] and m["delivery_count"] == 1
                time.sleep(1.0)
            assert msg.state == "held" and not msg.lock_lost
        assert renewed_in_busy_loop >= 4  # at least one renewal per 5 s lock duration
        assert client.stats()["renewer"]["renewals"] >= 6
        assert completed(emu, queue) == {"busy": 1}
        assert emu.messages(queue) == []
    finally:
        other.close()


def test_c_complete_holds_the_message_handle_while_the_request_runs(client, emu, queue):
    """Message.complete's C method releases the GIL around pl_complete: the handle it
    completes stays alive until then even when another thread drops the Message's _h."""
    import threading
    import weakref
    from conftest import wait_for

    client.send(queue, b"x")
    msg = client.peek_lock(queue, timeout=5)
    handle = weakref.ref(msg._h)
    emu.fault(operation="complete", delay_ms=2000, count=1)
    done = []
    t = threading.Thread(target=lambda: done.append(msg.complete()))
    t.start()
    wait_for(lambda: msg.state == "settling")  # the request is in flight
    del msg._h
    gc.collect()
    assert handle() is not None, "the pl_message was freed under a running complete"
    t.join()
    assert done == [None] and handle() is None
    assert len(completed(emu, queue)) == 1


def test_c_peek_lock_of_a_non_ascii_entity_under_the_debug_allocator(emu):
    """peek_lock's C method takes the entity's UTF-8 with the GIL held: under
    PYTHONMALLOC=debug an allocation without the GIL is a fatal error. (No such
    entity: the call fails in the service, after the C method took the name.)"""
    import os
    import subprocess
    import sys

    code = (
        "import sys, peeklock\n"
        "c = peeklock.Client.from_connection_string(sys.argv[1])\n"
        "for i in range(3):\n"
        "    fresh = ''.join(['missing-', 'é'])   # equal each time, its UTF-8 not made yet\n"
        "    try:\n"
        "        c.peek_lock(fresh, 0)\n"
        "    except peeklock.Error:\n"
        "        print('raised')\n"
    )
    env = dict(os.environ, PYTHONMALLOC="debug")
    r = subprocess.run(
        [sys.executable, "-c", code, emu.connection_string], capture_output=True, text=True, env=env, timeout=120
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split() == ["raised"] * 3


def test_code_names_are_the_cores_list():
    # The core's one code list (pl_code_count/pl_code_at/pl_code_name) is what
    # peeklock.errors.CODE_NAMES must say: a code added in C shows up here.
    codes = [_core.pl_code_at(i) for i in range(_core.pl_code_count())]
    assert peeklock.errors.CODE_NAMES == {c: _core.pl_code_name(c) for c in codes}
    assert _core.pl_code_name(2) is None
    # each code of that list is peeklock.errors.<its C name>, with the C number,
    # exported and typed int for mypy; and the module names no code the core lacks
    errors = peeklock.errors
    for c in codes:
        name = _core.pl_code_name(c)
        assert getattr(errors, name) == getattr(_core, name) == c, name
        assert name in errors.__all__ and errors.__annotations__[name] == "int", name
    assert {n for n in errors.__all__ if n.startswith("PL_")} == set(errors.CODE_NAMES.values())
    assert errors.from_code(_core.PL_ESTATE, message="x").code_name == "PL_ESTATE"
    assert type(errors.from_code(_core.PL_ECANCELED)) is errors.Error  # no class of its own


def test_lock_state_names_and_numbers_are_the_cores():
    # the LOCK_* numbers and Message.state's names come from peeklock.h / pl_lock_state_name
    from peeklock import client as pc

    names = ["none", "held", "settling", "settled", "lost", "unknown"]
    consts = [pc.LOCK_NONE, pc.LOCK_HELD, pc.LOCK_SETTLING, pc.LOCK_SETTLED, pc.LOCK_LOST, pc.LOCK_UNKNOWN]
    assert consts == [
        _core.PL_LOCK_NONE,
        _core.PL_LOCK_HELD,
        _core.PL_LOCK_SETTLING,
        _core.PL_LOCK_SETTLED,
        _core.PL_LOCK_LOST,
        _core.PL_LOCK_UNKNOWN,
    ]
    assert [_core.pl_lock_state_name(st) for st in consts] == names
    assert _core.pl_lock_state_name(pc.LOCK_UNKNOWN + 1) is None
    assert _core.pl_lock_state_name(-1) is None


def test_the_run_s_tallies_are_process_summary_fields():
    # the processors show each tally the core returns under its name (one list:
    # bindings/pl_fields.h): a tally with no summary field would be a stray attribute
    run = _core.pl_run_new(_core.pl_now_mono_ms())
    tallies = _core.pl_run_tallies_get(run)
    assert {"received", "processed", "settled_by_handler", "in_flight"} <= set(tallies)
    assert set(tallies) <= {f.name for f in dataclasses.fields(peeklock.ProcessSummary)}
    assert all(v == 0 for v in tallies.values())


def test_client_and_renewer_from_their_options_fields(emu, queue):
    """pl_client_new and pl_renewer_new take their options structs' fields as keywords:
    a field named is set, the others keep pl_*_options_init's defaults; a keyword that
    names no field, or a value of the wrong type, is a TypeError before any client."""
    peeklock.Client  # registers the exception factory
    c = _core.pl_client_new(connection_string=emu.connection_string)
    assert (_core.pl_client_connect_timeout_ms(c), _core.pl_client_request_timeout_ms(c)) == (10000, 30000)
    c = _core.pl_client_new(
        endpoint=emu.endpoint, sas_token=None, connect_timeout_ms=1234, request_timeout_ms=4321, max_retries=0
    )
    assert (_core.pl_client_connect_timeout_ms(c), _core.pl_client_request_timeout_ms(c)) == (1234, 4321)
    with pytest.raises(peeklock.InvalidArgument, match="not both"):  # the core's own check
        _core.pl_client_new(connection_string=emu.connection_string, endpoint=emu.endpoint)
    for bad, match in (
        ({"nonsense": 1}, "unexpected keyword argument 'nonsense'"),
        ({"endpoint": 5}, "'endpoint' must be str or None, not int"),
        ({"pool_size": "8"}, "'pool_size' must be int, not str"),
    ):
        with pytest.raises(TypeError, match=match):
            _core.pl_client_new(connection_string=emu.connection_string, **bad)
    with pytest.raises(TypeError, match="keyword arguments only"):
        _core.pl_client_new(emu.connection_string)
    c = _client(emu)
    out = _core.pl_outgoing_new(b"x")
    _core.pl_send(c, queue, out)
    m = _core.pl_peek_lock(c, queue, 5)
    r = _core.pl_renewer_new(c, default_max_renew_ms=60000, jitter=0, margin_floor_ms=500)
    _core.pl_renewer_add(r, m, 0)
    assert _core.pl_renewer_stats_get(r)["held"] == 1
    _core.pl_renewer_close(r, 1)
    with pytest.raises(TypeError, match="'jitter' must be a number, not str"):
        _core.pl_renewer_new(c, jitter="0.1")
    with pytest.raises(TypeError, match="takes a pl_client"):
        _core.pl_renewer_new(m)


def test_broker_fields_are_the_core_s_table():
    # the keyword -> BrokerProperties name table is read from the core, and every
    # field in it is a keyword of OutgoingMessage (send's keywords, test_bad_input)
    from peeklock._outgoing import _BROKER_FIELDS

    n = _core.pl_broker_field_count()
    got = {_core.pl_broker_field_arg(i): _core.pl_broker_field_name(i) for i in range(n)}
    assert _BROKER_FIELDS == got and got["reply_to_session_id"] == "ReplyToSessionId"
    assert _core.pl_broker_field_arg(n) is None and _core.pl_broker_field_name(-1) is None
    assert set(got) <= set(peeklock.OutgoingMessage.__slots__)
