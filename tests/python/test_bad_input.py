"""Bad input: clear errors naming the argument; no secret in any message or repr."""

import os
import sys
import threading
import time

import pytest

import peeklock
from peeklock import _core
from peeklock.client import _BROKER_FIELDS


@pytest.mark.parametrize(
    "call, exc, word",
    [
        (lambda c: c.send(42, b"x"), TypeError, "entity"),
        (lambda c: c.send("", b"x"), ValueError, "entity"),
        (lambda c: c.send("a//b", b"x"), ValueError, "entity"),
        (lambda c: c.send("q\n", b"x"), ValueError, "entity"),
        (lambda c: c.send("q", 42), TypeError, "body"),
        (lambda c: c.send("q", b"x", properties=[1]), TypeError, "properties"),
        (lambda c: c.send("q", b"x", properties={"a": [1]}), TypeError, "property 'a'"),
        # a NUL would cut a name or value short in C: refused, never sent shortened
        (lambda c: c.send("q", b"x", properties={"P": "a\x00b"}), ValueError, "property 'P'"),
        (lambda c: c.send("q", b"x", properties={"Q\x00R": "v"}), ValueError, "property name"),
        (lambda c: c.send("q", peeklock.OutgoingMessage(b"x", properties={"P": "a\x00b"})), ValueError, "property 'P'"),
        (lambda c: c.send("q", b"x", label="a\x00b"), ValueError, "label"),
        (lambda c: c.send("q", b"x", message_id=5), TypeError, "message_id"),
        (lambda c: c.send("q", b"x", force_persistence="yes"), TypeError, "force_persistence"),
        (lambda c: c.send("q", b"x", time_to_live=-1), ValueError, "time_to_live"),
        (lambda c: c.send("q", b"x", bogus=1), TypeError, "bogus"),
        (lambda c: c.send_batch("q", b"abc"), TypeError, "messages"),
        (lambda c: c.send_batch("q", []), ValueError, "messages"),
        (lambda c: c.peek_lock("q", timeout="5"), TypeError, "timeout"),
        (lambda c: c.peek_lock("q", timeout=301), ValueError, "timeout"),
        (lambda c: c.peek_lock("q", timeout=-1), ValueError, "timeout"),
        (lambda c: c.peek_lock("q", max_renew=0), ValueError, "max_renew"),
        (lambda c: c.receive("q", max_messages="3"), TypeError, "max_messages"),
        (lambda c: c.process("q", None), TypeError, "handler"),
        (lambda c: c.process("q", print, concurrency=0), ValueError, "concurrency"),
        (lambda c: c.process("q", print, poll_timeout=301), ValueError, "poll_timeout"),
    ],
)
def test_bad_arguments_name_the_argument(client, call, exc, word):
    with pytest.raises(exc) as ei:
        call(client)
    assert word in str(ei.value)


def test_an_empty_property_name_is_the_core_s_to_refuse(client, queue):
    # the same words whether the send takes the keywords or an OutgoingMessage
    for call in (
        lambda: client.send(queue, b"x", properties={"": 1}),
        lambda: client.send(queue, peeklock.OutgoingMessage(b"x", properties={"": 1})),
    ):
        with pytest.raises(peeklock.InvalidArgument) as ei:
            call()
        assert str(ei.value) == "property name: must be a non-empty string"


def test_c_core_rejects_with_invalid_argument(client, queue):
    # a property name that is not an HTTP token is refused by the C core
    with pytest.raises(peeklock.InvalidArgument) as ei:
        client.send(queue, b"x", properties={"bad name": 1})
    assert isinstance(ei.value, ValueError)
    assert ei.value.code == -1


