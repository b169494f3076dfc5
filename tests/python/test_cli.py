"""The peeklock console script, run as a real subprocess."""

import json
import os
import subprocess
import sys

from conftest import completed

BIN = os.path.join(os.path.dirname(sys.executable), "peeklock")


def run(*args, env_cs=None, input=None):
    env = dict(os.environ)
    env.pop("PEEKLOCK_CONNECTION_STRING", None)
    if env_cs:
        env["PEEKLOCK_CONNECTION_STRING"] = env_cs
    return subprocess.run([BIN, *args], capture_output=True, text=True, env=env, input=input, timeout=60)


def test_help_for_newcomers():
    r = run("--help")
    assert r.returncode == 0
    for word in ("send", "peek", "receive", "dlq", "token", "emulator", "PEEKLOCK_CONNECTION_STRING", "Examples"):
        assert word in r.stdout
    for cmd in ("send", "peek", "receive", "dlq", "token"):
        r = run(cmd, "--help")
        assert r.returncode == 0 and "--connection-string" in r.stdout


def test_no_connection_string_is_explained():
    r = run("send", "q", "x")
    assert r.returncode != 0 and "PEEKLOCK_CONNECTION_STRING" in r.stderr


def test_send_peek_receive_dlq(emu, make_queue):
    q = make_queue(lock_duration=5, max_delivery_count=2)
    cs = emu.connection_string
    r = run("send", q, "hello", "-p", "Priority=High", "-p", "Attempt:int=3", "--message-id", "c1", env_cs=cs)
    assert r.returncode == 0, r.stderr
    r = run("send", q, "--connection-string", cs, "--message-id", "c2", input="from stdin")
    assert r.returncode == 0, r.stderr
    r = run("peek", q, "--json", env_cs=cs)  # lock, show, abandon
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["body"] == "hello" and d["properties"] == {"Priority": "High", "Attempt": 3}
    r = run("peek", q, "--json", env_cs=cs)  # abandoned again -> DLQ
    assert json.loads(r.stdout)["delivery_count"] == 2
    r = run("receive", q, "--json", "-t", "1", env_cs=cs)  # complete what is left
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    assert [x["body"] for x in lines] == ["from stdin"]
    r = run("dlq", q, "--json", "-t", "1", env_cs=cs)
    assert [json.loads(x)["body"] for x in r.stdout.splitlines()] == ["hello"]
    assert emu.entity_state(q)["completed"] == {"c2": 1}


def test_token(emu):
    uri = "https://ns.servicebus.windows.net/orders"
    r = run("token", uri, "--key-name", "keyName", "--key", "key", "--expiry", "60")
    assert r.returncode == 0 and r.stdout.lower().startswith("sharedaccesssignature sr=https%3a%2f%2fns."), r.stdout
    for not_a_url in ("notaurl", "ftp://ns/orders", "https://"):  # signs no string but a resource URI
        r = run("token", not_a_url, "--key-name", "keyName", "--key", "key")
        assert r.returncode == 2 and r.stdout == "" and "resource URI" in r.stderr, (not_a_url, r.stderr)
    # a connection string given in the URI's place: refused without echoing its key
    cs_as_uri = "Endpoint=sb://ns.example/;SharedAccessKeyName=k;SharedAccessKey=SECRETKEY123"
    r = run("token", cs_as_uri, "--key-name", "keyName", "--key", "key")
    assert r.returncode == 2 and "resource URI" in r.stderr and "SECRETKEY123" not in r.stderr, r.stderr
    r = run("token", env_cs=emu.connection_string)
    assert r.returncode == 0 and "skn=RootManageSharedAccessKey" in r.stdout


def test_errors_are_reported_not_traced(emu):
    r = run("send", "no-such-queue", "x", env_cs=emu.connection_string)
    assert r.returncode == 4  # entity not found
    assert "EntityNotFoundError" in r.stderr and "Traceback" not in r.stderr


