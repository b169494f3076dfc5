"""Atom management (create/get/delete/list of queues, topics, subscriptions), Config.json and flags."""

import json
import xml.etree.ElementTree as ET

import pytest

from conftest import SB

SB_NS = "{http://schemas.microsoft.com/netservices/2010/10/servicebus/connect}"
ATOM_CT = {"Content-Type": "application/atom+xml;type=entry;charset=utf-8"}


def entry(kind, inner=""):
    return (
        '<?xml version="1.0" encoding="utf-8"?>'
        '<entry xmlns="http://www.w3.org/2005/Atom"><content type="application/xml">'
        '<%s xmlns="http://schemas.microsoft.com/netservices/2010/10/servicebus/connect" '
        'xmlns:i="http://www.w3.org/2001/XMLSchema-instance">%s</%s></content></entry>' % (kind, inner, kind)
    ).encode()


def desc(body):
    root = ET.fromstring(body)
    return {el.tag.replace(SB_NS, ""): el.text for el in root.iter() if el.tag.startswith(SB_NS)}


def test_create_get_conflict_delete_queue(fresh_emulator):
    emu = fresh_emulator
    body = entry(
        "QueueDescription",
        "<LockDuration>PT45S</LockDuration><MaxDeliveryCount>3</MaxDeliveryCount>"
        "<DefaultMessageTimeToLive>PT5M</DefaultMessageTimeToLive>"
        "<DeadLetteringOnMessageExpiration>true</DeadLetteringOnMessageExpiration>"
        "<MaxSizeInMegabytes>2048</MaxSizeInMegabytes>",
    )
    status, headers, data = emu.request("PUT", "/mgmtq?api-version=2017-04", body, ATOM_CT)
    assert status == 201, data
    assert headers["Content-Type"] == "application/atom+xml;type=entry;charset=utf-8"
    d = desc(data)
    assert d["LockDuration"] == "PT45S" and d["MaxDeliveryCount"] == "3"
    assert d["DefaultMessageTimeToLive"] == "PT5M" and d["DeadLetteringOnMessageExpiration"] == "true"
    assert d["MaxSizeInMegabytes"] == "2048"
    assert b'<title type="text">mgmtq</title>' in data
    status, _, data = emu.request("PUT", "/mgmtq", body, ATOM_CT)
    assert status == 409 and data.startswith(b"<Error><Code>409</Code><Detail>SubCode=40900. Conflict")
    status, _, data = emu.request("GET", "/MgmtQ")
    assert status == 200 and desc(data)["LockDuration"] == "PT45S"
    st = emu.entity_state("mgmtq")
    assert st["lock_duration"] == 45 and st["max_delivery_count"] == 3
    assert st["default_message_time_to_live"] == 300 and st["dead_lettering_on_message_expiration"] is True
    status, headers, data = emu.request("DELETE", "/mgmtq")
    assert status == 200
    assert emu.request("GET", "/mgmtq")[0] == 404
    status, _, data = emu.request("DELETE", "/mgmtq")
    assert status == 404 and b"No service is hosted at the specified address." in data
    assert SB(emu).send("mgmtq")[0] == 410


def test_empty_description_gives_defaults(fresh_emulator):
    status, _, data = fresh_emulator.request("PUT", "/plainq", entry("QueueDescription"), ATOM_CT)
    assert status == 201
    d = desc(data)
    assert d["LockDuration"] == "PT1M" and d["MaxDeliveryCount"] == "10"
    assert d["DefaultMessageTimeToLive"] == "P10675199DT2H48M5.4775807S" and d["MaxSizeInMegabytes"] == "1024"
    assert fresh_emulator.request("PUT", "/plainq2", b"", ATOM_CT)[0] == 201


def test_update_with_if_match(fresh_emulator):
    fresh_emulator.request("PUT", "/upq", entry("QueueDescription"), ATOM_CT)
    h = dict(ATOM_CT, **{"If-Match": "*"})
    status, _, data = fresh_emulator.request(
        "PUT", "/upq", entry("QueueDescription", "<LockDuration>PT2M</LockDuration>"), h
    )
    assert status == 200 and desc(data)["LockDuration"] == "PT2M"
    assert fresh_emulator.request("PUT", "/nothere", entry("QueueDescription"), h)[0] == 404