# The rules on values are the C core's (docs/c-api.md, "Argument values"): the package
# checks types, and the core's refusal comes back as InvalidArgument with its message.
@pytest.mark.parametrize(
    "call, word",
    [
        (lambda c: c.send("q/messages", b"x"), "'messages'"),
        (lambda c: c.peek_lock("t/subscriptions/s/Messages", timeout=0), "'messages'"),
        (lambda c: c.send("q" * 1025, b"x"), "1024"),
        (lambda c: c.receive_and_delete("a/../b", timeout=0), "'..'"),
        (lambda c: c.send("q", b"x", time_to_live=0), "time_to_live"),
        (lambda c: c.send("q", b"x", time_to_live=float("nan")), "time_to_live"),
        (lambda c: c.send("q", peeklock.OutgoingMessage(b"x", time_to_live=0)), "time_to_live"),
        # the second a scheduled time falls in, floored by the core as Lua's: -0.5 is 1969
        (lambda c: c.send("q", b"x", scheduled_enqueue_time=-0.5), "scheduled_enqueue_time: must be between 1970"),
        (lambda c: c.send("q", b"x", scheduled_enqueue_time=253402300800), "scheduled_enqueue_time"),
        (lambda c: c.send("q", b"x", scheduled_enqueue_time=float("nan")), "scheduled_enqueue_time"),
        (lambda c: c.send("q", b"x", scheduled_enqueue_time=2**1100), "scheduled_enqueue_time"),
        (lambda c: c.peek_lock("q", timeout=300.5), "timeout"),
        (lambda c: c.peek_lock("q", timeout=-0.5), "timeout"),
        (lambda c: c.peek_lock("q", timeout=float("inf")), "timeout"),
        (lambda c: c.peek_lock("q", timeout=2**80), "timeout"),
    ],
)
def test_the_core_refuses_values_with_its_message(client, call, word):
    with pytest.raises(peeklock.InvalidArgument) as ei:
        call(client)
    assert ei.value.code == peeklock.errors.PL_EINVAL and word in str(ei.value)


def test_a_scheduled_time_is_the_second_it_falls_in(emu, client, queue):
    # 0.5 is in the first second of 1970: taken, and due at once
    client.send(queue, b"x", scheduled_enqueue_time=0.5)
    msg = client.peek_lock(queue, timeout=5)
    assert msg is not None and msg.body == b"x"
    msg.complete()


def test_a_fraction_of_a_second_is_a_whole_second_long_poll(emu, client, queue):
    """A receive timeout in seconds is the core's whole seconds, a fraction rounded up
    (pl_timeout_seconds): 0.5 s is a 1 s long poll, which holds the request until a
    message arrives (a 0 s poll would answer at once, empty)."""
    from conftest import wait_for

    t0 = time.monotonic()
    assert client.receive_and_delete(queue, timeout=0.5) is None
    assert time.monotonic() - t0 >= 0.95  # the emulator held it for its whole second
    got = []
    before = emu.state()["counters"].get("requests.peek_lock", 0)
    poll = threading.Thread(target=lambda: got.append(client.peek_lock(queue, timeout=0.5)))
    poll.start()
    wait_for(lambda: emu.state()["counters"].get("requests.peek_lock", 0) > before)  # the poll is waiting
    client.send(queue, b"during the poll")
    poll.join(10)
    assert got and got[0] is not None and got[0].body == b"during the poll"
    got[0].complete()
    # a processor's poll_timeout is the same rule, refused under its own name
    assert peeklock.Processor(client, queue, print, poll_timeout=0.5).poll_timeout == 1
    with pytest.raises(peeklock.InvalidArgument, match="^poll_timeout: must be 0..300 seconds$"):
        peeklock.Processor(client, queue, print, poll_timeout=300.5)


_MAX_RENEW = "max_renew: must be a positive number of seconds, at most 1000000000"


@pytest.mark.parametrize("value", [0, -1, 0.0, 1e9 + 1, 2**1100, float("nan"), float("inf")])
def test_max_renew_is_the_core_s_rule_everywhere_it_is_taken(emu, client, queue, value):
    # pl_max_renew_ms: the same words from every call that takes a max_renew, before
    # anything is received (so no message is locked by a call that then fails)
    client.send(queue, b"kept")
    h = client.peek_lock(queue, timeout=5).lock_handle()
    calls = [
        lambda: client.attach(h, max_renew=value),
        lambda: peeklock.Client(emu.endpoint, max_renew=value),
        lambda: peeklock.Processor(client, queue, print, max_renew=value),
        lambda: client.peek_lock(queue, timeout=0, max_renew=value),
        lambda: client.lock(queue, timeout=0, max_renew=value).__enter__(),
        lambda: list(client.receive(queue, timeout=0, max_renew=value)),
    ]
    for call in calls:
        with pytest.raises(peeklock.InvalidArgument) as ei:
            call()
        assert str(ei.value) == _MAX_RENEW and ei.value.code == peeklock.errors.PL_EINVAL
    with client.attach(h, max_renew=1e9) as msg:  # the largest cap is taken
        assert msg.state == "held"


