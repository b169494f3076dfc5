"""Subscription rules: SQL and correlation filters, over the Atom API and the admin API."""

import pytest

from conftest import SB
from peeklock.emulator.rules import Context, RuleError, SqlFilter

ATOM_CT = {"Content-Type": "application/atom+xml;type=entry;charset=utf-8"}


def rule_entry(filter_xml):
    return (
        '<entry xmlns="http://www.w3.org/2005/Atom"><content type="application/xml">'
        '<RuleDescription xmlns="http://schemas.microsoft.com/netservices/2010/10/servicebus/connect" '
        'xmlns:i="http://www.w3.org/2001/XMLSchema-instance">%s</RuleDescription></content></entry>' % filter_xml
    ).encode()


def ctx(custom=(), **system):
    return Context(system, system.pop("MessageId", "m"), system.pop("ContentType", None), list(custom))


@pytest.mark.parametrize(
    "expr,custom,system,expected",
    [
        ("property=1", [("property", "1")], {}, True),
        ("property=1", [("property", "2")], {}, False),
        ("property = 1", [], {}, False),
        ("color = 'red' AND size > 2.5", [("color", '"red"'), ("size", "3")], {}, True),
        ("color = 'red' AND NOT size > 2.5", [("color", '"red"'), ("size", "3")], {}, False),
        ("sys.Label = 'L1' OR x IS NULL", [], {"Label": "L2"}, True),
        ("sys.Label IN ('a', 'L1')", [], {"Label": "L1"}, True),
        ("name LIKE 'ab%'", [("name", '"abc"')], {}, True),
        ("name NOT LIKE 'ab_'", [("name", '"abcd"')], {}, True),
        ("EXISTS(flag) AND flag = TRUE", [("flag", "true")], {}, True),
        ("user.[odd name] = 'x'", [("odd name", '"x"')], {}, True),
        ("1=1", [], {}, True),
        ("sys.CorrelationId <> 'a'", [], {"CorrelationId": "b"}, True),
        ("n >= 10 AND n <= 20", [("n", "15")], {}, True),
        ("n = '15'", [("n", "15")], {}, False),
    ],
)
def test_sql_filter(expr, custom, system, expected):
    assert SqlFilter(expr).matches(ctx(custom, **system)) is expected


@pytest.mark.parametrize("bad", ["", "a =", "a = = 1", "(a = 1", "a = 1 garbage", "foo.bar = 1", "a # 1"])
def test_bad_sql_is_rejected(bad):
    with pytest.raises(RuleError):
        SqlFilter(bad)


def test_atom_rules_route_messages(fresh_emulator):
    emu, sb = fresh_emulator, SB(fresh_emulator)
    emu.create_topic("rt")
    emu.create_subscription("rt", "hot")
    emu.create_subscription("rt", "all")
    assert emu.request("DELETE", "/rt/subscriptions/hot/rules/$Default")[0] == 200
    st, _, body = emu.request(
        "PUT",
        "/rt/subscriptions/hot/rules/hotonly",
        rule_entry('<Filter i:type="SqlFilter"><SqlExpression>temp &gt; 30</SqlExpression></Filter>'),
        ATOM_CT,
    )
    assert st == 201 and b"temp &gt; 30" in body
    assert emu.request("PUT", "/rt/subscriptions/hot/rules/hotonly", rule_entry(""), ATOM_CT)[0] == 409
    st, _, body = emu.request(
        "PUT",
        "/rt/subscriptions/hot/rules/vip",
        rule_entry('<Filter i:type="CorrelationFilter"><CorrelationId>vip</CorrelationId></Filter>'),
        ATOM_CT,
    )
    assert st == 201
    st, _, body = emu.request("GET", "/rt/subscriptions/hot/rules")
    assert st == 200 and b"hotonly" in body and b"vip" in body and b"$Default" not in body
    sb.send_ok("rt", b"cold", headers={"temp": "10"})
    sb.send_ok("rt", b"hot", headers={"temp": "35"})
    sb.send_ok("rt", b"vip", props={"CorrelationId": "vip"})
    got = [sb.receive_and_delete("rt/subscriptions/hot").body for _ in range(3)]
    assert got == [b"hot", b"vip", b""]
    assert [sb.receive_and_delete("rt/subscriptions/all").body for _ in range(3)] == [b"cold", b"hot", b"vip"]
    bad = emu.request(
        "PUT",
        "/rt/subscriptions/hot/rules/bad",
        rule_entry('<Filter i:type="SqlFilter"><SqlExpression>temp &gt;</SqlExpression></Filter>'),
        ATOM_CT,
    )
    assert bad[0] == 400 and b"SQL filter" in bad[2]
    assert emu.request("DELETE", "/rt/subscriptions/hot/rules/nothere")[0] == 404


def test_admin_rules_and_persistence(emulator_factory, tmp_path):
    emu = emulator_factory("--topic", "pt", data_dir=str(tmp_path))
    emu.create_subscription("pt", "only2", rules={"two": {"sql": "n = 2"}})
    emu.create_subscription("pt", "none", rules={})
    emu.restart()
    assert emu.entity_state("pt/subscriptions/only2")["rules"] == {"two": {"sql": "n = 2"}}
    sb = SB(emu)
    for n in (1, 2, 3):
        sb.send_ok("pt", b"%d" % n, headers={"n": str(n)})
    assert sb.receive_and_delete("pt/subscriptions/only2").body == b"2"
    assert sb.receive_and_delete("pt/subscriptions/only2").status == 204
    assert sb.receive_and_delete("pt/subscriptions/none").status == 204
    import json

    st, _, _ = emu.request(
        "PUT",
        "/$admin/entities/pt/subscriptions/x",
        json.dumps({"kind": "subscription", "rules": {"r": {"sql": "a ="}}}).encode(),
        auth=False,
    )
    assert st == 400
