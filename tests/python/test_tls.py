"""peeklock's own client against the emulator over HTTPS (--tls): it trusts the emulator's
self-signed certificate through its ca_file option, verifies the host, settles through the
https Location, and refuses the connection without that CA file."""

import pytest

pytest.importorskip("cryptography", reason="the emulator's --tls needs the cryptography package")


def test_client_over_https_with_ca_file(emulator_factory):
    import peeklock

    emu = emulator_factory("--queue", "tq", tls=True)
    assert emu.cert_path and "UseDevelopmentEmulator" not in emu.connection_string
    c = peeklock.Client.from_connection_string(emu.connection_string, ca_file=emu.cert_path)
    try:
        assert c.endpoint.startswith("https://")
        c.send("tq", b"over tls", message_id="t-1")
        msg = c.peek_lock("tq", timeout=5)
        assert msg is not None and msg.body == b"over tls" and msg.message_id == "t-1"
        msg.renew_lock()
        msg.complete()
    finally:
        c.close()
    st = emu.entity_state("tq")
    assert st["messages"] == [] and st["completed"] == {"t-1": 1}


def test_client_refuses_the_emulator_without_its_ca(emulator_factory):
    import peeklock

    emu = emulator_factory("--queue", "tq", tls=True)
    c = peeklock.Client.from_connection_string(emu.connection_string, max_retries=0)
    try:
        with pytest.raises(peeklock.Error) as err:
            c.send("tq", b"never")
        assert "certificate" in str(err.value).lower() or "ssl" in str(err.value).lower(), str(err.value)
    finally:
        c.close()
    assert emu.messages("tq") == []


def test_cli_over_https_with_ca_file(emulator_factory):
    # the console script trusts the emulator's certificate by --ca-file (before or after the
    # command) or PEEKLOCK_CA_FILE, for the data-plane client and the management client alike
    import json
    import os
    import subprocess
    import sys

    emu = emulator_factory("--queue", "tq", tls=True)
    peeklock_bin = os.path.join(os.path.dirname(sys.executable), "peeklock")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PEEKLOCK_")}
    env["PEEKLOCK_CONNECTION_STRING"] = emu.connection_string

    def run(*args, **extra):
        return subprocess.run([peeklock_bin, *args], capture_output=True, text=True, timeout=60, env={**env, **extra})

    r = run("ls")  # the system's CAs do not trust it
    assert r.returncode == 5 and "certificate" in r.stderr.lower(), (r.returncode, r.stderr)
    r = run("send", "tq", "over tls", "--message-id", "t-1", "--ca-file", emu.cert_path)
    assert r.returncode == 0, r.stderr
    r = run("--ca-file", emu.cert_path, "ls", "--json")
    assert r.returncode == 0, r.stderr
    assert [(e["path"], e["active"]) for e in map(json.loads, r.stdout.splitlines())] == [("tq", 1)]
    r = run("receive", "tq", "--json", "-t", "5", PEEKLOCK_CA_FILE=emu.cert_path)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["body"] == "over tls"
    assert emu.entity_state("tq")["completed"] == {"t-1": 1}