def test_max_renew_types_stay_the_binding_s(client, queue):
    with pytest.raises(TypeError, match="max_renew"):
        client.peek_lock(queue, timeout=0, max_renew="5")


@pytest.mark.parametrize("field", sorted(_BROKER_FIELDS))
def test_an_empty_broker_string_is_refused_by_the_core(client, queue, field):
    # the service answers 400 to an empty MessageId; every field is left out by None
    want = f"{field}: must not be empty (leave it unset instead)"
    for call in (
        lambda: client.send(queue, b"x", **{field: ""}),
        lambda: client.send(queue, peeklock.OutgoingMessage(b"x", **{field: ""})),
        lambda: client.send_batch(queue, [b"a", peeklock.OutgoingMessage(b"x", **{field: ""})]),
    ):
        with pytest.raises(peeklock.InvalidArgument) as ei:
            call()
        assert str(ei.value) == want
    assert client.peek_lock(queue, timeout=0) is None  # nothing was sent


def test_a_long_partition_key_is_refused_by_the_core(client, queue):
    with pytest.raises(peeklock.InvalidArgument, match="^partition_key: must be at most 128 characters$"):
        client.send(queue, b"x", partition_key="p" * 129)
    client.send(queue, b"x", message_id="\u00e9" * 128, partition_key="p" * 128)  # characters, not bytes
    assert client.peek_lock(queue, timeout=5).complete() is None


def test_a_processor_refuses_an_entity_the_core_refuses_before_it_runs(client):
    # checked when the processor is made, not by its first receive in the loop
    for entity in ("q/messages", "q" * 1025):
        with pytest.raises(peeklock.InvalidArgument, match="entity"):
            peeklock.Processor(client, entity, print)


def test_a_long_entity_name_within_the_core_limit_is_taken(client):
    # 1024 characters pass the checks (the emulator then answers it does not exist)
    with pytest.raises(peeklock.EntityNotFoundError):
        client.send("q" * 1024, b"x")


def test_client_option_ranges_are_the_core_s(emu):
    with pytest.raises(peeklock.InvalidArgument, match="max_retries"):
        peeklock.Client(emu.endpoint, max_retries=101)
    with pytest.raises(peeklock.InvalidArgument, match="pool_size"):
        peeklock.Client(emu.endpoint, pool_size=1025)
    with pytest.raises(TypeError, match="max_retries"):
        peeklock.Client(emu.endpoint, max_retries="3")


def test_bad_client_arguments(emu):
    with pytest.raises(TypeError, match="endpoint"):
        peeklock.Client()
    with pytest.raises(TypeError, match="connection_string"):
        peeklock.Client.from_connection_string(None)
    with pytest.raises(ValueError, match="key_name"):
        peeklock.Client(emu.endpoint, key="k")
    with pytest.raises(ValueError, match="request_timeout"):
        peeklock.Client(emu.endpoint, request_timeout=0)
    with pytest.raises(TypeError, match="token_provider"):
        peeklock.Client(emu.endpoint, token_provider="abc")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"endpoint": ""}, "endpoint: must look like sb://host[:port]/"),
        ({"key_name": "", "key": "v"}, "key_name: must not be empty"),
        ({"key_name": "k", "key": ""}, "key: must not be empty"),
        ({"key_name": "k", "key": "v", "ca_file": ""}, "ca_file: must not be empty (NULL: the default CA bundle)"),
        ({"key": "v"}, "key_name: key_name and key go together"),
        ({"max_retries": 101}, "max_retries: must be -1..100"),
        ({"pool_size": 1025}, "pool_size: must be 0..1024"),
    ],
)
def test_client_string_options_are_the_core_s_to_refuse(emu, kwargs, message):
    # the package checks their types; empty values are the core's (pl_client_new)
    kwargs.setdefault("endpoint", emu.endpoint)
    with pytest.raises(peeklock.InvalidArgument) as ei:
        peeklock.Client(**kwargs)
    assert str(ei.value) == message


