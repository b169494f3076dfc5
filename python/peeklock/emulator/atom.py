"""Atom management bodies: parse Queue/Topic/SubscriptionDescription, write entries and feeds."""
from __future__ import annotations

import datetime
import re
import xml.etree.ElementTree as ET
from typing import Dict, Iterable, Optional, Tuple
from xml.sax.saxutils import escape

from .broker import MAX_LOCK_DURATION, BrokerError, Entity, Settings
from .props import TTL_MAX
from .rules import CORRELATION_FIELDS, CorrelationFilter, FalseFilter, Filter, RuleError, SqlFilter

SB_NS = "http://schemas.microsoft.com/netservices/2010/10/servicebus/connect"
ATOM_NS = "http://www.w3.org/2005/Atom"
MAX_TIMESPAN_TEXT = "P10675199DT2H48M5.4775807S"

_DUR_RE = re.compile(r"^P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?)?$")


def parse_duration(text: str) -> Optional[float]:
    t = text.strip().upper()
    m = _DUR_RE.match(t)
    if not m or t in ("P", "PT") or t.endswith("T"):
        return None
    d, h, mi, s = m.groups()
    return int(d or 0) * 86400 + int(h or 0) * 3600 + int(mi or 0) * 60 + float(s or 0)


def format_duration(secs: float) -> str:
    if secs >= TTL_MAX:
        return MAX_TIMESPAN_TEXT
    whole = int(secs)
    frac = secs - whole
    d, rem = divmod(whole, 86400)
    h, rem = divmod(rem, 3600)
    m, s = divmod(rem, 60)
    out = "P"
    if d:
        out += "%dD" % d
    t = ""
    if h:
        t += "%dH" % h
    if m:
        t += "%dM" % m
    if s or frac or not (d or h or m):
        t += ("%d" % s if not frac else ("%.7f" % (s + frac)).rstrip("0")) + "S"
    if t:
        out += "T" + t
    return out


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def parse_description(body: bytes, default_kind: str, base: Settings) -> Tuple[str, Settings]:
    """Kind and settings from an Atom entry (empty body: defaults). Raises BrokerError(400)."""
    kind = default_kind
    s = base.copy()
    if not body or not body.strip():
        return kind, s
    if len(body) > 1024 * 1024:
        raise BrokerError(400, "The entity description is too large.")
    if b"<!DOCTYPE" in body.upper() or b"<!ENTITY" in body.upper():
        raise BrokerError(400, "The entity description must not contain a DTD.")
    try:
        root = ET.fromstring(body)
    except ET.ParseError as e:
        raise BrokerError(400, "The request body is not a valid Atom entry: %s." % e) from None
    desc = None
    for el in root.iter():
        if _local(el.tag) in ("QueueDescription", "TopicDescription", "SubscriptionDescription"):
            desc = el
            break
    if desc is None:
        if _local(root.tag) != "entry":
            raise BrokerError(400, "The request body is not an Atom entry.")
        return kind, s
    kind = {"QueueDescription": "queue", "TopicDescription": "topic",
            "SubscriptionDescription": "subscription"}[_local(desc.tag)]
    for child in desc:
        name, text = _local(child.tag), (child.text or "").strip()
        if not text:
            continue
        try:
            if name == "LockDuration":
                v = parse_duration(text)
                if v is None or v < 5 or v > MAX_LOCK_DURATION:
                    raise ValueError
                s.lock_duration = v
            elif name == "MaxDeliveryCount":
                v = int(text)
                if v < 1:
                    raise ValueError
                s.max_delivery_count = v
            elif name == "DefaultMessageTimeToLive":
                v = parse_duration(text)
                if v is None or v <= 0:
                    raise ValueError
                s.default_ttl = min(v, TTL_MAX)
            elif name == "DeadLetteringOnMessageExpiration":
                s.dl_on_expiration = _bool(text)
            elif name == "MaxSizeInMegabytes":
                v = int(text)
                if v < 1:
                    raise ValueError
                s.max_size_mb = v
            elif name == "MaxMessageSizeInKilobytes":
                v = int(text)
                if v < 1:
                    raise ValueError
                s.max_message_size = v * 1024
            elif name == "RequiresSession":
                s.requires_session = _bool(text)
            elif name == "RequiresDuplicateDetection":
                s.requires_duplicate_detection = _bool(text)
            elif name == "EnableBatchedOperations":
                s.enable_batched_operations = _bool(text)
        except ValueError:
            raise BrokerError(400, "The value '%s' of '%s' is invalid." % (text[:100], name)) from None
    return kind, s


