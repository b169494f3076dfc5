"""The Atom surface as the service writes it (CountDetails, dates, ids, paging, namespace info) and
every entity setting either obeyed or refused with a 400 (docs/emulator-contract.md)."""

import re
import xml.etree.ElementTree as ET

import pytest

from conftest import SB
from test_management import ATOM_CT, desc, entry

COUNT_NS = "http://schemas.microsoft.com/netservices/2011/06/servicebus"
ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{7}Z$")


def put(emu, path, kind, inner="", status=201):
    st, _, data = emu.request("PUT", path, entry(kind, inner), ATOM_CT)
    assert st == status, data
    return data


def counts(data):
    root = ET.fromstring(data)
    return {el.tag.split("}")[1]: int(el.text) for el in root.iter() if el.tag.startswith("{%s}" % COUNT_NS)}


def test_count_details_dates_and_fields(fresh_emulator):
    emu, sb = fresh_emulator, SB(fresh_emulator)
    put(emu, "/cq", "QueueDescription", "<MaxDeliveryCount>1</MaxDeliveryCount>")
    sb.send_ok("cq", b"dead")
    sb.unlock(sb.peek_lock("cq"))  # max delivery count 1: dead-lettered
    sb.send_ok("cq", b"active")
    sb.send_ok("cq", b"later", props={"ScheduledEnqueueTimeUtc": "Sun, 01 Jan 2090 00:00:00 GMT"})
    _, _, data = emu.request("GET", "/cq")
    text = data.decode()
    assert '<CountDetails xmlns:d2p1="%s"><d2p1:ActiveMessageCount>1</d2p1:ActiveMessageCount>' % COUNT_NS in text
    assert counts(data) == {
        "ActiveMessageCount": 1,
        "DeadLetterMessageCount": 1,
        "ScheduledMessageCount": 1,
        "TransferMessageCount": 0,
        "TransferDeadLetterMessageCount": 0,
    }
    d = desc(data)
    assert d["MessageCount"] == "3"
    for k in ("CreatedAt", "UpdatedAt", "AccessedAt"):
        assert ISO_Z.match(d[k]), d[k]
    assert d["EnablePartitioning"] == "false" and d["EnableExpress"] == "false"
    assert d["AutoDeleteOnIdle"] == "P10675199DT2H48M5.4775807S" and d["Status"] == "Active"


def test_ids_in_the_service_casing_and_paging(fresh_emulator):
    emu = fresh_emulator
    put(emu, "/ct", "TopicDescription")
    put(emu, "/ct/subscriptions/MySub", "SubscriptionDescription")
    for n in range(3):
        assert emu.request("PUT", "/ct/subscriptions/mysub/rules/r%d" % n, b"", ATOM_CT)[0] == 201
    _, _, data = emu.request("GET", "/CT/SUBSCRIPTIONS/mysub/RULES/r1")
    assert "<id>%s/ct/Subscriptions/MySub/Rules/r1</id>" % emu.endpoint in data.decode()
    _, _, data = emu.request("GET", "/ct/subscriptions/mysub")
    assert "<id>%s/ct/Subscriptions/MySub</id>" % emu.endpoint in data.decode()
    _, _, data = emu.request("GET", "/ct/subscriptions/mysub/rules?$skip=1&$top=2")
    titles = re.findall(r'<title type="text">([^<]+)</title>', data.decode())
    assert titles == ["Rules", "r0", "r1"]
    assert (
        '<link rel="next" href="%s/ct/Subscriptions/MySub/Rules?$skip=3&amp;$top=2"/>' % emu.endpoint in data.decode()
    )
    _, _, data = emu.request("GET", "/ct/subscriptions/mysub/rules?$skip=3&$top=2")
    assert 'rel="next"' not in data.decode() and '<title type="text">r2</title>' in data.decode()
    for n in range(102):
        emu.create_queue("pq%03d" % n)
    _, _, data = emu.request("GET", "/$Resources/Queues")
    assert data.decode().count("<entry") == 100 and "$skip=100&amp;$top=100" in data.decode()


def test_namespace_info(fresh_emulator):
    status, headers, data = fresh_emulator.request("GET", "/$namespaceinfo?api-version=2021-05")
    assert status == 200 and headers["Content-Type"].startswith("application/atom+xml;type=entry")
    d = desc(data)
    assert d["Name"] == "peeklock" and d["MessagingSKU"] == "Standard" and d["NamespaceType"] == "Messaging"
    assert ISO_Z.match(d["CreatedTime"]) and ISO_Z.match(d["ModifiedTime"])