def test_topic_and_subscription_lifecycle(fresh_emulator):
    emu = fresh_emulator
    assert emu.request("PUT", "/mt", entry("TopicDescription"), ATOM_CT)[0] == 201
    status, _, data = emu.request(
        "PUT", "/mt/subscriptions/s1", entry("SubscriptionDescription", "<LockDuration>PT30S</LockDuration>"), ATOM_CT
    )
    assert status == 201 and desc(data)["LockDuration"] == "PT30S"
    assert emu.request("PUT", "/nosuchtopic/subscriptions/s1", entry("SubscriptionDescription"), ATOM_CT)[0] == 404
    status, headers, data = emu.request("GET", "/mt/Subscriptions/")
    assert status == 200 and headers["Content-Type"].startswith("application/atom+xml;type=feed")
    assert b'<title type="text">s1</title>' in data
    status, _, data = emu.request("GET", "/$Resources/Topics")
    assert status == 200 and b">mt<" in data
    status, _, data = emu.request("GET", "/$Resources/Queues?$skip=0&$top=1")
    assert status == 200
    assert emu.request("GET", "/mt/subscriptions/missing")[0] == 404
    assert SB(emu).send_ok("mt") == 201
    assert emu.request("DELETE", "/mt")[0] == 200
    assert emu.request("GET", "/mt/subscriptions/s1")[0] == 404
    assert SB(emu).peek_lock("mt/subscriptions/s1").status == 410


@pytest.mark.parametrize(
    "body",
    [
        b"<entry",
        b"<notatom/>",
        entry("QueueDescription", "<LockDuration>forever</LockDuration>"),
        entry("QueueDescription", "<LockDuration>PT10M</LockDuration>"),
        entry("QueueDescription", "<MaxDeliveryCount>zero</MaxDeliveryCount>"),
        b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><entry>&a;</entry>',
    ],
)
def test_bad_descriptions_are_400(fresh_emulator, body):
    status, _, data = fresh_emulator.request("PUT", "/badq", body, ATOM_CT)
    assert status == 400 and data.startswith(b"<Error><Code>400</Code>")
    assert fresh_emulator.request("GET", "/badq")[0] == 404


def test_config_json_and_flags(emulator_factory, tmp_path):
    cfg = {
        "UserConfig": {
            "Namespaces": [
                {
                    "Name": "sbemulatorns",
                    "Queues": [
                        {
                            "Name": "queue.1",
                            "Properties": {
                                "LockDuration": "PT30S",
                                "MaxDeliveryCount": 3,
                                "DeadLetteringOnMessageExpiration": True,
                                "DefaultMessageTimeToLive": "PT1H",
                                "RequiresSession": False,
                            },
                        }
                    ],
                    "Topics": [
                        {
                            "Name": "topic.1",
                            "Properties": {"DefaultMessageTimeToLive": "PT1H"},
                            "Subscriptions": [
                                {
                                    "Name": "subscription.1",
                                    "Properties": {"MaxDeliveryCount": 4, "LockDuration": "PT1M"},
                                    "Rules": [],
                                }
                            ],
                        }
                    ],
                }
            ],
            "Logging": {"Type": "File"},
        }
    }
    path = tmp_path / "Config.json"
    path.write_text(json.dumps(cfg))
    emu = emulator_factory(
        "--config",
        str(path),
        "--queue",
        "extra",
        "--subscription",
        "t2/s",
        "--lock-duration",
        "20",
        "--max-delivery-count",
        "5",
    )
    st = emu.state()["entities"]
    assert st["queue.1"]["lock_duration"] == 30 and st["queue.1"]["max_delivery_count"] == 3
    assert st["queue.1"]["dead_lettering_on_message_expiration"] is True
    assert st["queue.1"]["default_message_time_to_live"] == 3600
    assert st["topic.1/subscriptions/subscription.1"]["max_delivery_count"] == 4
    assert st["extra"]["lock_duration"] == 20 and st["extra"]["max_delivery_count"] == 5
    assert st["t2"]["kind"] == "topic" and st["t2/subscriptions/s"]["kind"] == "subscription"
    sb = SB(emu)
    sb.send_ok("topic.1", b"cfg")
    assert sb.receive_and_delete("topic.1/subscriptions/subscription.1").body == b"cfg"


def test_bad_config_and_flags_fail_clearly(emulator_factory, tmp_path):
    from peeklock.testing import EmulatorError

    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    with pytest.raises(EmulatorError, match="not valid JSON"):
        emulator_factory("--config", str(bad))
    with pytest.raises(EmulatorError, match="lock-duration"):
        emulator_factory("--lock-duration", "0")
    with pytest.raises(EmulatorError, match="subscription"):
        emulator_factory("--subscription", "nosub")


@pytest.mark.parametrize("name", ["bad%20name", "-lead", "trail-", "a$b", "caf%C3%A9", "x" * 300])
def test_invalid_entity_names_are_400(fresh_emulator, name):
    status, _, data = fresh_emulator.request("PUT", "/" + name, entry("QueueDescription"), ATOM_CT)
    assert status == 400 and data.startswith(b"<Error><Code>400</Code>")
    status, _, _ = fresh_emulator.request("PUT", "/$admin/entities/" + name, b'{"kind": "queue"}', auth=False)
    assert status == 400