def test_bad_connection_string_never_echoes_the_key():
    secret = "s3cr3t-KEY-value"
    for cs in [
        f"Endpoint=;SharedAccessKeyName=n;SharedAccessKey={secret}",
        f"SharedAccessKeyName=n;SharedAccessKey={secret}",
        f"Endpoint=sb://x/;SharedAccessKeyName=n;SharedAccessKey={secret};Bogus",
    ]:
        with pytest.raises(peeklock.Error) as ei:
            peeklock.Client.from_connection_string(cs)
        assert secret not in str(ei.value) and secret not in repr(ei.value)
        assert isinstance(ei.value, peeklock.InvalidArgument)


def test_no_secret_in_reprs_and_errors(emu, client, queue):
    client.send(queue, b"x")
    msg = client.peek_lock(queue, timeout=5)
    token = peeklock.client._core.pl_message_lock_token(msg._h)
    assert token and token not in repr(msg) and token not in msg._repr_html_()
    msg.complete()
    with pytest.raises(peeklock.StateError) as ei:
        msg.abandon()
    assert token not in str(ei.value) and token not in repr(ei.value)
    assert emu.key not in repr(client)
    bad = peeklock.Client(emu.endpoint, key_name="RootManageSharedAccessKey", key="wrong-k3y")
    with pytest.raises(peeklock.AuthError) as ei:
        bad.peek_lock(queue, timeout=0)
    text = str(ei.value) + repr(ei.value)
    assert "wrong-k3y" not in text and "sig=" not in text.replace("sig=<redacted>", "")


def test_errors_scrub_anything_secret_looking():
    e = peeklock.Error("x sig=abcdEF%2B SharedAccessKey=zzz 01234567-89ab-cdef-0123-456789abcdef", status=401, code=-3)
    assert "abcdEF" not in str(e) and "zzz" not in str(e) and "0123-456789abcdef" not in str(e)
    assert e.status == 401 and e.code == -3 and e.code_name == "PL_EAUTH"


def test_errors_scrub_by_the_core_s_list():
    # one list of secret forms, the core's (pl_redact): Python keeps none of its own
    text = "SharedSecretValue=v1; Bearer abcdefgh12 SharedAccessSignature sr=a&sig=b;"
    assert str(peeklock.Error(text, code=-3)) == _core.pl_redact(text)
    assert (
        str(peeklock.Error(text, code=-3))
        == "SharedSecretValue=<redacted>; Bearer <redacted> SharedAccessSignature <redacted>;"
    )
    # text C cannot take as it is (a NUL, a lone surrogate) is scrubbed all the same
    e = peeklock.Error("a\x00sig=abc \udcff SharedAccessKey=zzz", code=-3)
    assert str(e) == "a\x00sig=<redacted> \\udcff SharedAccessKey=<redacted>"


def test_errors_scrub_quoted_spaced_and_unicode_spaced_forms():
    # forms the core's own connection string parser accepts, and \s after Bearer
    cases = {
        'SharedAccessKey="abc+def=";EntityPath=q': 'SharedAccessKey="<redacted>";EntityPath=q',
        "sig='xyz' x": "sig='<redacted>' x",
        "x; SharedAccessKey = abc ;EntityPath=q": "x; SharedAccessKey = <redacted> ;EntityPath=q",
        'sharedsecretvalue="v"': 'sharedsecretvalue="<redacted>"',
        "Bearer\u00a0abcdefgh12 x": "Bearer\u00a0<redacted> x",
        "Bearer\u3000abcdefgh12": "Bearer\u3000<redacted>",
    }
    for text, want in cases.items():
        assert str(peeklock.Error(text, code=-3)) == want


def test_errors_keep_a_tracking_id_and_scrub_other_guids():
    tid = "TrackingId:fc76434b-a479-46d5-9103-25654dbf3899_G0"
    text = f"Conflict. {tid} lock 0e80aa4d-a5d1-4a99-b09e-d118f8c5972c"
    assert str(peeklock.Error(text, code=-3)) == f"Conflict. {tid} lock <guid>"


def test_errors_withhold_a_message_when_redaction_is_missing(monkeypatch):
    # a source tree without the compiled core: nothing unscrubbed is shown
    text = "x sig=abcdEF SharedAccessKey=zzz"
    monkeypatch.delattr(_core, "pl_redact")
    e = peeklock.Error(text, code=-3)
    assert str(e) == e.message == "(message withheld: redaction unavailable)"
    monkeypatch.undo()
    monkeypatch.delattr(peeklock, "_core")
    monkeypatch.setitem(sys.modules, "peeklock._core", None)  # import fails as when it was never built
    assert peeklock.errors.scrub(text) == "(message withheld: redaction unavailable)"