def test_forward_to_and_forward_dead_lettered(fresh_emulator):
    emu, sb = fresh_emulator, SB(fresh_emulator)
    put(emu, "/fdest", "QueueDescription")
    put(emu, "/fdl", "QueueDescription")
    put(emu, "/nosuch-fwd", "QueueDescription", "<ForwardTo>sb://x/missing</ForwardTo>", status=400)
    data = put(
        emu,
        "/fsrc",
        "QueueDescription",
        "<ForwardTo>%s/fdest</ForwardTo><MaxDeliveryCount>1</MaxDeliveryCount>" % emu.endpoint,
    )
    assert desc(data)["ForwardTo"] == "%s/fdest" % emu.endpoint
    sb.send_ok("fsrc", b"goes on")
    assert [m["state"] for m in emu.messages("fdest")] == ["available"] and emu.messages("fsrc") == []
    put(
        emu,
        "/dsrc",
        "QueueDescription",
        "<MaxDeliveryCount>1</MaxDeliveryCount><ForwardDeadLetteredMessagesTo>fdl</ForwardDeadLetteredMessagesTo>",
    )
    sb.send_ok("dsrc", b"fails")
    sb.unlock(sb.peek_lock("dsrc"))
    assert emu.entity_state("dsrc")["dead_letter"] == []
    assert sb.receive_and_delete("fdl").body == b"fails"


def test_duplicate_detection_within_the_window(fresh_emulator):
    emu, sb = fresh_emulator, SB(fresh_emulator)
    put(
        emu,
        "/dupq",
        "QueueDescription",
        "<RequiresDuplicateDetection>true</RequiresDuplicateDetection>"
        "<DuplicateDetectionHistoryTimeWindow>PT1M</DuplicateDetectionHistoryTimeWindow>",
    )
    put(
        emu,
        "/badwin",
        "QueueDescription",
        "<RequiresDuplicateDetection>true</RequiresDuplicateDetection>"
        "<DuplicateDetectionHistoryTimeWindow>PT5S</DuplicateDetectionHistoryTimeWindow>",
        status=400,
    )
    for _ in range(3):
        sb.send_ok("dupq", b"once", props={"MessageId": "same"})
    sb.send_ok("dupq", b"other", props={"MessageId": "other"})
    assert [m["message_id"] for m in emu.messages("dupq")] == ["same", "other"]
    emu.advance(61)
    sb.send_ok("dupq", b"again", props={"MessageId": "same"})
    assert len(emu.messages("dupq")) == 3


def test_auto_delete_on_idle(fresh_emulator):
    emu, sb = fresh_emulator, SB(fresh_emulator)
    put(emu, "/idleq", "QueueDescription", "<AutoDeleteOnIdle>PT4M</AutoDeleteOnIdle>", status=400)
    put(emu, "/idleq", "QueueDescription", "<AutoDeleteOnIdle>PT5M</AutoDeleteOnIdle>")
    emu.advance(200)
    sb.send_ok("idleq")  # in use: the idle time starts again
    emu.advance(200)
    assert emu.request("GET", "/idleq")[0] == 200
    emu.advance(101)
    assert emu.request("GET", "/idleq")[0] == 404
    assert sb.send("idleq")[0] == 410


def test_user_metadata_status_and_filter_exception_setting(fresh_emulator):
    emu, sb = fresh_emulator, SB(fresh_emulator)
    data = put(
        emu, "/metaq", "QueueDescription", "<UserMetadata>hello &amp; more</UserMetadata><Status>SendDisabled</Status>"
    )
    assert desc(data)["UserMetadata"] == "hello & more" and desc(data)["Status"] == "SendDisabled"
    status, _, body = sb.send("metaq")
    assert status == 400 and b"disabled for sending" in body
    put(emu, "/metaq2", "QueueDescription", "<UserMetadata>%s</UserMetadata>" % ("x" * 1025), status=400)
    put(emu, "/ft", "TopicDescription")
    data = put(
        emu,
        "/ft/subscriptions/s",
        "SubscriptionDescription",
        "<DeadLetteringOnFilterEvaluationExceptions>false</DeadLetteringOnFilterEvaluationExceptions>",
    )
    assert desc(data)["DeadLetteringOnFilterEvaluationExceptions"] == "false"


