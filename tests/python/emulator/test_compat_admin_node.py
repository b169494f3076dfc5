"""The official JavaScript admin client (npm @azure/service-bus ServiceBusAdministrationClient, a
test dependency in tests/compat/node-admin) passes a full scenario against the emulator over its
own HTTPS, trusting the emulator's certificate through NODE_EXTRA_CA_CERTS: create, get, update,
exists, list past 100 (paged), delete, runtime counts of queues, topics and subscriptions, rules
of every kind with their parameters and actions, namespace info."""

import json
import os
import subprocess

import pytest
from conftest import npm_installed

pytest.importorskip("cryptography", reason="--tls needs the cryptography package (scripts/deps/emulator.pip)")


@pytest.fixture(scope="module")
def node_dir():
    return npm_installed("node-admin", "@azure/service-bus")


def test_js_admin_client_full_scenario(node_dir, emulator_factory):
    emu = emulator_factory(tls=True)
    env = dict(os.environ, NODE_EXTRA_CA_CERTS=emu.cert_path)
    r = subprocess.run(
        ["node", os.path.join(node_dir, "drive_admin.js"), emu.connection_string],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert r.returncode == 0, r.stderr[-4000:]
    out = json.loads(r.stdout)
    assert out == {
        "namespace": "peeklock",
        "queueCounts": [1, 1, 1, 3, 0, 0],
        "forwarded": 1,
        "listedQueues": 101,
        "pages": [40, 40, 24],
        "subscriptions": ["Sub1", "Sub2"],
        "rulePages": [["corr", "first"], ["none", "sql"]],
        "actionLabel": "was-blue",
        "topic": {"scheduled": 1, "subscriptionCount": 2, "sub1Before": 1, "scheduledAfter": 0, "sub1After": 2},
        "done": True,
    }
    st = emu.state()
    assert not [p for p in st["entities"] if not p.endswith("$DeadLetterQueue")], sorted(st["entities"])