def test_core_redact_answers_none_rather_than_raise():
    # called while an error is being made: a text it cannot take is no string, not another error
    for bad in (None, 42, b"sig=abc", "a\x00sig=abc", "lone \udcff surrogate"):
        assert _core.pl_redact(bad) is None
    assert _core.pl_redact("sig=abc") == "sig=<redacted>"


def test_exception_hierarchy():
    for name in [
        "AuthError",
        "LockLostError",
        "EntityNotFoundError",
        "MessageTooLargeError",
        "ThrottledError",
        "ServerError",
        "TimeoutError",
        "ConnectionError",
        "InvalidArgument",
    ]:
        cls = getattr(peeklock, name)
        assert issubclass(cls, peeklock.Error)
        e = cls("m", status=500, code=-8)
        assert e.status == 500 and e.code == -8
    assert issubclass(peeklock.TimeoutError, TimeoutError)
    assert issubclass(peeklock.InvalidArgument, ValueError)


def test_durations_under_a_millisecond_round_up_not_to_the_default(emu, queue, monkeypatch):
    """0 ms means "the default" to the C core, so a positive duration under 1 ms
    is passed as 1 ms (rounded up), never truncated to 0."""
    from peeklock import client as client_mod

    core = client_mod._core
    seen = {}

    def spy(name):
        real = getattr(core, name)

        def wrapper(*args, **kwargs):
            seen[name] = args
            seen.update({f"{name}.{k}": v for k, v in kwargs.items()})
            return real(*args, **kwargs)

        monkeypatch.setattr(core, name, wrapper)

    for name in ("pl_client_new", "pl_renewer_new", "pl_renewer_hold"):
        spy(name)
    c = peeklock.Client.from_connection_string(
        emu.connection_string, connect_timeout=0.0004, request_timeout=0.0002, max_renew=0.0009
    )
    try:
        assert (seen["pl_client_new.connect_timeout_ms"], seen["pl_client_new.request_timeout_ms"]) == (1, 1)
        c.close()
        c = peeklock.Client.from_connection_string(emu.connection_string)
        c.send(queue, b"x")
        msg = c.peek_lock(queue, timeout=1, max_renew=0.0001)
        with msg:
            assert seen["pl_renewer_new.default_max_renew_ms"] == 300000  # the client's default cap
            assert seen["pl_renewer_hold"][2] == 1  # this message's cap: 1 ms, not 300 s
        c.close()
        c = peeklock.Client.from_connection_string(emu.connection_string, max_renew=0.0009)
        c.send(queue, b"y")
        with c.peek_lock(queue, timeout=1):
            assert seen["pl_renewer_new.default_max_renew_ms"] == 1
            assert seen["pl_renewer_hold"][2] == 1
        for value, ms in ((0.0015, 2), (0.3, 300), (2.5, 2500)):  # and exact values stay exact
            assert client_mod._ms(value) == ms
    finally:
        c.close()


def test_a_sub_millisecond_request_timeout_is_short_not_the_default(emu, queue):
    """request_timeout=0.0005 times a delayed request out; read as 0 (the 30 s
    default) it would wait for the 2 s delay and succeed."""
    emu.fault(operation="send", delay_ms=2000, count=1)
    with peeklock.Client.from_connection_string(emu.connection_string, request_timeout=0.0005, max_retries=0) as c:
        with pytest.raises(peeklock.Error):
            c.send(queue, b"x")


# ---- limits: TLS, the CA file, file descriptors -------------------------------------


@pytest.fixture
def tls_server(tmp_path):
    """A TLS server on loopback with a self-signed certificate (made by the openssl
    command): every handshake against it fails verification."""
    import shutil
    import ssl
    import subprocess
    import sys

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "faults"))
    from proxy import loopback_server

    if not shutil.which("openssl"):
        pytest.skip("openssl command not installed")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(cert), str(key))
    accepted = []

    def handshake(c):
        accepted.append(1)
        try:
            ctx.wrap_socket(c, server_side=True).close()
        except (OSError, ssl.SSLError):
            c.close()

    lsock = loopback_server(handshake)
    yield f"https://127.0.0.1:{lsock.getsockname()[1]}", accepted
    lsock.close()