def test_emulator_subcommand_prints_ready_line():
    p = subprocess.Popen([BIN, "emulator", "--port", "0", "--queue", "x"], stdout=subprocess.PIPE, text=True)
    try:
        line = p.stdout.readline()
        assert line.startswith("peeklock emulator ready: Endpoint=sb://127.0.0.1:")
    finally:
        p.terminate()
        p.wait(10)


BIG = 200_000  # bytes per body: one --json line is far larger than a pipe's buffer (64 KiB)


def _run_across_lock_expiry(emu, *args):
    """Runs the CLI with --json, reading its output line by line. Each line is larger
    than the pipe, so while the CLI is writing the third message it is blocked, holding
    three locks; then the emulator clock moves past the lock duration (5 s), so those
    locks expire and their messages come back while the CLI is still reading."""
    env = dict(os.environ, PEEKLOCK_CONNECTION_STRING=emu.connection_string)
    p = subprocess.Popen([BIN, *args, "--json", "-t", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    import threading

    guard = threading.Timer(60, p.kill)
    guard.start()
    try:
        head = p.stdout.readline() + p.stdout.readline()
        head += p.stdout.read(1)  # the CLI has the third message and is writing it
        emu.advance(6)
        out = p.stdout.read()  # to the end (communicate() would skip buffered bytes)
        err = p.stderr.read()
        p.wait(30)
    finally:
        guard.cancel()
    lines = [json.loads(x) for x in (head + out).decode().splitlines()]
    return p.returncode, lines, err.decode()


def _send_big(emu, q, n):
    import peeklock

    with peeklock.Client.from_connection_string(emu.connection_string) as c:
        for i in range(n):
            c.send(q, f"m{i}:".encode() + b"x" * BIG, message_id=f"m{i}")


def test_peek_across_lock_expiry_shows_each_once_and_leaves_none_locked(emu, make_queue):
    q = make_queue(lock_duration=5, max_delivery_count=10)
    _send_big(emu, q, 6)
    rc, lines, err = _run_across_lock_expiry(emu, "peek", q, "-n", "6")
    assert rc == 0, err
    assert [x["message_id"] for x in lines] == [f"m{i}" for i in range(6)]
    assert all(x["delivery_count"] == 1 for x in lines)
    assert all(x["body"].startswith(x["message_id"] + ":") for x in lines)
    msgs = {m["message_id"]: m for m in emu.messages(q)}
    assert all(m["state"] == "available" for m in msgs.values()), msgs
    # m0..m2 were locked again after their first locks expired; m3..m5 once
    assert {k: m["delivery_count"] for k, m in msgs.items()} == {"m0": 2, "m1": 2, "m2": 2, "m3": 1, "m4": 1, "m5": 1}


def test_dlq_across_lock_expiry_ends_shows_each_once_and_leaves_none_locked(emu, make_queue):
    import peeklock

    q = make_queue(lock_duration=5, max_delivery_count=1)
    _send_big(emu, q, 6)
    with peeklock.Client.from_connection_string(emu.connection_string) as c:
        for _ in range(6):
            c.peek_lock(q, timeout=1).abandon()  # delivery count 1 -> dead-lettered
    before = {m["message_id"]: m["delivery_count"] for m in emu.entity_state(q)["dead_letter"]}
    assert sorted(before) == [f"m{i}" for i in range(6)]
    rc, lines, err = _run_across_lock_expiry(emu, "dlq", q)  # no --count: until empty
    assert rc == 0, err
    assert [x["message_id"] for x in lines] == [f"m{i}" for i in range(6)]
    dead = {m["message_id"]: m for m in emu.entity_state(q)["dead_letter"]}
    assert all(m["state"] == "available" for m in dead.values()), dead
    assert {k: m["delivery_count"] - before[k] for k, m in dead.items()} == {
        "m0": 2,
        "m1": 2,
        "m2": 2,
        "m3": 1,
        "m4": 1,
        "m5": 1,
    }
    assert emu.messages(q) == []


def test_peek_and_dlq_help_say_each_message_is_shown_once():
    for cmd in ("peek", "dlq"):
        r = run(cmd, "--help")
        assert r.returncode == 0 and "once" in r.stdout, r.stdout


def test_emulator_without_aiohttp_names_the_extra():
    # aiohttp is an optional extra: without it the command says what to install
    # (not a raw ModuleNotFoundError traceback).
    code = (
        "import sys; sys.modules['aiohttp'] = None; from peeklock.cli import main; "
        "sys.exit(main(['emulator', '--queue', 'q']))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "pip install 'peeklock[emulator]'" in r.stderr
    assert "Traceback" not in r.stderr


def test_python_m_emulator_without_aiohttp_says_what_to_install_in_one_line():
    # `python3 -m peeklock.emulator` from a source tree or a base install: one line, exit 2
    code = (
        "import runpy, sys; sys.modules['aiohttp'] = None; sys.argv = ['x', '--port', '0', '--queue', 'q']; "
        "runpy.run_module('peeklock.emulator', run_name='__main__', alter_sys=True)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.stderr
    assert r.stderr.splitlines() == [
        "peeklock emulator: needs the aiohttp package, which is not installed: "
        "pip install aiohttp (or pip install 'peeklock[emulator]')"
    ]
    assert r.stdout == ""


# ---- operator tools: safe output, typed properties, exit codes, dead letters, purge, export ----


def _sh(cmd, cs):
    """A shell pipeline, as an operator types it; the exit code is peeklock's own."""
    env = dict(os.environ, PEEKLOCK_CONNECTION_STRING=cs, PEEKLOCK=BIN)
    return subprocess.run(
        ["bash", "-c", cmd + '; exit "${PIPESTATUS[0]}"'], capture_output=True, text=True, env=env, timeout=60
    )


def _send(emu, q, *bodies, **kw):
    import peeklock

    with peeklock.Client.from_connection_string(emu.connection_string) as c:
        for i, b in enumerate(bodies):
            c.send(q, b, message_id=f"m{i}", **kw)


def _states(emu, q):
    return sorted((m["message_id"], m["state"]) for m in emu.messages(q))


def test_receive_into_head_removes_only_what_was_read(emu, make_queue):
    q = make_queue(lock_duration=30)
    _send(emu, q, b"one", b"two", b"three")
    r = _sh(f'"$PEEKLOCK" receive {q} --json | head -1', emu.connection_string)
    assert r.returncode == 0 and json.loads(r.stdout)["body"] == "one", r.stderr
    assert completed(emu, q) == {"m0": 1}
    # the second message was written but never read: released at once, not completed
    assert _states(emu, q) == [("m1", "available"), ("m2", "available")]
    assert "Traceback" not in r.stderr and "Exception ignored" not in r.stderr


def test_receive_delete_into_closed_pipe_writes_the_message_to_stderr(emu, make_queue):
    q = make_queue()
    _send(emu, q, b"\x00\x01 gone from the queue")
    r = _sh(f'"$PEEKLOCK" receive {q} --delete --json -t 1 | true', emu.connection_string)
    assert r.returncode == 1
    rec = json.loads(r.stderr.strip().splitlines()[-1])
    import base64

    assert base64.b64decode(rec["body_base64"]) == b"\x00\x01 gone from the queue"
    assert rec["message_id"] == "m0"


def test_properties_are_strings_unless_typed(emu, make_queue):
    import datetime as dt
    import peeklock

    q = make_queue()
    r = run(
        "send",
        q,
        "x",
        "-p",
        "Zip=01234",
        "-p",
        "Version=1.10",
        "-p",
        "Flag=true",
        "-p",
        "N:int=5",
        "-p",
        "F:float=1.5",
        "-p",
        "B:bool=true",
        "-p",
        "T:datetime=2026-01-02T03:04:05Z",
        env_cs=emu.connection_string,
    )
    assert r.returncode == 0, r.stderr
    with peeklock.Client.from_connection_string(emu.connection_string) as c:
        m = c.receive_and_delete(q, timeout=1)
    assert m.properties == {
        "Zip": "01234",
        "Version": "1.10",
        "Flag": "true",
        "N": 5,
        "F": 1.5,
        "B": True,
        "T": dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc),
    }
    for bad in ("Big:int=123456789012345678901", "N:int=x", "B:bool=yes", "X:blob=1", "=1", "N"):
        r = run("send", q, "x", "-p", bad, env_cs=emu.connection_string)
        assert r.returncode == 2 and "Traceback" not in r.stderr, (bad, r.stderr)
    assert emu.messages(q) == []


def test_binary_body_in_json_is_base64(emu, make_queue):
    import base64

    q = make_queue()
    _send(emu, q, b"\xff\xfe\x00bin", b"caf\xc3\xa9")
    r = run("receive", q, "--json", "-t", "1", env_cs=emu.connection_string)
    a, b = [json.loads(x) for x in r.stdout.splitlines()]
    assert base64.b64decode(a["body_base64"]) == b"\xff\xfe\x00bin" and "body" not in a
    assert b["body"] == "café"


def test_exit_codes_tell_failures_apart(emu, make_queue):
    q = make_queue()
    cs = emu.connection_string
    assert run("receive", q, "-t", "0", env_cs=cs).returncode == 7  # nothing received
    assert run("send", "nope", "x", env_cs=cs).returncode == 4  # not found
    bad = cs.replace("SharedAccessKey=", "SharedAccessKey=wrong")
    assert run("send", q, "x", env_cs=bad).returncode == 3  # auth
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nobody listens
    dead = f"Endpoint=sb://127.0.0.1:{port};SharedAccessKeyName=k;SharedAccessKey=v;UseDevelopmentEmulator=true"
    r = run("send", q, "x", env_cs=dead)
    assert r.returncode == 5 and "Traceback" not in r.stderr  # connection
    assert run("send", q, "x", "--count", "0", env_cs=cs).returncode == 2  # usage
    assert run("token", "u", "--key-name", "k", "--key", "v", "--expiry", "0").returncode == 2


def test_token_expiry_is_sas_token_s_rule_named_by_the_flag():
    # the CLI states no rule of its own: sas_token(lifetime=) decides, the flag is named
    for bad in ("0", "-5"):
        r = run("token", "sb://ns/q", "--key-name", "k", "--key", "v", "--expiry", bad)
        assert r.returncode == 2 and "Traceback" not in r.stderr
        assert r.stderr.strip() == f"peeklock: --expiry must be a positive number of seconds, got {bad}"
    for bad in ("99999999999999999999", "9" * 400):  # past a 64-bit Unix time: no traceback
        r = run("token", "sb://ns/q", "--key-name", "k", "--key", "v", "--expiry", bad)
        assert r.returncode == 2 and "Traceback" not in r.stderr
        assert r.stderr.strip() == (
            f"peeklock: --expiry is too long: the token's expiry must be a 64-bit Unix time, got {bad}"
        )
    r = run("token", "https://ns.example/q", "--key-name", "k", "--key", "v", "--expiry", "60")
    assert r.returncode == 0 and r.stdout.startswith("SharedAccessSignature sr=")


def test_peek_names_a_message_it_moves_to_the_dead_letter_queue(emu, make_queue):
    q = make_queue(max_delivery_count=2)
    _send(emu, q, b"important order")
    r = run("peek", q, env_cs=emu.connection_string)
    assert r.returncode == 0 and "delivery count goes up" in r.stderr
    assert "was on its last delivery" not in r.stderr
    r = run("peek", q, "-q", env_cs=emu.connection_string)
    assert "message #1 was on its last delivery (delivery count 2 of 2)" in r.stderr
    assert [m["message_id"] for m in emu.entity_state(q)["dead_letter"]] == ["m0"]


def _dead_letter(emu, q, n, **props):
    import peeklock

    with peeklock.Client.from_connection_string(emu.connection_string) as c:
        for i in range(n):
            c.send(
                q,
                f"body {i}".encode(),
                message_id=f"d{i}",
                properties={"Kind": "even" if i % 2 == 0 else "odd", **props},
            )
        for _ in range(n):
            c.peek_lock(q, timeout=1).abandon()  # MaxDeliveryCount 1: dead-lettered


def test_dlq_lists_reasons(emu, make_queue):
    q = make_queue(max_delivery_count=1)
    _dead_letter(emu, q, 2)
    r = run("dlq", q, "--json", "-t", "1", env_cs=emu.connection_string)
    rows = [json.loads(x) for x in r.stdout.splitlines()]
    assert [x["dead_letter_reason"] for x in rows] == ["MaxDeliveryCountExceeded"] * 2
    assert all("1 delivery" in x["dead_letter_description"] for x in rows)
    r = run("dlq", q, "-t", "1", env_cs=emu.connection_string)
    assert "reason: MaxDeliveryCountExceeded" in r.stdout


def test_resubmit_with_filter_dry_run_and_resume(emu, make_queue):
    import peeklock

    q = make_queue(max_delivery_count=1)
    other = make_queue()
    cs = emu.connection_string
    _dead_letter(emu, q, 6, Source="batch-7")
    r = run("dlq", "resubmit", q, "--dry-run", "--filter", "Kind=even", env_cs=cs)
    assert r.returncode == 0 and r.stdout.count("would move") == 3, r.stderr
    assert len(emu.entity_state(q)["dead_letter"]) == 6 and emu.messages(q) == []
    # limits refused before anything is read (usage: exit 2)
    for bad, flag in ((["--max", "0"], "--max"), (["--rate", "-1"], "--rate")):
        r = run("dlq", "resubmit", q, *bad, env_cs=cs)
        assert r.returncode == 2 and flag in r.stderr and "Traceback" not in r.stderr, r.stderr
    # stopped after two, then resumed: nothing lost, nothing sent twice
    r = run("dlq", "resubmit", q, "--max", "2", "--json", env_cs=cs)
    assert r.returncode == 0 and [json.loads(x)["action"] for x in r.stdout.splitlines()] == ["moved", "moved"]
    r = run("dlq", "resubmit", q, "--to", other, "--filter", "Kind=odd", env_cs=cs)
    assert r.returncode == 0, r.stderr
    r = run("dlq", "resubmit", q, env_cs=cs)
    assert r.returncode == 0 and "moved 2," in r.stderr
    assert emu.entity_state(q)["dead_letter"] == []
    with peeklock.Client.from_connection_string(cs) as c:
        back = [c.receive_and_delete(q, timeout=0) for _ in range(4)]
        moved = [c.receive_and_delete(other, timeout=0) for _ in range(2)]
        assert c.receive_and_delete(q, timeout=0) is None
        assert c.receive_and_delete(other, timeout=0) is None
    assert sorted(m.message_id for m in back) == ["d0", "d1", "d2", "d4"]
    assert sorted(m.message_id for m in moved) == ["d3", "d5"]
    for m in back + moved:
        assert "DeadLetterReason" not in m.properties and m.properties["Source"] == "batch-7"
        assert m.body == f"body {m.message_id[1:]}".encode()


def test_resubmit_explains_each_possible_duplicate(emu, make_queue):
    q = make_queue(max_delivery_count=1)
    cs = emu.connection_string
    _dead_letter(emu, q, 2)
    emu.fault(operation="complete", status=403)
    r = run("dlq", "resubmit", q, "--json", "-t", "1", env_cs=cs)
    assert r.returncode == 8, r.stderr
    rows = [json.loads(x) for x in r.stdout.splitlines()]
    assert [x["action"] for x in rows] == ["sent, dead letter kept"] * 2
    emu.clear_faults()
    r = run("dlq", "resubmit", q, "-t", "1", env_cs=cs)
    assert r.returncode == 0
    ids = sorted(m["message_id"] for m in emu.messages(q))
    assert ids == ["d0", "d0", "d1", "d1"]  # each duplicate listed by the first run
    assert {x["message_id"] for x in rows} == {"d0", "d1"}


def test_purge_asks_then_deletes(emu, make_queue):
    q = make_queue()
    cs = emu.connection_string
    _send(emu, q, *[b"x"] * 25)
    r = run("purge", q, env_cs=cs)  # no terminal to ask on
    assert r.returncode == 2 and "--yes" in r.stderr and len(emu.messages(q)) == 25
    r = run("purge", q, "--yes", "--concurrency", "0", env_cs=cs)  # tools.purge's rule, named as the flag
    assert r.returncode == 2 and "--concurrency must be a whole number, at least 1" in r.stderr, r.stderr
    r = run("purge", q, "--yes", "--concurrency", "3", env_cs=cs)
    assert r.returncode == 0 and "deleted 25 messages" in r.stdout, r.stderr
    assert emu.messages(q) == []


def test_purge_enqueued_before_keeps_newer_messages(emu, make_queue):
    import datetime as dt

    q = make_queue()
    cs = emu.connection_string
    _send(emu, q, b"old-1", b"old-2")
    emu.advance(3600)
    cut = dt.datetime.fromtimestamp(emu.clock()["now"] - 1800, dt.timezone.utc)
    import peeklock

    with peeklock.Client.from_connection_string(cs) as c:
        c.send(q, b"new", message_id="new")
    r = run("purge", q, "--enqueued-before", cut.isoformat(), "--yes", env_cs=cs)
    assert r.returncode == 0 and "deleted 2 messages" in r.stdout and "kept 1" in r.stdout
    assert _states(emu, q) == [("new", "available")]


def test_export_then_send_from_round_trips_byte_for_byte(emu, make_queue, tmp_path):
    import datetime as dt
    import peeklock

    src, dst = make_queue(), make_queue()
    cs = emu.connection_string
    props = {"S": "01234", "I": -7, "F": 2.5, "B": False, "T": dt.datetime(2026, 3, 4, 5, 6, 7, tzinfo=dt.timezone.utc)}
    bodies = [bytes(range(256)), "naïve ☃".encode(), b""]
    with peeklock.Client.from_connection_string(cs) as c:
        for i, b in enumerate(bodies):
            c.send(
                src,
                b,
                message_id=f"e{i}",
                properties=props,
                label="L",
                correlation_id="C",
                content_type="application/x-test",
                time_to_live=600,
            )
    out = tmp_path / "x.ndjson"
    r = run("export", src, "-o", str(out), "-t", "1", env_cs=cs)
    assert r.returncode == 0, r.stderr
    assert _states(emu, src) == [("e0", "available"), ("e1", "available"), ("e2", "available")]
    r = run("send", dst, "--from", str(out), env_cs=cs)
    assert r.returncode == 0 and "sent 3 messages" in r.stdout, r.stderr
    with peeklock.Client.from_connection_string(cs) as c:
        got = [c.receive_and_delete(dst, timeout=0) for _ in bodies]
    for i, m in enumerate(got):
        assert (m.message_id, m.body, m.properties, m.label, m.correlation_id, m.content_type) == (
            f"e{i}",
            bodies[i],
            props,
            "L",
            "C",
            "application/x-test",
        )
        assert m.time_to_live == 600
    (tmp_path / "bad.ndjson").write_text('{"body_base64": "AA=="}\n{"body_base64": "!!"}\n')
    r = run("send", dst, "--from", str(tmp_path / "bad.ndjson"), env_cs=cs)
    assert r.returncode == 2 and "line 2" in r.stderr
    assert emu.messages(dst) == []  # checked before the first send


def test_ls_lists_entities_with_counts_and_settings(emu, make_queue):
    import peeklock

    q = make_queue(lock_duration=7, max_delivery_count=1)
    emu.create_topic("t-ls")
    emu.create_subscription("t-ls", "s1", lock_duration=9)
    with peeklock.Client.from_connection_string(emu.connection_string) as c:
        for i in range(3):
            c.send(q, b"x")
        c.peek_lock(q, timeout=1).abandon()  # one dead-lettered
        c.send(q, b"later", scheduled_enqueue_time=2_000_000_000)
    r = run("ls", "--json", env_cs=emu.connection_string)
    assert r.returncode == 0, r.stderr
    rows = {x["path"].lower(): x for x in map(json.loads, r.stdout.splitlines())}
    assert rows[q]["kind"] == "queue" and rows[q]["lock_duration"] == 7
    assert rows[q]["max_delivery_count"] == 1
    assert (rows[q]["active"], rows[q]["dead_letter"], rows[q]["scheduled"]) == (2, 1, 1)
    assert rows[q]["message_count"] == 4
    assert rows["t-ls"]["kind"] == "topic"
    assert rows["t-ls/subscriptions/s1"]["lock_duration"] == 9
    r = run("ls", env_cs=emu.connection_string)
    assert q in r.stdout and "t-ls/subscriptions/s1" in r.stdout.lower()


def test_output_is_utf8_whatever_the_locale(emu, make_queue):
    q = make_queue()
    _send(emu, q, "café".encode())
    env = dict(os.environ, PEEKLOCK_CONNECTION_STRING=emu.connection_string, PYTHONIOENCODING="ascii")
    r = subprocess.run([BIN, "receive", q, "--json", "-t", "1"], capture_output=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.decode("utf-8"))["body"] == "café"
    assert completed(emu, q) == {"m0": 1}


def test_resubmit_refuses_to_keep_ids_on_a_target_with_duplicate_detection(emu, make_queue):
    q = make_queue(max_delivery_count=1, requires_duplicate_detection=True, duplicate_detection_history_time_window=600)
    cs = emu.connection_string
    _dead_letter(emu, q, 1)
    r = run("dlq", "resubmit", q, "-t", "1", env_cs=cs)
    assert r.returncode == 2 and "duplicate detection" in r.stderr
    assert len(emu.entity_state(q)["dead_letter"]) == 1  # nothing moved
    r = run("dlq", "resubmit", q, "--new-message-id", "-t", "1", env_cs=cs)
    assert r.returncode == 0, r.stderr
    [m] = emu.messages(q)
    assert m["message_id"] != "d0" and emu.entity_state(q)["dead_letter"] == []


def test_resubmit_from_a_subscription_needs_a_target(emu):
    emu.create_topic("t-rs")
    emu.create_subscription("t-rs", "s", max_delivery_count=1)
    r = run("dlq", "resubmit", "t-rs/subscriptions/s", "-t", "1", env_cs=emu.connection_string)
    assert r.returncode == 2 and "--to" in r.stderr and "is a subscription" in r.stderr


def test_purge_enqueued_before_names_what_its_release_dead_letters(emu, make_queue):
    import peeklock

    q = make_queue(max_delivery_count=2)
    cs = emu.connection_string
    _send(emu, q, b"new")
    with peeklock.Client.from_connection_string(cs) as c:
        c.peek_lock(q, timeout=1).abandon()  # one delivery used already
    r = run("purge", q, "--enqueued-before", "2000-01-01T00:00:00Z", "--yes", env_cs=cs)
    assert r.returncode == 1 and "kept 1" in r.stdout
    assert "message #1 is on its last delivery (2 of 2)" in r.stderr
    assert [m["message_id"] for m in emu.entity_state(q)["dead_letter"]] == ["m0"]


def test_dlq_and_export_of_an_empty_entity_exit_0(emu, make_queue):
    q = make_queue()
    assert run("dlq", q, "-t", "0", env_cs=emu.connection_string).returncode == 0
    assert run("export", q, "-t", "0", "-q", env_cs=emu.connection_string).returncode == 0
    assert run("receive", q, "-t", "0", env_cs=emu.connection_string).returncode == 7


def _with_host(cs, host):
    """The emulator's connection string with its endpoint's host replaced."""
    import re

    return re.sub(r"sb://127\.0\.0\.1:", f"sb://{host}:", cs)


def test_ls_refuses_the_sas_token_in_clear_to_a_host_that_is_not_loopback(emu, make_queue):
    # 0.0.0.0 reaches this machine's emulator, yet is not a loopback name: the core's rule
    # for plain http (what Client.from_connection_string enforces) holds for `ls` too
    make_queue()
    cs = _with_host(emu.connection_string, "0.0.0.0")
    r = run("ls", env_cs=cs)
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "not a loopback host" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert r.stdout == ""
    # the connection string's own opt-in is the core's too
    r = run("ls", env_cs=cs + ";AllowPlaintextHost=0.0.0.0")
    assert r.returncode == 0, r.stderr


def test_ls_of_an_endpoint_answering_404_is_an_error_not_an_empty_namespace(emu, make_queue):
    q = make_queue()
    r = run("ls", env_cs=emu.connection_string)
    assert r.returncode == 0 and q in r.stdout, r.stderr
    emu.fault(operation="management", status=404, count=1)  # the namespace's queue list: 404
    r = run("ls", env_cs=emu.connection_string)
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    assert "$Resources/Queues" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and r.stdout == ""


def test_ls_bad_connection_string_or_refused_key_is_one_line_with_its_exit_code(emu):
    r = run("ls", "--connection-string", "garbage")
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert r.stderr.startswith("peeklock: InvalidArgument: connection string") and len(r.stderr.splitlines()) == 1
    r = run("ls", env_cs=emu.connection_string.replace(f"SharedAccessKey={emu.key}", "SharedAccessKey=wrong"))
    assert r.returncode == 3, (r.returncode, r.stderr)
    assert r.stderr.startswith("peeklock: AuthError: ") and len(r.stderr.splitlines()) == 1
    assert r.stderr.count("401") == 1, r.stderr  # the status once, not "HTTP 401 (HTTP 401)"


def test_management_alone_raises_peeklock_errors():
    # a process that never imports peeklock.client: the core still raises peeklock's classes
    code = (
        "import sys, peeklock\n"
        "from peeklock.management import Management\n"
        "try:\n"
        "    Management.from_connection_string('garbage').entities()\n"
        "except peeklock.InvalidArgument as e:\n"
        "    assert 'peeklock.client' not in sys.modules\n"
        "    print('ok', type(e).__name__)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "ok InvalidArgument", r.stderr


def test_an_error_names_its_http_status_once(emu, make_queue):
    q = make_queue()
    emu.fault(operation="send", entity=q, status=410, count=1)
    r = run("send", q, "x", env_cs=emu.connection_string)
    assert r.returncode != 0 and len(r.stderr.splitlines()) == 1, r.stderr
    assert r.stderr.count("410") == 1, r.stderr


def test_purge_of_a_missing_entity_says_only_that(emu):
    r = run("purge", "no-such-queue", "--yes", env_cs=emu.connection_string)
    assert r.returncode == 4, r.stderr
    assert r.stderr.splitlines() == [r.stderr.strip()] and "EntityNotFoundError" in r.stderr, r.stderr


def test_text_output_leaves_out_fields_that_are_not_set(emu, make_queue):
    q = make_queue()
    assert run("send", q, "plain", "--message-id", "m-1", env_cs=emu.connection_string).returncode == 0
    r = run("send", q, "labelled", "--message-id", "m-2", "--label", "L", env_cs=emu.connection_string)
    assert r.returncode == 0, r.stderr
    r = run("receive", q, "-n", "2", "-t", "5", env_cs=emu.connection_string)
    assert r.returncode == 0, r.stderr
    heads = [x for x in r.stdout.splitlines() if x.startswith("--- ")]
    assert len(heads) == 2 and "None" not in r.stdout, r.stdout
    assert "label=" not in heads[0], heads
    assert " label=L " in heads[1], heads
