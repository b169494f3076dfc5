"""The official Python admin client (azure-servicebus 7.x ServiceBusAdministrationClient, sync
and aio) passes a full scenario against the emulator over its own HTTPS: create, get, update,
list past 100, delete, runtime counts of queues, topics and subscriptions, rules of every
kind, namespace info (tests/compat/python/admin_scenario.py).

The SDK shares its distribution name with the legacy 0.21.1 package in .venv, so it is installed
with ``pip install --target`` into .venv/compat-azure-servicebus and run in a child process."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
COMPAT = os.path.join(ROOT, "tests", "compat", "python")
TARGET = os.path.join(os.path.dirname(os.path.dirname(sys.executable)), "compat-azure-servicebus")

pytest.importorskip("cryptography", reason="--tls needs the cryptography package (scripts/deps/emulator.pip)")


@pytest.fixture(scope="module")
def sdk_path():
    req = os.path.join(COMPAT, "requirements.txt")
    stamp = os.path.join(TARGET, ".requirements")
    want = open(req).read()
    if not (os.path.isfile(stamp) and open(stamp).read() == want):
        r = subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "--upgrade", "--target", TARGET, "-r", req],
            capture_output=True,
            text=True,
            timeout=900,
        )
        if r.returncode != 0:
            pytest.skip("pip install of the admin SDK failed: %s" % r.stderr[-800:])
        with open(stamp, "w") as f:
            f.write(want)
    return TARGET


@pytest.mark.parametrize("mode", ["sync", "aio"])
def test_python_admin_client_full_scenario(sdk_path, emulator_factory, mode):
    emu = emulator_factory(tls=True)
    assert emu.cert_path and "UseDevelopmentEmulator" not in emu.connection_string
    env = dict(os.environ, PYTHONPATH=sdk_path)
    r = subprocess.run(
        [sys.executable, os.path.join(COMPAT, "admin_scenario.py"), mode, emu.connection_string, emu.cert_path],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert r.returncode == 0, r.stderr[-4000:]
    out = json.loads(r.stdout)
    assert out == {
        "mode": mode,
        "namespace": "peeklock",
        "queue_counts": [1, 1, 1, 3, 0, 0],
        "listed_queues": 101,
        "rules": ["corr", "none", "sql"],
        "topic": {"subscriptions": ["Sub1", "Sub2"], "sub1_messages": 4},
        "done": True,
    }
    # the scenario deleted what it made; the emulator saw it over TLS with SAS
    st = emu.state()
    assert not [p for p in st["entities"] if not p.endswith("$DeadLetterQueue")], sorted(st["entities"])
    assert st["counters"]["requests.management"] > 200
