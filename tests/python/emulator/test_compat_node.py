"""The legacy Node REST client (npm azure-sb, a test dependency in tests/compat/node) works
unchanged against the emulator: send with custom properties, peek-lock, renew, unlock,
redelivery, complete, receive-and-delete, topic/subscription, queue management."""

import json
import os
import subprocess

import pytest
from conftest import npm_installed

NODE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "compat", "node")


@pytest.fixture(scope="module")
def node_ready():
    return npm_installed("node", "azure-sb")


def test_azure_sb_full_cycle(node_ready, fresh_emulator):
    emu = fresh_emulator
    r = subprocess.run(
        ["node", os.path.join(NODE_DIR, "drive.js"), emu.endpoint, emu.key_name, emu.key, "nodeq", "nodet"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout)
    assert out["createQueue"] is True and out["send"] is True
    pl = out["peekLock"]
    assert pl["body"] == "hi there" and pl["contentType"] == "text/plain"
    assert pl["brokerProperties"]["DeliveryCount"] == 1
    assert pl["brokerProperties"]["Label"] == "L1" and pl["brokerProperties"]["CorrelationId"] == "c-1"
    assert pl["customProperties"] == {
        "propint": 1,
        "propfloat": 2.22,
        "propstring": "hi there",
        "propbool": True,
        "propdate": "2012-03-07T22:27:00.000Z",
    }
    assert pl["location"].endswith("/nodeq/messages/1/" + pl["brokerProperties"]["LockToken"])
    assert out["renew"] is True and out["unlock"] is True
    again = out["redelivered"]
    assert again["body"] == "hi there" and again["brokerProperties"]["DeliveryCount"] == 2
    assert again["brokerProperties"]["LockToken"] != pl["brokerProperties"]["LockToken"]
    assert out["complete"] is True
    assert out["completeAgain"]["statusCode"] == 404
    rd = out["receiveAndDelete"]
    assert rd["body"] == "plain string body" and "LockToken" not in rd["brokerProperties"]
    assert out["empty"]["error"] == "No messages to receive"
    sub = out["peekSubscription"]
    assert sub["body"] == "to topic" and sub["customProperties"] == {"n": 7} and sub["completed"] is True
    assert "/nodet/subscriptions/Sub1/messages/1/" in sub["location"]
    assert out["getQueue"] == {"LockDuration": "PT1M", "MaxDeliveryCount": "10"}
    assert out["listSubscriptions"] == ["Sub1"]
    assert out["createRule"] is True
    assert out["listRules"] == ["$Default", "red"]
    assert out["getRule"] == {"name": "red", "sql": "color = 'red'"}
    assert out["deleteQueue"] is True
    st = emu.state()["entities"]
    assert "nodeq" not in st
    assert st["nodet/subscriptions/Sub1"]["messages"] == []
    assert st["nodet/subscriptions/Sub1"]["completed"] and list(
        st["nodet/subscriptions/Sub1"]["completed"].values()
    ) == [1]