@pytest.mark.parametrize(
    "kind,inner",
    [
        ("QueueDescription", "<AuthorizationRules><AuthorizationRule/></AuthorizationRules>"),
        ("QueueDescription", "<NoSuchSetting>1</NoSuchSetting>"),
        ("QueueDescription", "<Status>Paused</Status>"),
        ("TopicDescription", "<LockDuration>PT1M</LockDuration>"),
    ],
)
def test_settings_not_obeyed_are_refused(fresh_emulator, kind, inner):
    status, _, data = fresh_emulator.request("PUT", "/refused", entry(kind, inner), ATOM_CT)
    assert status == 400, data
    assert fresh_emulator.request("GET", "/refused")[0] == 404


RULE = (
    '<entry xmlns="http://www.w3.org/2005/Atom"><content type="application/xml">'
    '<RuleDescription xmlns="http://schemas.microsoft.com/netservices/2010/10/servicebus/connect" '
    'xmlns:i="http://www.w3.org/2001/XMLSchema-instance">%s</RuleDescription></content></entry>'
)
KV = (
    '<KeyValueOfstringanyType><Key>%s</Key><Value xmlns:d6p1="http://www.w3.org/2001/XMLSchema" '
    'i:type="d6p1:%s">%s</Value></KeyValueOfstringanyType>'
)


def test_correlation_properties_and_sql_action(fresh_emulator):
    emu, sb = fresh_emulator, SB(fresh_emulator)
    put(emu, "/rt", "TopicDescription")
    put(emu, "/rt/subscriptions/s", "SubscriptionDescription")
    assert emu.request("DELETE", "/rt/subscriptions/s/rules/$Default")[0] == 200
    corr = (
        RULE
        % (
            '<Filter i:type="CorrelationFilter"><Label>L</Label><Properties>%s%s</Properties></Filter>'
            "<Action i:type=\"SqlRuleAction\"><SqlExpression>SET sys.Label = 'matched'; SET user.tag = @t; "
            "REMOVE user.n</SqlExpression><Parameters>%s</Parameters></Action>"
        )
        % (KV % ("n", "int", "7"), KV % ("color", "string", "red"), KV % ("@t", "string", "tagged"))
    )
    status, _, data = emu.request("PUT", "/rt/subscriptions/s/rules/corr", corr.encode(), ATOM_CT)
    assert status == 201, data
    text = data.decode()
    assert 'i:type="d6p1:int">7</Value>' in text and "<Key>color</Key>" in text and "SqlRuleAction" in text
    sb.send_ok("rt", b"no: n differs", props={"Label": "L"}, headers={"n": "8", "color": '"red"'})
    sb.send_ok("rt", b"no: label", props={"Label": "M"}, headers={"n": "7", "color": '"red"'})
    sb.send_ok("rt", b"yes", props={"Label": "L"}, headers={"n": "7", "color": '"red"'})
    m = sb.receive_and_delete("rt/subscriptions/s")
    assert m.body == b"yes" and m.bp["Label"] == "matched"
    assert m.headers["tag"] == '"tagged"' and "n" not in m.headers and m.headers["color"] == '"red"'
    assert sb.receive_and_delete("rt/subscriptions/s").status == 204
    bad = (
        RULE % '<Filter i:type="SqlFilter"><SqlExpression>1=1</SqlExpression></Filter>'
        "<Action i:type=\"SqlRuleAction\"><SqlExpression>SET sys.MessageId = 'x'</SqlExpression></Action>"
    )
    assert emu.request("PUT", "/rt/subscriptions/s/rules/bad", bad.encode(), ATOM_CT)[0] == 400
    dated = RULE % (
        '<Filter i:type="CorrelationFilter"><Properties>%s</Properties></Filter>'
        % KV
        % ("d", "dateTime", "2020-01-01T00:00:00Z")
    )
    assert emu.request("PUT", "/rt/subscriptions/s/rules/dated", dated.encode(), ATOM_CT)[0] == 400


