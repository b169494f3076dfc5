"""The peeklock console script, run as a real subprocess."""
import json
import os
import subprocess
import sys

import pytest

BIN = os.path.join(os.path.dirname(sys.executable), "peeklock")


def run(*args, env_cs=None, input=None):
    env = dict(os.environ)
    env.pop("PEEKLOCK_CONNECTION_STRING", None)
    if env_cs:
        env["PEEKLOCK_CONNECTION_STRING"] = env_cs
    return subprocess.run([BIN, *args], capture_output=True, text=True, env=env, input=input,
                          timeout=60)


def test_help_for_newcomers():
    r = run("--help")
    assert r.returncode == 0
    for word in ("send", "peek", "receive", "dlq", "token", "emulator",
                 "PEEKLOCK_CONNECTION_STRING", "Examples"):
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
    r = run("send", q, "hello", "-p", "Priority=High", "-p", "Attempt=3", "--message-id", "c1",
            env_cs=cs)
    assert r.returncode == 0, r.stderr
    r = run("send", q, "--connection-string", cs, "--message-id", "c2", input="from stdin")
    assert r.returncode == 0, r.stderr
    r = run("peek", q, "--json", env_cs=cs)                     # lock, show, abandon
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["body"] == "hello" and d["properties"] == {"Priority": "High", "Attempt": 3}
    r = run("peek", q, "--json", env_cs=cs)                     # abandoned again -> DLQ
    assert json.loads(r.stdout)["delivery_count"] == 2
    r = run("receive", q, "--json", "-t", "1", env_cs=cs)       # complete what is left
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    assert [x["body"] for x in lines] == ["from stdin"]
    r = run("dlq", q, "--json", "-t", "1", env_cs=cs)
    assert [json.loads(x)["body"] for x in r.stdout.splitlines()] == ["hello"]
    assert emu.entity_state(q)["completed"] == {"c2": 1}


def test_token(emu):
    r = run("token", "audience", "--key-name", "keyName", "--key", "key", "--expiry", "60")
    assert r.returncode == 0 and r.stdout.startswith("SharedAccessSignature sr=audience&sig=")
    r = run("token", env_cs=emu.connection_string)
    assert r.returncode == 0 and "skn=RootManageSharedAccessKey" in r.stdout


def test_errors_are_reported_not_traced(emu):
    r = run("send", "no-such-queue", "x", env_cs=emu.connection_string)
    assert r.returncode == 1
    assert "EntityNotFoundError" in r.stderr and "Traceback" not in r.stderr


def test_emulator_subcommand_prints_ready_line():
    p = subprocess.Popen([BIN, "emulator", "--port", "0", "--queue", "x"], stdout=subprocess.PIPE,
                         text=True)
    try:
        line = p.stdout.readline()
        assert line.startswith("peeklock emulator ready: Endpoint=sb://127.0.0.1:")
    finally:
        p.terminate()
        p.wait(10)


BIG = 200_000   # bytes per body: one --json line is far larger than a pipe's buffer (64 KiB)


def _run_across_lock_expiry(emu, *args):
    """Runs the CLI with --json, reading its output line by line. Each line is larger
    than the pipe, so while the CLI is writing the third message it is blocked, holding
    three locks; then the emulator clock moves past the lock duration (5 s), so those
    locks expire and their messages come back while the CLI is still reading."""
    env = dict(os.environ, PEEKLOCK_CONNECTION_STRING=emu.connection_string)
    p = subprocess.Popen([BIN, *args, "--json", "-t", "1"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=env)
    import threading
    guard = threading.Timer(60, p.kill)
    guard.start()
    try:
        head = p.stdout.readline() + p.stdout.readline()
        head += p.stdout.read(1)              # the CLI has the third message and is writing it
        emu.advance(6)
        out = p.stdout.read()                 # to the end (communicate() would skip buffered bytes)
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
    assert {k: m["delivery_count"] for k, m in msgs.items()} == \
        {"m0": 2, "m1": 2, "m2": 2, "m3": 1, "m4": 1, "m5": 1}


def test_dlq_across_lock_expiry_ends_shows_each_once_and_leaves_none_locked(emu, make_queue):
    import peeklock
    q = make_queue(lock_duration=5, max_delivery_count=1)
    _send_big(emu, q, 6)
    with peeklock.Client.from_connection_string(emu.connection_string) as c:
        for _ in range(6):
            c.peek_lock(q, timeout=1).abandon()             # delivery count 1 -> dead-lettered
    before = {m["message_id"]: m["delivery_count"] for m in emu.entity_state(q)["dead_letter"]}
    assert sorted(before) == [f"m{i}" for i in range(6)]
    rc, lines, err = _run_across_lock_expiry(emu, "dlq", q)  # no --count: until empty
    assert rc == 0, err
    assert [x["message_id"] for x in lines] == [f"m{i}" for i in range(6)]
    dead = {m["message_id"]: m for m in emu.entity_state(q)["dead_letter"]}
    assert all(m["state"] == "available" for m in dead.values()), dead
    assert {k: m["delivery_count"] - before[k] for k, m in dead.items()} == \
        {"m0": 2, "m1": 2, "m2": 2, "m3": 1, "m4": 1, "m5": 1}
    assert emu.messages(q) == []


def test_peek_and_dlq_help_say_each_message_is_shown_once():
    for cmd in ("peek", "dlq"):
        r = run(cmd, "--help")
        assert r.returncode == 0 and "once" in r.stdout, r.stdout


def test_emulator_without_aiohttp_names_the_extra():
    # aiohttp is an optional extra: without it the command says what to install
    # (not a raw ModuleNotFoundError traceback).
    code = ("import sys; sys.modules['aiohttp'] = None; from peeklock.cli import main; "
            "sys.exit(main(['emulator', '--queue', 'q']))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    assert "pip install 'peeklock[emulator]'" in r.stderr
    assert "Traceback" not in r.stderr
