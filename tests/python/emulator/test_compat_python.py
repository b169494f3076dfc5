"""The legacy Python REST client (azure-servicebus 0.21.1 `ServiceBusService`, a test
dependency only) works unchanged against the emulator: it signs SAS its own way
(`http://host:port:80/path`, lower-cased escapes), sends custom properties in its own
forms, and parses BrokerProperties, Location and custom-property headers."""

import datetime
import time

import pytest

sbmod = pytest.importorskip(
    "azure.servicebus", reason="azure-servicebus==0.21.1 (scripts/deps/emulator.pip) not installed"
)
if not hasattr(sbmod, "ServiceBusService"):
    pytest.skip("azure.servicebus is not the legacy REST package", allow_module_level=True)
from azure.servicebus import Message, ServiceBusService  # noqa: E402


@pytest.fixture
def svc(fresh_emulator):
    emu = fresh_emulator
    s = ServiceBusService(
        service_namespace=emu.host,
        host_base=":%d" % emu.port,
        shared_access_key_name=emu.key_name,
        shared_access_key_value=emu.key,
    )
    s._httpclient.protocol = "http"  # the development endpoint speaks plain http
    return s


def test_queue_management(svc, fresh_emulator):
    assert svc.create_queue("legacyq") is True
    assert svc.create_queue("legacyq") is False  # 409 -> False
    q = svc.get_queue("legacyq")
    assert q.lock_duration == "PT1M" and int(q.max_delivery_count) == 10
    assert "legacyq" in [x.name for x in svc.list_queues()]
    assert svc.delete_queue("legacyq") is True
    assert svc.delete_queue("legacyq") is False


def test_send_custom_properties_peek_lock_renew_unlock_redeliver_complete(svc, fresh_emulator):
    svc.create_queue("legacy")
    props = {
        "hello": "world",
        "number": 42,
        "large": 8555111000,
        "floating": 3.14,
        "active": True,
        "dob": datetime.datetime(2011, 12, 14),
        "quote_message": 'This "should" work fine',
    }
    svc.send_queue_message(
        "legacy",
        Message(
            b"message with properties", custom_properties=props, broker_properties={"Label": "L1", "TimeToLive": 600}
        ),
    )
    msg = svc.receive_queue_message("legacy", peek_lock=True, timeout=5)
    assert msg.body == b"message with properties"
    assert msg.custom_properties["hello"] == "world"
    assert msg.custom_properties["number"] == 42
    assert msg.custom_properties["large"] == 8555111000
    assert msg.custom_properties["floating"] == 3.14
    assert msg.custom_properties["active"] is True
    assert msg.custom_properties["quote_message"] == 'This "should" work fine'
    dob = msg.custom_properties["dob"]
    assert dob.year == 2011 and dob.month == 12 and dob.day == 14
    assert msg.broker_properties["Label"] == "L1" and msg.broker_properties["TimeToLive"] == 600
    assert msg.broker_properties["DeliveryCount"] == 1
    first_token = msg.broker_properties["LockToken"]
    assert msg.location and first_token in msg.location
    msg.renew_lock()
    msg.unlock()
    again = svc.receive_queue_message("legacy", peek_lock=True, timeout=5)
    assert again.body == b"message with properties"
    assert again.broker_properties["DeliveryCount"] == 2
    assert again.broker_properties["LockToken"] != first_token
    again.delete()  # complete
    st = fresh_emulator.entity_state("legacy")
    assert st["messages"] == [] and sum(st["completed"].values()) == 1


def test_receive_and_delete_and_empty(svc, fresh_emulator):
    svc.create_queue("legacyrd")
    svc.send_queue_message("legacyrd", Message(b"once"))
    msg = svc.receive_queue_message("legacyrd", peek_lock=False, timeout=5)
    assert msg.body == b"once" and msg.broker_properties["DeliveryCount"] == 1
    t0 = time.monotonic()
    empty = svc.receive_queue_message("legacyrd", peek_lock=False, timeout=1)
    assert empty.body is None
    assert time.monotonic() - t0 < 20


def test_topic_subscription_and_batch(svc, fresh_emulator):
    svc.create_topic("legacyt")
    svc.create_subscription("legacyt", "MySubscription")
    svc.send_topic_message_batch(
        "legacyt",
        [
            Message(b"first", broker_properties={"Label": "M1", "TimeToLive": 40}),
            Message(b"second", custom_properties={"Priority": "Low"}),
        ],
    )
    a = svc.receive_subscription_message("legacyt", "MySubscription", peek_lock=False, timeout=5)
    b = svc.receive_subscription_message("legacyt", "MySubscription", peek_lock=True, timeout=5)
    assert a.body == b"first" and a.broker_properties["Label"] == "M1"
    assert b.body == b"second"
    assert {k.lower(): v for k, v in b.custom_properties.items()}["priority"] == "Low"
    assert "/legacyt/subscriptions/MySubscription/messages/" in b.location
    b.delete()
    assert fresh_emulator.entity_state("legacyt/subscriptions/MySubscription")["messages"] == []


def test_lock_lost_is_an_error_for_the_client(svc, fresh_emulator):
    from azure.common import AzureMissingResourceHttpError

    fresh_emulator.create_queue("legacylost", lock_duration=30)
    svc.send_queue_message("legacylost", Message(b"x"))
    msg = svc.receive_queue_message("legacylost", peek_lock=True, timeout=5)
    fresh_emulator.advance(31)
    with pytest.raises(AzureMissingResourceHttpError):
        msg.delete()