def test_scheduled_topic_message_waits_in_the_topic(fresh_emulator):
    emu, sb = fresh_emulator, SB(fresh_emulator)
    put(emu, "/st", "TopicDescription")
    put(emu, "/st/subscriptions/a", "SubscriptionDescription")
    when = emu.clock()["now"] + 600
    import email.utils

    sb.send_ok("st", b"later", props={"ScheduledEnqueueTimeUtc": email.utils.formatdate(when, usegmt=True)})
    assert counts(emu.request("GET", "/st")[2])["ScheduledMessageCount"] == 1
    assert emu.messages("st/subscriptions/a") == []
    put(emu, "/st/subscriptions/b", "SubscriptionDescription")  # exists when the message becomes active
    assert sb.receive_and_delete("st/subscriptions/a").status == 204
    emu.advance(601)
    assert sb.receive_and_delete("st/subscriptions/b").body == b"later"
    assert sb.receive_and_delete("st/subscriptions/a").body == b"later"
    assert counts(emu.request("GET", "/st")[2])["ScheduledMessageCount"] == 0


def test_new_settings_rules_and_held_messages_survive_a_restart(emulator_factory, tmp_path):
    import email.utils

    emu = emulator_factory(data_dir=str(tmp_path / "d"))
    sb = SB(emu)
    put(emu, "/pdest", "QueueDescription")
    put(
        emu,
        "/psrc",
        "QueueDescription",
        "<ForwardTo>pdest</ForwardTo><UserMetadata>kept</UserMetadata><AutoDeleteOnIdle>P1D</AutoDeleteOnIdle>",
    )
    put(emu, "/pt", "TopicDescription")
    put(emu, "/pt/subscriptions/s", "SubscriptionDescription")
    act = RULE % (
        '<Filter i:type="SqlFilter"><SqlExpression>1=1</SqlExpression></Filter>'
        "<Action i:type=\"SqlRuleAction\"><SqlExpression>SET sys.Label = 'set'</SqlExpression></Action>"
    )
    assert emu.request("PUT", "/pt/subscriptions/s/rules/act", act.encode(), ATOM_CT)[0] == 201
    assert emu.request("DELETE", "/pt/subscriptions/s/rules/$Default")[0] == 200
    when = emu.clock()["now"] + 600
    sb.send_ok("pt", b"held", props={"ScheduledEnqueueTimeUtc": email.utils.formatdate(when, usegmt=True)})
    emu.kill()
    emu.restart()
    d = desc(emu.request("GET", "/psrc")[2])
    assert d["UserMetadata"] == "kept" and d["ForwardTo"].endswith("/pdest") and d["AutoDeleteOnIdle"] == "P1D"
    sb.send_ok("psrc", b"on")
    assert sb.receive_and_delete("pdest").body == b"on"
    assert counts(emu.request("GET", "/pt")[2])["ScheduledMessageCount"] == 1
    emu.advance(601)
    m = sb.receive_and_delete("pt/subscriptions/s")
    assert m.body == b"held" and m.bp["Label"] == "set"


def test_config_json_rules_and_settings_obeyed_or_refused(emulator_factory, tmp_path):
    import json as _json

    cfg = {
        "UserConfig": {
            "Namespaces": [
                {
                    "Name": "sbemulatorns",
                    "Queues": [
                        {"Name": "cdest", "Properties": {}},
                        {
                            "Name": "csrc",
                            "Properties": {
                                "ForwardTo": "cdest",
                                "RequiresDuplicateDetection": True,
                                "DuplicateDetectionHistoryTimeWindow": "PT1M",
                            },
                        },
                    ],
                    "Topics": [
                        {
                            "Name": "ctopic",
                            "Properties": {},
                            "Subscriptions": [
                                {
                                    "Name": "red",
                                    "Properties": {"MaxDeliveryCount": 3},
                                    "Rules": [
                                        {
                                            "Name": "only-red",
                                            "Properties": {
                                                "FilterType": "Correlation",
                                                "CorrelationFilter": {"Properties": {"color": "red"}},
                                                "Action": {"SqlExpression": "SET sys.Label = 'r'"},
                                            },
                                        }
                                    ],
                                },
                                {
                                    "Name": "sql",
                                    "Properties": {},
                                    "Rules": [
                                        {
                                            "Name": "big",
                                            "Properties": {
                                                "FilterType": "Sql",
                                                "SqlFilter": {"SqlExpression": "n > 5"},
                                            },
                                        }
                                    ],
                                },
                            ],
                        }
                    ],
                }
            ]
        }
    }
    path = tmp_path / "Config.json"
    path.write_text(_json.dumps(cfg))
    emu = emulator_factory("--config", str(path))
    sb = SB(emu)
    sb.send_ok("csrc", b"a", props={"MessageId": "one"})
    sb.send_ok("csrc", b"a", props={"MessageId": "one"})
    assert len(emu.messages("cdest")) == 1 and emu.messages("csrc") == []
    sb.send_ok("ctopic", b"red", headers={"color": '"red"', "n": "9"})
    sb.send_ok("ctopic", b"blue", headers={"color": '"blue"', "n": "1"})
    m = sb.receive_and_delete("ctopic/subscriptions/red")
    assert m.body == b"red" and m.bp["Label"] == "r"
    assert sb.receive_and_delete("ctopic/subscriptions/red").status == 204
    assert [x["size"] > 0 for x in emu.messages("ctopic/subscriptions/sql")] == [True]
    cfg["UserConfig"]["Namespaces"][0]["Queues"][0]["Properties"] = {"NoSuchKnob": 1}
    path.write_text(_json.dumps(cfg))
    from peeklock.testing import EmulatorError

    with pytest.raises(EmulatorError) as err:
        emulator_factory("--config", str(path))
    assert "NoSuchKnob" in str(err.value)


