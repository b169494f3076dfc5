"""Drives the official Python admin client (azure-servicebus 7.x ServiceBusAdministrationClient,
sync or aio) through a full scenario against a peeklock emulator served over HTTPS.

    admin_scenario.py sync|aio CONNECTION_STRING CERT_PATH

Run by tests/python/emulator/test_compat_admin_python.py with the SDK on PYTHONPATH (it is kept
apart from .venv, where the legacy azure-servicebus 0.21.1 lives). Messages are put in place
with plain REST calls (the SDK's data plane speaks AMQP), the clock moved with /$admin/.
Prints a JSON summary; any mismatch raises (exit status 1).
"""

import asyncio
import base64
import datetime
import hashlib
import hmac
import inspect
import json
import sys
import time
import urllib.parse
import warnings

import requests
from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.servicebus.management import (
    CorrelationRuleFilter,
    FalseRuleFilter,
    SqlRuleAction,
    SqlRuleFilter,
    TrueRuleFilter,
)

MODE, CONN, CERT = sys.argv[1], sys.argv[2], sys.argv[3]
FIELDS = dict(p.split("=", 1) for p in CONN.split(";") if "=" in p)
BASE = "https://" + FIELDS["Endpoint"].split("://", 1)[1].rstrip("/")
P = "a" if MODE == "aio" else "s"  # entity name prefix: both modes may share an emulator


def sas(uri):
    se = int(time.time()) + 600
    sr = urllib.parse.quote(uri, safe="")
    sig = base64.b64encode(
        hmac.new(FIELDS["SharedAccessKey"].encode(), ("%s\n%d" % (sr, se)).encode(), hashlib.sha256).digest()
    ).decode()
    return "SharedAccessSignature sr=%s&sig=%s&se=%d&skn=%s" % (
        sr,
        urllib.parse.quote(sig, safe=""),
        se,
        FIELDS["SharedAccessKeyName"],
    )


def rest(method, path, body=b"", headers=None, expect=None):
    url = BASE + path
    h = {"Authorization": sas(url)}
    h.update(headers or {})
    r = requests.request(method, url, data=body, headers=h, verify=CERT, timeout=30)
    if expect is not None:
        assert r.status_code == expect, (method, path, r.status_code, r.text[:300])
    return r


def send(entity, body=b"x", props=None, custom=None):
    h = {"Content-Type": "text/plain"}
    if props:
        h["BrokerProperties"] = json.dumps(props)
    h.update(custom or {})
    rest("POST", "/%s/messages" % entity, body, h, expect=201)


def emulator_now():
    """The emulator's clock (moved forward by /$admin/clock/advance, never back)."""
    return datetime.datetime.fromtimestamp(admin("GET", "clock")["now"], datetime.timezone.utc)


def http_date(dt):
    return dt.strftime("%a, %d %b %Y %H:%M:%S GMT")


def admin(method, path, obj=None):
    r = requests.request(
        method, BASE + "/$admin/" + path, data=json.dumps(obj) if obj is not None else b"", verify=CERT, timeout=30
    )
    assert r.status_code < 300, r.text
    return r.json()


async def aw(x):
    return await x if inspect.isawaitable(x) else x


async def collect(pager):
    if hasattr(pager, "__aiter__"):
        return [x async for x in pager]
    return list(pager)


def aware_utc(dt, what):
    assert dt is not None and dt.tzinfo is not None and dt.utcoffset() == datetime.timedelta(0), (what, dt)


