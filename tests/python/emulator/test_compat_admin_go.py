"""The official Go admin client (github.com/Azure/azure-sdk-for-go/sdk/messaging/azservicebus/admin,
built from tests/compat/go-admin with modules from the Go module proxy) passes a full scenario
against the emulator over its own HTTPS, trusting the emulator's certificate through
SSL_CERT_FILE: namespace info, create/get/update/delete, 101 queues in pages of 30, runtime counts
(CountDetails), rules of every kind with a pager that ends, a scheduled topic message."""

import json
import os
import shutil
import subprocess

import pytest

GO_DIR = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "compat", "go-admin"))

pytest.importorskip("cryptography", reason="--tls needs the cryptography package (scripts/deps/emulator.pip)")


@pytest.fixture(scope="module")
def go_driver(tmp_path_factory):
    go = shutil.which("go") or ("/usr/local/go/bin/go" if os.path.exists("/usr/local/go/bin/go") else None)
    if go is None:
        pytest.skip("the Go toolchain is not installed")
    out = str(tmp_path_factory.mktemp("go-admin") / "go-admin")
    r = subprocess.run([go, "build", "-o", out, "."], cwd=GO_DIR, capture_output=True, text=True, timeout=900)
    if r.returncode != 0:
        if any(s in r.stderr for s in ("dial tcp", "proxy.golang.org", "no such host", "i/o timeout")):
            pytest.skip("Go modules unreachable: %s" % r.stderr[-500:])
        pytest.fail("go build failed:\n%s" % r.stderr[-3000:])
    return out


def test_go_admin_client_full_scenario(go_driver, emulator_factory):
    emu = emulator_factory(tls=True)
    r = subprocess.run(
        [go_driver, emu.connection_string],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, SSL_CERT_FILE=emu.cert_path),
    )
    assert r.returncode == 0, r.stderr[-4000:]
    assert json.loads(r.stdout) == {
        "namespace": "peeklock",
        "queueCounts": [1, 1, 1, 3, 0],
        "queuePages": [30, 30, 30, 12],
        "listedQueues": 102,
        "listedRuntime": 102,
        "subscriptions": ["Sub1", "Sub2"],
        "rulePages": [["all", "corr", "none"], ["sql"]],
        "allRules": 4,
        "actionLabel": "was-blue",
        "topic": {
            "scheduled": 1,
            "subscriptionCount": 2,
            "sqlFilters": 1,
            "correlationFilters": 1,
            "sub1Before": 1,
            "scheduledAfter": 0,
            "sub1After": 2,
        },
        "done": True,
    }
    st = emu.state()
    assert not [p for p in st["entities"] if not p.endswith("$DeadLetterQueue")], sorted(st["entities"])