def test_tls_failure_says_it_is_tls_and_which_check_failed(tls_server):
    endpoint, accepted = tls_server
    c = peeklock.Client(endpoint, key_name="k", key="v", max_retries=3)
    with pytest.raises(peeklock.ConnectionError) as ei:
        c.send("q", b"x")
    text = str(ei.value)
    assert "TLS" in text and "certificate" in text, text  # not a bare "connection failed"
    assert "self-signed" in text or "self signed" in text, text
    assert ei.value.retryable is False
    assert c.stats()["requests"] == 1 and len(accepted) == 1  # not retried: it cannot pass later
    c.close()


def test_missing_ca_file_is_an_argument_error_not_retried(tls_server):
    endpoint, _ = tls_server
    c = peeklock.Client(endpoint, key_name="k", key="v", ca_file="/nonexistent/ca.pem")
    with pytest.raises(peeklock.InvalidArgument) as ei:
        c.send("q", b"x")
    assert "ca_file" in str(ei.value) and ei.value.retryable is False
    assert c.stats()["retries"] == 0
    c.close()


def test_out_of_file_descriptors_says_so(emu, queue):
    # in a child process: its descriptor limit is lowered until no connection can open
    import subprocess
    import sys

    code = f"""
import resource, peeklock
warm = peeklock.Client.from_connection_string({emu.connection_string!r})
warm.send({queue!r}, b"warm")       # the library is loaded (its pooled connection stays open)
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
held = []
resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))
try:
    while True:
        held.append(open("/dev/null"))
except OSError:
    pass
c = peeklock.Client({emu.endpoint!r}, key_name={emu.key_name!r}, key={emu.key!r}, max_retries=0)
try:
    c.send({queue!r}, b"x")
    print("SENT")
except peeklock.Error as e:
    print(type(e).__name__, e)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "file descriptors" in out.stdout, (out.stdout, out.stderr)


# Values the core refuses are refused by it alone: the package keeps no copy of the rule,
# and the message is the core's (a Python copy said "messages must not be empty", etc.).
@pytest.mark.parametrize(
    "call, message",
    [
        (lambda c: c.send_batch("q", []), "messages: must not be empty"),
        (lambda c: c.send_batch("q", iter(())), "messages: must not be empty"),
        (lambda c: c.send("q", b"x", properties={"F": float("inf")}), "property 'F': must be a finite number"),
        (
            lambda c: c.send("q", peeklock.OutgoingMessage(b"x", properties={"F": float("nan")})),
            "property 'F': must be a finite number",
        ),
        (lambda c: peeklock.sas_token("", "k", "v"), "uri: must be a non-empty string"),
        (lambda c: peeklock.sas_token("sb://ns/q", "", "v"), "key_name: must be a non-empty string"),
        (lambda c: peeklock.sas_token("sb://ns/q", "k", ""), "key: must be a non-empty string"),
        (lambda c: peeklock.parse_connection_string(""), "connection string: Endpoint is missing"),
        (lambda c: peeklock.Client.from_connection_string(""), "connection string: Endpoint is missing"),
    ],
)
def test_values_the_core_refuses_come_with_its_message(client, call, message):
    with pytest.raises(peeklock.InvalidArgument) as ei:
        call(client)
    assert ei.value.code == peeklock.errors.PL_EINVAL and str(ei.value) == message


def test_the_aio_client_takes_the_core_s_refusals(emu):
    import asyncio

    import peeklock.aio

    with pytest.raises(peeklock.InvalidArgument, match="^connection string: Endpoint is missing$"):
        peeklock.aio.Client.from_connection_string("")

    async def main() -> None:
        c = peeklock.aio.Client.from_connection_string(emu.connection_string)
        try:
            with pytest.raises(peeklock.InvalidArgument, match="^messages: must not be empty$"):
                await c.send_batch("q", [])
        finally:
            await c.aclose()

    asyncio.run(main())


def test_a_typed_float_property_is_the_core_s_to_refuse():
    from peeklock.tools import parse_typed

    assert parse_typed("F", "float", "1.5") == 1.5
    f = parse_typed("F", "float", "inf")  # refused by the core when sent
    with pytest.raises(peeklock.InvalidArgument, match="^property 'F': must be a finite number$"):
        peeklock.OutgoingMessage(b"x", properties={"F": f})._build()
