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