async def scenario(c, out):
    # ----- namespace
    ns = await aw(c.get_namespace_properties())
    assert ns.messaging_sku == "Standard" and ns.name, ns
    aware_utc(ns.created_at_utc, "namespace created")
    out["namespace"] = ns.name

    # ----- queue: create with every kind of setting, get, update, runtime
    qn = P + "-adm-q"
    q = await aw(
        c.create_queue(
            qn,
            lock_duration=datetime.timedelta(seconds=30),
            max_delivery_count=1,
            default_message_time_to_live=datetime.timedelta(hours=1),
            dead_lettering_on_message_expiration=True,
            max_size_in_megabytes=2048,
            requires_duplicate_detection=True,
            duplicate_detection_history_time_window=datetime.timedelta(minutes=2),
            auto_delete_on_idle=datetime.timedelta(days=2),
            user_metadata="first",
            enable_batched_operations=True,
            max_message_size_in_kilobytes=512,
        )
    )
    assert q.name == qn and q.lock_duration == datetime.timedelta(seconds=30) and q.max_delivery_count == 1
    assert q.requires_duplicate_detection and q.duplicate_detection_history_time_window == datetime.timedelta(minutes=2)
    assert q.user_metadata == "first" and q.auto_delete_on_idle == datetime.timedelta(days=2)
    assert q.enable_partitioning is False and q.enable_express is False and q.status == "Active"
    assert q.max_message_size_in_kilobytes == 512
    try:
        await aw(c.create_queue(qn))
        raise AssertionError("a second create_queue succeeded")
    except ResourceExistsError:
        pass
    got = await aw(c.get_queue(qn))
    assert got.lock_duration == datetime.timedelta(seconds=30) and got.dead_lettering_on_message_expiration
    got.lock_duration = datetime.timedelta(seconds=45)
    got.user_metadata = "second"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        await aw(c.update_queue(got))
    noisy = [str(w.message) for w in caught if "azure" in (w.filename or "")]
    assert not noisy, noisy
    got = await aw(c.get_queue(qn))
    assert got.lock_duration == datetime.timedelta(seconds=45) and got.user_metadata == "second"

    # one dead-lettered (max delivery count 1: an unlock dead-letters), one active, one scheduled
    send(qn, b"to-dlq", {"MessageId": "m-dlq"})
    r = rest("POST", "/%s/messages/head?timeout=5" % qn, expect=201)
    rest("PUT", urllib.parse.urlparse(r.headers["Location"]).path, expect=200)
    send(qn, b"active", {"MessageId": "m-active"})
    send(qn, b"active again", {"MessageId": "m-active"})  # duplicate: dropped
    send(
        qn,
        b"later",
        {"MessageId": "m-sched", "ScheduledEnqueueTimeUtc": http_date(emulator_now() + datetime.timedelta(minutes=30))},
    )
    rt = await aw(c.get_queue_runtime_properties(qn))
    counts = (
        rt.active_message_count,
        rt.dead_letter_message_count,
        rt.scheduled_message_count,
        rt.total_message_count,
        rt.transfer_message_count,
        rt.transfer_dead_letter_message_count,
    )
    assert counts == (1, 1, 1, 3, 0, 0), counts
    for what in ("created_at_utc", "updated_at_utc", "accessed_at_utc"):
        aware_utc(getattr(rt, what), what)
    assert rt.updated_at_utc >= rt.created_at_utc and rt.size_in_bytes > 0
    out["queue_counts"] = list(counts)

    # ----- forwarding
    dest, src = P + "-adm-dest", P + "-adm-src"
    await aw(c.create_queue(dest))
    s = await aw(c.create_queue(src, forward_to=dest, forward_dead_lettered_messages_to=dest))
    assert s.forward_to and s.forward_to.endswith("/" + dest), s.forward_to
    assert s.forward_dead_lettered_messages_to.endswith("/" + dest)
    send(src, b"forwarded")
    rs, rd = await aw(c.get_queue_runtime_properties(src)), await aw(c.get_queue_runtime_properties(dest))
    assert (rs.total_message_count, rd.active_message_count) == (0, 1), (
        rs.total_message_count,
        rd.active_message_count,
    )

    # ----- list past 100, paged
    bulk = ["%s-bulk-%03d" % (P, i) for i in range(101)]
    for n in bulk:
        await aw(c.create_queue(n))
    names = [x.name for x in await collect(c.list_queues())]
    assert all(n in names for n in bulk + [qn, src, dest]), len(names)
    assert len(names) == len(set(names))
    runtime = {x.name: x for x in await collect(c.list_queues_runtime_properties())}
    assert runtime[qn].total_message_count == 3 and runtime[bulk[100]].total_message_count == 0
    out["listed_queues"] = len([n for n in names if n.startswith(P + "-bulk-")])
    for n in bulk:
        await aw(c.delete_queue(n))

    # ----- topic, subscriptions, rules
    tn = P + "-adm-t"
    t = await aw(
        c.create_topic(
            tn,
            default_message_time_to_live=datetime.timedelta(hours=2),
            max_size_in_megabytes=2048,
            requires_duplicate_detection=False,
            user_metadata="topic meta",
            enable_batched_operations=True,
        )
    )
    assert t.name == tn and t.user_metadata == "topic meta" and t.enable_partitioning is False
    t = await aw(c.get_topic(tn))
    t.default_message_time_to_live = datetime.timedelta(hours=3)
    await aw(c.update_topic(t))
    assert (await aw(c.get_topic(tn))).default_message_time_to_live == datetime.timedelta(hours=3)
    sub = await aw(
        c.create_subscription(
            tn,
            "Sub1",
            max_delivery_count=5,
            lock_duration=datetime.timedelta(seconds=20),
            user_metadata="sub meta",
            dead_lettering_on_filter_evaluation_exceptions=False,
        )
    )
    assert sub.name == "Sub1" and sub.max_delivery_count == 5 and sub.user_metadata == "sub meta"
    assert sub.dead_lettering_on_filter_evaluation_exceptions is False
    await aw(c.create_subscription(tn, "Sub2"))
    sub = await aw(c.get_subscription(tn, "Sub1"))
    sub.max_delivery_count = 7
    await aw(c.update_subscription(tn, sub))
    assert (await aw(c.get_subscription(tn, "Sub1"))).max_delivery_count == 7
    subs = [x.name for x in await collect(c.list_subscriptions(tn))]
    assert subs == ["Sub1", "Sub2"], subs

    await aw(
        c.create_rule(
            tn,
            "Sub2",
            "sql",
            filter=SqlRuleFilter("color = @c AND size > @n", {"@c": "red", "@n": 2}),
            action=SqlRuleAction("SET sys.Label = 'big-red'; SET user.seen = true; REMOVE user.size"),
        )
    )
    await aw(
        c.create_rule(
            tn,
            "Sub2",
            "corr",
            filter=CorrelationRuleFilter(
                correlation_id="cid", label="L", properties={"kind": "blue", "n": 7, "ok": True, "f": 1.5}
            ),
        )
    )
    await aw(c.create_rule(tn, "Sub2", "all", filter=TrueRuleFilter()))
    await aw(c.create_rule(tn, "Sub2", "none", filter=FalseRuleFilter()))
    await aw(c.delete_rule(tn, "Sub2", "$Default"))
    await aw(c.delete_rule(tn, "Sub2", "all"))
    r = await aw(c.get_rule(tn, "Sub2", "sql"))
    assert r.name == "sql" and r.filter.sql_expression == "color = @c AND size > @n"
    assert r.filter.parameters == {"@c": "red", "@n": 2}, r.filter.parameters
    assert r.action.sql_expression.startswith("SET sys.Label")
    aware_utc(r.created_at_utc, "rule created")
    r = await aw(c.get_rule(tn, "Sub2", "corr"))
    assert isinstance(r.filter, CorrelationRuleFilter) and r.filter.correlation_id == "cid" and r.filter.label == "L"
    assert r.filter.properties == {"kind": "blue", "n": 7, "ok": True, "f": 1.5}, r.filter.properties
    r.filter.properties["kind"] = "green"
    await aw(c.update_rule(tn, "Sub2", r))
    assert (await aw(c.get_rule(tn, "Sub2", "corr"))).filter.properties["kind"] == "green"
    assert isinstance((await aw(c.get_rule(tn, "Sub2", "none"))).filter, FalseRuleFilter)
    rules = [x.name for x in await collect(c.list_rules(tn, "Sub2", max_page_size=2))]
    assert sorted(rules) == ["corr", "none", "sql"], rules
    defaults = await collect(c.list_rules(tn, "Sub1"))
    assert [x.name for x in defaults] == ["$Default"] and isinstance(defaults[0].filter, TrueRuleFilter)
    out["rules"] = sorted(rules)

    # messages through the rules: the SQL rule's action changes the copy Sub2 gets
    send(tn, b"red one", {"Label": "orig"}, {"color": '"red"', "size": "5"})
    send(
        tn,
        b"green corr",
        {"CorrelationId": "cid", "Label": "L"},
        {"kind": '"green"', "n": "7", "ok": "true", "f": "1.5"},
    )
    send(tn, b"nobody", {}, {"color": '"blue"'})
    got = rest("DELETE", "/%s/subscriptions/Sub2/messages/head?timeout=5" % tn, expect=200)
    bp = json.loads(got.headers["BrokerProperties"])
    assert got.content == b"red one" and bp["Label"] == "big-red", (got.content, bp)
    assert got.headers.get("seen") == "true" and "size" not in got.headers and got.headers.get("color") == '"red"'
    srt = await aw(c.get_subscription_runtime_properties(tn, "Sub2"))
    assert (srt.active_message_count, srt.total_message_count) == (1, 1), srt.total_message_count
    srt = await aw(c.get_subscription_runtime_properties(tn, "Sub1"))
    assert srt.active_message_count == 3 and srt.dead_letter_message_count == 0
    aware_utc(srt.accessed_at_utc, "subscription accessed")

    # a scheduled message waits in the topic, reaching the subscriptions when due
    send(tn, b"scheduled", {"ScheduledEnqueueTimeUtc": http_date(emulator_now() + datetime.timedelta(hours=1))})
    trt = await aw(c.get_topic_runtime_properties(tn))
    assert (trt.scheduled_message_count, trt.subscription_count) == (1, 2), trt.scheduled_message_count
    assert (await aw(c.get_subscription_runtime_properties(tn, "Sub1"))).active_message_count == 3
    admin("POST", "clock/advance", {"seconds": 3700})
    trt = await aw(c.get_topic_runtime_properties(tn))
    assert trt.scheduled_message_count == 0
    assert (await aw(c.get_subscription_runtime_properties(tn, "Sub1"))).active_message_count == 4
    topics = {x.name: x for x in await collect(c.list_topics_runtime_properties())}
    assert topics[tn].subscription_count == 2
    subs_rt = {x.name: x for x in await collect(c.list_subscriptions_runtime_properties(tn))}
    assert subs_rt["Sub1"].total_message_count == 4
    out["topic"] = {"subscriptions": sorted(subs_rt), "sub1_messages": subs_rt["Sub1"].total_message_count}

    # ----- delete everything
    await aw(c.delete_rule(tn, "Sub2", "none"))
    await aw(c.delete_subscription(tn, "Sub2"))
    await aw(c.delete_topic(tn))
    for n in (qn, src, dest):
        await aw(c.delete_queue(n))
    for getter in (lambda: c.get_queue(qn), lambda: c.get_topic(tn), lambda: c.get_subscription(tn, "Sub1")):
        try:
            await aw(getter())
            raise AssertionError("an entity is still there after its delete")
        except ResourceNotFoundError:
            pass
    out["done"] = True


async def main():
    out = {"mode": MODE}
    if MODE == "aio":
        from azure.servicebus.aio.management import ServiceBusAdministrationClient as Aio

        async with Aio.from_connection_string(CONN, connection_verify=CERT) as c:
            await scenario(c, out)
    else:
        from azure.servicebus.management import ServiceBusAdministrationClient

        with ServiceBusAdministrationClient.from_connection_string(CONN, connection_verify=CERT) as c:
            await scenario(c, out)
    print(json.dumps(out))


if __name__ == "__main__":
    asyncio.run(main())