def _bool(text: str) -> bool:
    t = text.lower()
    if t not in ("true", "false"):
        raise ValueError
    return t == "true"


def _iso(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _iso_frac(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]


def _b(v: bool) -> str:
    return "true" if v else "false"


def description_xml(ent: Entity) -> str:
    s = ent.settings
    size = ent.size_bytes
    count = len(ent.messages)
    if ent.kind == "queue":
        return ("<QueueDescription xmlns=\"%s\" xmlns:i=\"http://www.w3.org/2001/XMLSchema-instance\">"
                "<LockDuration>%s</LockDuration><MaxSizeInMegabytes>%d</MaxSizeInMegabytes>"
                "<RequiresDuplicateDetection>%s</RequiresDuplicateDetection><RequiresSession>%s</RequiresSession>"
                "<DefaultMessageTimeToLive>%s</DefaultMessageTimeToLive>"
                "<DeadLetteringOnMessageExpiration>%s</DeadLetteringOnMessageExpiration>"
                "<DuplicateDetectionHistoryTimeWindow>PT10M</DuplicateDetectionHistoryTimeWindow>"
                "<MaxDeliveryCount>%d</MaxDeliveryCount><EnableBatchedOperations>%s</EnableBatchedOperations>"
                "<SizeInBytes>%d</SizeInBytes><MessageCount>%d</MessageCount>"
                "<CreatedAt>%s</CreatedAt><UpdatedAt>%s</UpdatedAt>"
                "<IsAnonymousAccessible>false</IsAnonymousAccessible><AuthorizationRules></AuthorizationRules>"
                "<Status>Active</Status><SupportOrdering>true</SupportOrdering>"
                "<AutoDeleteOnIdle>%s</AutoDeleteOnIdle><EntityAvailabilityStatus>Available</EntityAvailabilityStatus>"
                "<MaxMessageSizeInKilobytes>%d</MaxMessageSizeInKilobytes>"
                "</QueueDescription>") % (
            SB_NS, format_duration(s.lock_duration), s.max_size_mb, _b(s.requires_duplicate_detection),
            _b(s.requires_session), format_duration(s.default_ttl), _b(s.dl_on_expiration),
            s.max_delivery_count, _b(s.enable_batched_operations), size, count, _iso_frac(ent.created),
            _iso_frac(ent.updated), MAX_TIMESPAN_TEXT,
            s.max_message_size // 1024)
    if ent.kind == "topic":
        return ("<TopicDescription xmlns=\"%s\" xmlns:i=\"http://www.w3.org/2001/XMLSchema-instance\">"
                "<DefaultMessageTimeToLive>%s</DefaultMessageTimeToLive><MaxSizeInMegabytes>%d</MaxSizeInMegabytes>"
                "<RequiresDuplicateDetection>%s</RequiresDuplicateDetection>"
                "<DuplicateDetectionHistoryTimeWindow>PT10M</DuplicateDetectionHistoryTimeWindow>"
                "<EnableBatchedOperations>%s</EnableBatchedOperations><SizeInBytes>0</SizeInBytes>"
                "<FilteringMessagesBeforePublishing>false</FilteringMessagesBeforePublishing>"
                "<IsAnonymousAccessible>false</IsAnonymousAccessible><AuthorizationRules></AuthorizationRules>"
                "<Status>Active</Status><SupportOrdering>true</SupportOrdering>"
                "<AutoDeleteOnIdle>%s</AutoDeleteOnIdle><EntityAvailabilityStatus>Available</EntityAvailabilityStatus>"
                "<SubscriptionCount>%d</SubscriptionCount><MaxMessageSizeInKilobytes>%d</MaxMessageSizeInKilobytes>"
                "</TopicDescription>") % (
            SB_NS, format_duration(s.default_ttl), s.max_size_mb, _b(s.requires_duplicate_detection),
            _b(s.enable_batched_operations), MAX_TIMESPAN_TEXT, len(ent.subscriptions),
            s.max_message_size // 1024)
    return ("<SubscriptionDescription xmlns=\"%s\" xmlns:i=\"http://www.w3.org/2001/XMLSchema-instance\">"
            "<LockDuration>%s</LockDuration><RequiresSession>%s</RequiresSession>"
            "<DefaultMessageTimeToLive>%s</DefaultMessageTimeToLive>"
            "<DeadLetteringOnMessageExpiration>%s</DeadLetteringOnMessageExpiration>"
            "<DeadLetteringOnFilterEvaluationExceptions>true</DeadLetteringOnFilterEvaluationExceptions>"
            "<MessageCount>%d</MessageCount><MaxDeliveryCount>%d</MaxDeliveryCount>"
            "<EnableBatchedOperations>%s</EnableBatchedOperations><Status>Active</Status>"
            "<AutoDeleteOnIdle>%s</AutoDeleteOnIdle><EntityAvailabilityStatus>Available</EntityAvailabilityStatus>"
            "</SubscriptionDescription>") % (
        SB_NS, format_duration(s.lock_duration), _b(s.requires_session), format_duration(s.default_ttl),
        _b(s.dl_on_expiration), count, s.max_delivery_count, _b(s.enable_batched_operations),
        MAX_TIMESPAN_TEXT)


def entry_xml(ent: Entity, base_url: str, namespace: str, query: str = "") -> str:
    url = "%s/%s%s" % (base_url, ent.name, ("?" + query) if query else "")
    title = ent.name.rsplit("/", 1)[-1]
    return ("<entry xmlns=\"%s\"><id>%s</id><title type=\"text\">%s</title><published>%s</published>"
            "<updated>%s</updated><author><name>%s</name></author><link rel=\"self\" href=\"%s\"/>"
            "<content type=\"application/xml\">%s</content></entry>") % (
        ATOM_NS, escape(url), escape(title), _iso(ent.created), _iso(ent.updated), escape(namespace),
        escape(url), description_xml(ent))


def feed_xml(title: str, url: str, entries: Iterable[Entity], base_url: str, namespace: str, now: float) -> str:
    inner = "".join(entry_xml(e, base_url, namespace) for e in entries)
    return ("<feed xmlns=\"%s\"><title type=\"text\">%s</title><id>%s</id><updated>%s</updated>"
            "<link rel=\"self\" href=\"%s\"/>%s</feed>") % (
        ATOM_NS, escape(title), escape(url), _iso(now), escape(url), inner)


def settings_from_admin(d: Dict, base: Settings) -> Settings:
    """Settings from the JSON of PUT /$admin/entities/{path}. Raises BrokerError(400)."""
    s = base.copy()

    def num(key, lo, hi, integer=False):
        v = d[key]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or (integer and not float(v).is_integer()) \
                or not (lo <= v <= hi):
            raise BrokerError(400, "'%s' must be a number between %s and %s." % (key, lo, hi))
        return v

    if d.get("lock_duration") is not None:
        s.lock_duration = float(num("lock_duration", 1, MAX_LOCK_DURATION))
    if d.get("max_delivery_count") is not None:
        s.max_delivery_count = int(num("max_delivery_count", 1, 2 ** 31 - 1, True))
    if d.get("default_message_time_to_live") is not None:
        s.default_ttl = float(num("default_message_time_to_live", 0.001, TTL_MAX))
    if d.get("dead_lettering_on_message_expiration") is not None:
        v = d["dead_lettering_on_message_expiration"]
        if not isinstance(v, bool):
            raise BrokerError(400, "'dead_lettering_on_message_expiration' must be true or false.")
        s.dl_on_expiration = v
    if d.get("max_message_size") is not None:
        s.max_message_size = int(num("max_message_size", 1, 100 * 1024 * 1024, True))
    if d.get("max_size_in_megabytes") is not None:
        s.max_size_mb = int(num("max_size_in_megabytes", 1, 81920, True))
    if d.get("requires_session") is not None:
        s.requires_session = bool(d["requires_session"])
    return s


XSI_TYPE = "{http://www.w3.org/2001/XMLSchema-instance}type"


def parse_rule(body: bytes) -> Filter:
    """The filter of a RuleDescription entry (no body or no Filter: TrueFilter)."""
    if not body or not body.strip():
        return Filter()
    if len(body) > 1024 * 1024 or b"<!DOCTYPE" in body.upper() or b"<!ENTITY" in body.upper():
        raise BrokerError(400, "The rule description is invalid.")
    try:
        root = ET.fromstring(body)
    except ET.ParseError as e:
        raise BrokerError(400, "The request body is not a valid Atom entry: %s." % e) from None
    flt = next((el for el in root.iter() if _local(el.tag) == "Filter"), None)
    if flt is None:
        return Filter()
    kind = (flt.get(XSI_TYPE) or "").split(":")[-1]
    try:
        if kind == "SqlFilter":
            expr = next((el.text for el in flt if _local(el.tag) == "SqlExpression"), None)
            return SqlFilter(expr or "")
        if kind == "CorrelationFilter":
            fields = {_local(el.tag): (el.text or "") for el in flt if _local(el.tag) in CORRELATION_FIELDS}
            return CorrelationFilter(fields, {})
        if kind in ("TrueFilter", ""):
            return Filter()
        if kind == "FalseFilter":
            return FalseFilter()
    except RuleError as e:
        raise BrokerError(400, str(e)) from None
    raise BrokerError(400, "The filter type '%s' is not supported." % kind[:50])


def _filter_xml(f: Filter) -> str:
    if isinstance(f, SqlFilter):
        return ('<Filter i:type="SqlFilter"><SqlExpression>%s</SqlExpression><CompatibilityLevel>20'
                '</CompatibilityLevel></Filter>') % escape(f.expression)
    if isinstance(f, CorrelationFilter):
        inner = "".join("<%s>%s</%s>" % (k, escape(str(v)), k) for k, v in f.fields.items())
        return '<Filter i:type="CorrelationFilter">%s</Filter>' % inner
    if isinstance(f, FalseFilter):
        return '<Filter i:type="FalseFilter"><SqlExpression>1=0</SqlExpression></Filter>'
    return '<Filter i:type="TrueFilter"><SqlExpression>1=1</SqlExpression></Filter>'


def rule_entry_xml(sub: Entity, name: str, base_url: str, namespace: str) -> str:
    url = "%s/%s/rules/%s" % (base_url, sub.name, name)
    return ("<entry xmlns=\"%s\"><id>%s</id><title type=\"text\">%s</title><published>%s</published>"
            "<updated>%s</updated><link rel=\"self\" href=\"%s\"/><content type=\"application/xml\">"
            "<RuleDescription xmlns=\"%s\" xmlns:i=\"http://www.w3.org/2001/XMLSchema-instance\">%s"
            "<Action i:type=\"EmptyRuleAction\"/><Name>%s</Name></RuleDescription></content></entry>") % (
        ATOM_NS, escape(url), escape(name), _iso(sub.created), _iso(sub.updated), escape(url), SB_NS,
        _filter_xml(sub.rules[name]), escape(name))


def rules_feed_xml(sub: Entity, base_url: str, namespace: str, now: float) -> str:
    url = "%s/%s/rules" % (base_url, sub.name)
    inner = "".join(rule_entry_xml(sub, n, base_url, namespace) for n in sorted(sub.rules))
    return ("<feed xmlns=\"%s\"><title type=\"text\">Rules</title><id>%s</id><updated>%s</updated>"
            "<link rel=\"self\" href=\"%s\"/>%s</feed>") % (ATOM_NS, escape(url), _iso(now), escape(url), inner)