def test_admin_json_takes_the_same_settings(fresh_emulator):
    emu, sb = fresh_emulator, SB(fresh_emulator)
    emu.create_queue("jdest")
    st = emu.create_queue(
        "jsrc",
        forward_to="jdest",
        user_metadata="m",
        auto_delete_on_idle=600,
        requires_duplicate_detection=True,
        duplicate_detection_history_time_window=30,
    )
    assert st["forward_to"] == "jdest" and st["auto_delete_on_idle"] == 600
    d = desc(emu.request("GET", "/jsrc")[2])
    assert d["UserMetadata"] == "m" and d["AutoDeleteOnIdle"] == "PT10M" and d["RequiresDuplicateDetection"] == "true"
    sb.send_ok("jsrc", b"x", props={"MessageId": "a"})
    sb.send_ok("jsrc", b"x", props={"MessageId": "a"})
    assert len(emu.messages("jdest")) == 1
    from peeklock.testing import EmulatorError

    for bad in ({"auto_delete_on_idle": 10}, {"status": "Paused"}, {"requires_duplicate_detection": "yes"}):
        with pytest.raises(EmulatorError):
            emu.create_queue("jbad", **bad)


def test_admin_json_rules_with_actions_and_parameters(fresh_emulator):
    emu, sb = fresh_emulator, SB(fresh_emulator)
    emu.create_topic("jt")
    st = emu.create_subscription(
        "jt",
        "s",
        rules={
            "r": {"sql": "color = @c", "parameters": {"@c": "red"}, "action": "SET sys.Label = 'a'; SET user.x = 1"}
        },
    )
    assert st["rules"]["r"]["action"] == "SET sys.Label = 'a'; SET user.x = 1"
    sb.send_ok("jt", b"red", headers={"color": '"red"'})
    sb.send_ok("jt", b"blue", headers={"color": '"blue"'})
    m = sb.receive_and_delete("jt/subscriptions/s")
    assert m.body == b"red" and m.bp["Label"] == "a" and m.headers["x"] == "1"
    assert sb.receive_and_delete("jt/subscriptions/s").status == 204
    _, _, data = emu.request("GET", "/jt/subscriptions/s/rules/r")
    assert (
        b"<Action i:type=\"SqlRuleAction\"><SqlExpression>SET sys.Label = 'a'; SET user.x = 1</SqlExpression>" in data
    )


def test_duplicate_detection_survives_a_restart(emulator_factory, tmp_path):
    emu = emulator_factory(data_dir=str(tmp_path / "d"))
    sb = SB(emu)
    put(
        emu,
        "/pdup",
        "QueueDescription",
        "<RequiresDuplicateDetection>true</RequiresDuplicateDetection>"
        "<DuplicateDetectionHistoryTimeWindow>PT1M</DuplicateDetectionHistoryTimeWindow>",
    )
    sb.send_ok("pdup", b"x", props={"MessageId": "once"})
    emu.kill()
    emu.restart()
    sb.send_ok("pdup", b"x", props={"MessageId": "once"})
    assert len(emu.messages("pdup")) == 1
    emu.advance(61)
    sb.send_ok("pdup", b"x", props={"MessageId": "once"})
    assert len(emu.messages("pdup")) == 2
    emu.reset()
    sb.send_ok("pdup", b"x", props={"MessageId": "once"})
    assert len(emu.messages("pdup")) == 1
