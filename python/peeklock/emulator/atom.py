"""Atom management bodies: parse Queue/Topic/SubscriptionDescription, write entries and feeds."""

from __future__ import annotations

import datetime
import re
import xml.etree.ElementTree as ET
from typing import Any, Dict, Iterable, Optional, Tuple
from xml.sax.saxutils import escape

from .model import MAX_LOCK_DURATION, MIN_AUTO_DELETE, BrokerError, Entity, Settings
from .props import TTL_MAX
from .rules import CORRELATION_FIELDS, CorrelationFilter, FalseFilter, Filter, RuleError, SqlAction, SqlFilter

SB_NS = "http://schemas.microsoft.com/netservices/2010/10/servicebus/connect"
COUNT_NS = "http://schemas.microsoft.com/netservices/2011/06/servicebus"
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


# Elements of a description that the service computes: a client sends them back on update
# (the SDKs send the whole description they got) and they are ignored.
_READ_ONLY = frozenset(
    """SizeInBytes MessageCount CreatedAt UpdatedAt AccessedAt CountDetails IsAnonymousAccessible
EntityAvailabilityStatus SubscriptionCount SqlFilterCount CorrelationFilterCount AuthorizationRules
FilteringMessagesBeforePublishing EnableSubscriptionPartitioning""".split()
)

MAX_DESCRIPTION = 1024 * 1024  # bytes of an entity or rule description
MIN_DUP_WINDOW = 20.0
MAX_DUP_WINDOW = 7 * 86400.0
MAX_USER_METADATA = 1024
STATUSES = ("Active", "Disabled", "SendDisabled", "ReceiveDisabled")


def entity_path_of(text: str) -> str:
    """An entity named by ForwardTo: a path or a URL of this namespace (``sb://host/q``)."""
    t = text.strip()
    if "://" in t:
        t = t.split("://", 1)[1]
        t = t.partition("/")[2]
    return t.partition("?")[0].strip("/")


def parse_description(
    body: bytes, default_kind: str, base: Settings
) -> Tuple[str, Settings, Optional[Tuple[str, Filter]]]:
    """Kind, settings and (subscriptions) the DefaultRuleDescription's name and rule of an Atom entry (empty body:
    defaults). Every setting is taken and obeyed, or refused: raises BrokerError(400)."""
    kind = default_kind
    s = base.copy()
    if not body or not body.strip():
        return kind, s, None
    root = _parse_xml(body, "entity description")
    desc = None
    for el in root.iter():
        if _local(el.tag) in ("QueueDescription", "TopicDescription", "SubscriptionDescription"):
            desc = el
            break
    if desc is None:
        if _local(root.tag) != "entry":
            raise BrokerError(400, "The request body is not an Atom entry.")
        return kind, s, None
    kind = {"QueueDescription": "queue", "TopicDescription": "topic", "SubscriptionDescription": "subscription"}[
        _local(desc.tag)
    ]
    default_rule = None
    for child in desc:
        if not child.tag.startswith("{" + SB_NS + "}"):
            continue  # CountDetails' members and other namespaces: computed values
        name, text = _local(child.tag), (child.text or "").strip()
        if name == "AuthorizationRules":
            if len(child):
                raise BrokerError(
                    400,
                    "Entity-level authorization rules are not supported by the emulator; "
                    "use the namespace keys (--key-name/--key, --extra-key).",
                )
            continue
        if name == "DefaultRuleDescription" and kind == "subscription":
            name_el = _child(child, "Name")
            rule_name = ((name_el.text or "").strip() if name_el is not None else "") or "$Default"
            if len(rule_name) > 50 or "/" in rule_name:
                raise BrokerError(400, "The rule name '%s' is invalid." % rule_name[:60])
            default_rule = (rule_name, rule_from_element(child))
            continue
        if name in _READ_ONLY:
            continue
        if not text and name not in ("ForwardTo", "ForwardDeadLetteredMessagesTo", "UserMetadata"):
            continue
        try:
            apply_setting(s, kind, name, text)
        except ValueError:
            raise BrokerError(400, "The value '%s' of '%s' is invalid." % (text[:100], name)) from None
    return kind, s, default_rule


def apply_setting(s: Settings, kind: str, name: str, text: str) -> None:
    """Sets the Atom property ``name`` (its text, as the service writes it) on the
    settings of an entity of ``kind``; raises ValueError (or BrokerError with the
    service's message) for a value the service refuses. Also used for a config
    file's entities (config.py)."""
    if name == "LockDuration" and kind != "topic":
        v = parse_duration(text)
        if v is None or v < 5 or v > MAX_LOCK_DURATION:
            raise ValueError
        s.lock_duration = v
    elif name == "MaxDeliveryCount" and kind != "topic":
        v = int(text)
        if v < 1:
            raise ValueError
        s.max_delivery_count = v
    elif name == "DefaultMessageTimeToLive":
        v = parse_duration(text)
        if v is None or v <= 0:
            raise ValueError
        s.default_ttl = min(v, TTL_MAX)
    elif name == "DeadLetteringOnMessageExpiration" and kind != "topic":
        s.dl_on_expiration = _bool(text)
    elif name == "DeadLetteringOnFilterEvaluationExceptions" and kind == "subscription":
        s.dl_on_filter_exceptions = _bool(text)
    elif name == "MaxSizeInMegabytes" and kind != "subscription":
        v = int(text)
        if v < 1:
            raise ValueError
        s.max_size_mb = v
    elif name == "MaxMessageSizeInKilobytes" and kind != "subscription":
        v = int(text)
        if not 1 <= v <= 102400:
            raise ValueError
        s.max_message_size = v * 1024
    elif name == "RequiresSession" and kind != "topic":
        s.requires_session = _bool(text)
    elif name == "RequiresDuplicateDetection" and kind != "subscription":
        s.requires_duplicate_detection = _bool(text)
    elif name == "DuplicateDetectionHistoryTimeWindow" and kind != "subscription":
        v = parse_duration(text)
        if v is None or not MIN_DUP_WINDOW <= v <= MAX_DUP_WINDOW:
            raise BrokerError(400, "'DuplicateDetectionHistoryTimeWindow' must be between 20 seconds and 7 days.")
        s.dup_window = v
    elif name == "EnableBatchedOperations":
        s.enable_batched_operations = _bool(text)
    elif name == "AutoDeleteOnIdle":
        v = parse_duration(text)
        if v is None or v < MIN_AUTO_DELETE:
            raise BrokerError(400, "'AutoDeleteOnIdle' must be at least 5 minutes.")
        s.auto_delete_on_idle = min(v, TTL_MAX)
    elif name == "ForwardTo" and kind != "topic":
        s.forward_to = entity_path_of(text) or None
    elif name == "ForwardDeadLetteredMessagesTo" and kind != "topic":
        s.forward_dlq_to = entity_path_of(text) or None
    elif name == "UserMetadata":
        if len(text) > MAX_USER_METADATA:
            raise BrokerError(400, "'UserMetadata' is longer than 1024 characters.")
        s.user_metadata = text or None
    elif name == "EnablePartitioning" and kind != "subscription":
        s.enable_partitioning = _bool(text)
    elif name == "EnableExpress" and kind != "subscription":
        s.enable_express = _bool(text)
    elif name == "SupportOrdering" and kind != "subscription":
        s.support_ordering = _bool(text)
    elif name == "Status":
        if text not in STATUSES:
            raise ValueError
        s.status = text
    else:
        raise BrokerError(400, "The property '%s' is not supported on a %s by the emulator." % (name[:60], kind))


def _parse_xml(body: bytes, what: str) -> ET.Element:
    if len(body) > 1024 * 1024:
        raise BrokerError(400, "The %s is too large." % what)
    if b"<!DOCTYPE" in body.upper() or b"<!ENTITY" in body.upper():
        raise BrokerError(400, "The %s must not contain a DTD." % what)
    try:
        return ET.fromstring(body)
    except ET.ParseError as e:
        raise BrokerError(400, "The request body is not a valid Atom entry: %s." % e) from None


def _bool(text: str) -> bool:
    t = text.lower()
    if t not in ("true", "false"):
        raise ValueError
    return t == "true"


def iso(ts: float) -> str:
    """UTC with 7 fractional digits and a Z, as the service writes dates: 2022-02-03T19:34:05.4983039Z."""
    dt = datetime.datetime.fromtimestamp(ts, datetime.timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + "%06d0Z" % dt.microsecond


def iso_seconds(ts: float) -> str:
    """Atom's own published/updated: whole seconds and a Z (recorded traffic)."""
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _b(v: bool) -> str:
    return "true" if v else "false"


def _el(name: str, value: str) -> str:
    return "<%s>%s</%s>" % (name, value, name)


def _count_details(c: Dict[str, int]) -> str:
    return (
        '<CountDetails xmlns:d2p1="%s"><d2p1:ActiveMessageCount>%d</d2p1:ActiveMessageCount>'
        "<d2p1:DeadLetterMessageCount>%d</d2p1:DeadLetterMessageCount>"
        "<d2p1:ScheduledMessageCount>%d</d2p1:ScheduledMessageCount>"
        "<d2p1:TransferMessageCount>0</d2p1:TransferMessageCount>"
        "<d2p1:TransferDeadLetterMessageCount>0</d2p1:TransferDeadLetterMessageCount></CountDetails>"
    ) % (COUNT_NS, c["active"], c["dead_letter"], c["scheduled"])


def _forward_url(base_url: str, path: Optional[str]) -> str:
    return escape("%s/%s" % (base_url, path)) if path else ""


def description_xml(ent: Entity, counts: Dict[str, int], base_url: str) -> str:
    """The Queue/Topic/SubscriptionDescription of an entity, every field the service sends."""
    s = ent.settings
    total = counts["active"] + counts["dead_letter"] + counts["scheduled"]
    common_times = (
        _el("CreatedAt", iso(ent.created)) + _el("UpdatedAt", iso(ent.updated)) + _el("AccessedAt", iso(ent.accessed))
    )
    meta = _el("UserMetadata", escape(s.user_metadata)) if s.user_metadata else ""
    fwd = _el("ForwardTo", _forward_url(base_url, s.forward_to)) if s.forward_to else ""
    fwd_dl = _el("ForwardDeadLetteredMessagesTo", _forward_url(base_url, s.forward_dlq_to)) if s.forward_dlq_to else ""
    head = '<%s xmlns="%s" xmlns:i="http://www.w3.org/2001/XMLSchema-instance">'
    if ent.kind == "queue":
        size = ent.size_bytes + (ent.dlq.size_bytes if ent.dlq is not None else 0)
        return "".join(
            [
                head % ("QueueDescription", SB_NS),
                _el("LockDuration", format_duration(s.lock_duration)),
                _el("MaxSizeInMegabytes", str(s.max_size_mb)),
                _el("RequiresDuplicateDetection", _b(s.requires_duplicate_detection)),
                _el("RequiresSession", _b(s.requires_session)),
                _el("DefaultMessageTimeToLive", format_duration(s.default_ttl)),
                _el("DeadLetteringOnMessageExpiration", _b(s.dl_on_expiration)),
                _el("DuplicateDetectionHistoryTimeWindow", format_duration(s.dup_window)),
                _el("MaxDeliveryCount", str(s.max_delivery_count)),
                _el("EnableBatchedOperations", _b(s.enable_batched_operations)),
                _el("SizeInBytes", str(size)),
                _el("MessageCount", str(total)),
                _el("IsAnonymousAccessible", "false"),
                "<AuthorizationRules></AuthorizationRules>",
                _el("Status", s.status),
                fwd,
                meta,
                common_times,
                _el("SupportOrdering", _b(s.support_ordering)),
                _count_details(counts),
                _el("AutoDeleteOnIdle", format_duration(s.auto_delete_on_idle)),
                _el("EnablePartitioning", _b(s.enable_partitioning)),
                _el("EntityAvailabilityStatus", "Available"),
                fwd_dl,
                _el("EnableExpress", _b(s.enable_express)),
                _el("MaxMessageSizeInKilobytes", str(s.max_message_size // 1024)),
                "</QueueDescription>",
            ]
        )
    if ent.kind == "topic":
        sql = corr = 0
        for sub in ent.subscriptions.values():
            for f in sub.rules.values():
                if isinstance(f, CorrelationFilter):
                    corr += 1
                elif isinstance(f, SqlFilter):
                    sql += 1
        size = ent.size_bytes
        return "".join(
            [
                head % ("TopicDescription", SB_NS),
                _el("DefaultMessageTimeToLive", format_duration(s.default_ttl)),
                _el("MaxSizeInMegabytes", str(s.max_size_mb)),
                _el("RequiresDuplicateDetection", _b(s.requires_duplicate_detection)),
                _el("DuplicateDetectionHistoryTimeWindow", format_duration(s.dup_window)),
                _el("EnableBatchedOperations", _b(s.enable_batched_operations)),
                _el("SizeInBytes", str(size)),
                _el("FilteringMessagesBeforePublishing", "false"),
                _el("IsAnonymousAccessible", "false"),
                "<AuthorizationRules></AuthorizationRules>",
                _el("Status", s.status),
                common_times,
                _el("SupportOrdering", _b(s.support_ordering)),
                _count_details(counts),
                _el("SubscriptionCount", str(len(ent.subscriptions))),
                _el("SqlFilterCount", str(sql)),
                _el("CorrelationFilterCount", str(corr)),
                _el("AutoDeleteOnIdle", format_duration(s.auto_delete_on_idle)),
                _el("EnablePartitioning", _b(s.enable_partitioning)),
                _el("EntityAvailabilityStatus", "Available"),
                _el("EnableSubscriptionPartitioning", "false"),
                _el("EnableExpress", _b(s.enable_express)),
                meta,
                _el("MaxMessageSizeInKilobytes", str(s.max_message_size // 1024)),
                "</TopicDescription>",
            ]
        )
    return "".join(
        [
            head % ("SubscriptionDescription", SB_NS),
            _el("LockDuration", format_duration(s.lock_duration)),
            _el("RequiresSession", _b(s.requires_session)),
            _el("DefaultMessageTimeToLive", format_duration(s.default_ttl)),
            _el("DeadLetteringOnMessageExpiration", _b(s.dl_on_expiration)),
            _el("DeadLetteringOnFilterEvaluationExceptions", _b(s.dl_on_filter_exceptions)),
            _el("MessageCount", str(total)),
            _el("MaxDeliveryCount", str(s.max_delivery_count)),
            _el("EnableBatchedOperations", _b(s.enable_batched_operations)),
            _el("Status", s.status),
            fwd,
            common_times,
            _count_details(counts),
            meta,
            fwd_dl,
            _el("AutoDeleteOnIdle", format_duration(s.auto_delete_on_idle)),
            _el("EntityAvailabilityStatus", "Available"),
            "</SubscriptionDescription>",
        ]
    )


def _query_suffix(query: str) -> str:
    return ("?" + query) if query else ""


def _entry(
    url: str,
    title: str,
    published: float,
    updated: float,
    namespace: Optional[str],
    content: str,
    base: Optional[str] = None,
) -> str:
    author = "<author><name>%s</name></author>" % escape(namespace) if namespace is not None else ""
    xml_base = ' xml:base="%s"' % escape(base) if base else ""
    return (
        '<entry xmlns="%s"%s><id>%s</id><title type="text">%s</title><published>%s</published>'
        '<updated>%s</updated>%s<link rel="self" href="%s"/>'
        '<content type="application/xml">%s</content></entry>'
    ) % (
        ATOM_NS,
        xml_base,
        escape(url),
        escape(title),
        iso_seconds(published),
        iso_seconds(updated),
        author,
        escape(url),
        content,
    )


def entry_xml(ent: Entity, counts: Dict[str, int], base_url: str, namespace: str) -> str:
    url = "%s/%s" % (base_url, ent.display_path)
    title = ent.name.rsplit("/", 1)[-1] if ent.kind == "subscription" else ent.name
    return _entry(url, title, ent.created, ent.updated, namespace, description_xml(ent, counts, base_url))


def feed_xml(title: str, url: str, entries: Iterable[str], next_url: Optional[str], now: float) -> str:
    """A feed of entries already written; a rel="next" link (after self) when more remain."""
    nxt = '<link rel="next" href="%s"/>' % escape(next_url) if next_url else ""
    return (
        '<feed xmlns="%s"><title type="text">%s</title><id>%s</id><updated>%s</updated>'
        '<link rel="self" href="%s"/>%s%s</feed>'
    ) % (ATOM_NS, escape(title), escape(url), iso_seconds(now), escape(url), nxt, "".join(entries))


def namespace_entry_xml(base_url: str, namespace: str, created: float, now: float) -> str:
    info = (
        '<NamespaceInfo xmlns="%s" xmlns:i="http://www.w3.org/2001/XMLSchema-instance">'
        "<CreatedTime>%s</CreatedTime><MessagingSKU>Standard</MessagingSKU><ModifiedTime>%s</ModifiedTime>"
        "<Name>%s</Name><NamespaceType>Messaging</NamespaceType></NamespaceInfo>"
    ) % (SB_NS, iso(created), iso(created), escape(namespace))
    url = "%s/$namespaceinfo" % base_url
    return (
        '<entry xmlns="%s"><id>%s</id><title type="text">%s</title><updated>%s</updated>'
        '<author><name>%s</name></author><link rel="self" href="%s"/>'
        '<content type="application/xml">%s</content></entry>'
    ) % (ATOM_NS, escape(url), escape(namespace), iso_seconds(now), escape(namespace), escape(url), info)


def settings_from_admin(d: Dict[str, Any], base: Settings) -> Settings:
    """Settings from the JSON of PUT /$admin/entities/{path}. Raises BrokerError(400)."""
    s = base.copy()

    def num(key, lo, hi, integer=False):
        v = d[key]
        if (
            isinstance(v, bool)
            or not isinstance(v, (int, float))
            or (integer and not float(v).is_integer())
            or not (lo <= v <= hi)
        ):
            raise BrokerError(400, "'%s' must be a number between %s and %s." % (key, lo, hi))
        return v

    if d.get("lock_duration") is not None:
        s.lock_duration = float(num("lock_duration", 1, MAX_LOCK_DURATION))
    if d.get("max_delivery_count") is not None:
        s.max_delivery_count = int(num("max_delivery_count", 1, 2**31 - 1, True))
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
    for key, attr in (
        ("requires_duplicate_detection", "requires_duplicate_detection"),
        ("enable_batched_operations", "enable_batched_operations"),
        ("dead_lettering_on_filter_evaluation_exceptions", "dl_on_filter_exceptions"),
        ("enable_partitioning", "enable_partitioning"),
        ("enable_express", "enable_express"),
        ("support_ordering", "support_ordering"),
    ):
        if d.get(key) is not None:
            if not isinstance(d[key], bool):
                raise BrokerError(400, "'%s' must be true or false." % key)
            setattr(s, attr, d[key])
    if d.get("duplicate_detection_history_time_window") is not None:
        s.dup_window = float(num("duplicate_detection_history_time_window", MIN_DUP_WINDOW, MAX_DUP_WINDOW))
    if "auto_delete_on_idle" in d:
        s.auto_delete_on_idle = (
            TTL_MAX if d["auto_delete_on_idle"] is None else float(num("auto_delete_on_idle", MIN_AUTO_DELETE, TTL_MAX))
        )
    for key, attr, limit in (
        ("forward_to", "forward_to", 260),
        ("forward_dead_lettered_messages_to", "forward_dlq_to", 260),
        ("user_metadata", "user_metadata", MAX_USER_METADATA),
    ):
        if key in d:
            v = d[key]
            if v is not None and (not isinstance(v, str) or len(v) > limit):
                raise BrokerError(400, "'%s' must be a string of at most %d characters, or null." % (key, limit))
            setattr(s, attr, (entity_path_of(v) if attr != "user_metadata" else v) or None if v else None)
    if d.get("status") is not None:
        if d["status"] not in STATUSES:
            raise BrokerError(400, "'status' must be one of %s." % ", ".join(STATUSES))
        s.status = d["status"]
    return s


XSI_TYPE = "{http://www.w3.org/2001/XMLSchema-instance}type"
INT32_MAX = 2**31 - 1


def _key_values(el: Optional[ET.Element], what: str) -> Dict[str, Any]:
    """KeyValueOfstringanyType items (Key, Value with an xsi:type) as typed Python values."""
    out: Dict[str, Any] = {}
    if el is None:
        return out
    for kv in el:
        if _local(kv.tag) != "KeyValueOfstringanyType":
            continue
        key = next((c.text or "" for c in kv if _local(c.tag) == "Key"), None)
        val = next((c for c in kv if _local(c.tag) == "Value"), None)
        if not key or val is None:
            raise BrokerError(400, "A key-value item of %s has no Key or no Value." % what)
        typ = (val.get(XSI_TYPE) or "string").split(":")[-1]
        text = val.text or ""
        try:
            if typ == "string":
                out[key] = text
            elif typ in ("int", "long", "short", "byte"):
                out[key] = int(text)
            elif typ in ("double", "float", "decimal"):
                out[key] = float(text)
            elif typ == "boolean":
                out[key] = _bool(text)
            else:
                raise BrokerError(
                    400,
                    "The value type '%s' of '%s' in %s is not supported by the emulator "
                    "(string, int, long, double and boolean are)." % (typ[:30], key[:60], what),
                )
        except ValueError:
            raise BrokerError(400, "The value of '%s' in %s is not a valid %s." % (key[:60], what, typ)) from None
    return out


def _key_values_xml(values: Dict[str, Any]) -> str:
    items = []
    for k, v in values.items():
        if isinstance(v, bool):
            typ, text = "boolean", _b(v)
        elif isinstance(v, int):
            typ, text = ("int" if -INT32_MAX - 1 <= v <= INT32_MAX else "long"), str(v)
        elif isinstance(v, float):
            typ, text = "double", repr(v)
        else:
            typ, text = "string", escape(str(v))
        items.append(
            '<KeyValueOfstringanyType><Key>%s</Key><Value xmlns:d6p1="http://www.w3.org/2001/XMLSchema" '
            'i:type="d6p1:%s">%s</Value></KeyValueOfstringanyType>' % (escape(k), typ, text)
        )
    return "".join(items)


def _child(el: ET.Element, name: str) -> Optional[ET.Element]:
    return next((c for c in el if _local(c.tag) == name), None)


def rule_from_element(rd: ET.Element) -> Filter:
    """The rule (filter + action) of a RuleDescription element (no Filter: TrueFilter)."""
    flt = _child(rd, "Filter")
    act = _child(rd, "Action")
    rule: Filter
    try:
        if flt is None:
            rule = Filter()
        else:
            kind = (flt.get(XSI_TYPE) or "").split(":")[-1]
            expr_el = _child(flt, "SqlExpression")
            expr = (expr_el.text or "") if expr_el is not None else ""
            if kind == "SqlFilter":
                rule = SqlFilter(expr, _key_values(_child(flt, "Parameters"), "the filter's Parameters"))
            elif kind == "CorrelationFilter":
                fields = {
                    _local(el.tag): (el.text or "")
                    for el in flt
                    if _local(el.tag) in CORRELATION_FIELDS and el.text is not None
                }
                props = _key_values(_child(flt, "Properties"), "the correlation filter's Properties")
                rule = CorrelationFilter(fields, props)
            elif kind in ("TrueFilter", ""):
                rule = Filter()
            elif kind == "FalseFilter":
                rule = FalseFilter()
            else:
                raise BrokerError(400, "The filter type '%s' is not supported." % kind[:50])
        if act is not None:
            akind = (act.get(XSI_TYPE) or "EmptyRuleAction").split(":")[-1]
            if akind == "SqlRuleAction":
                expr_el = _child(act, "SqlExpression")
                rule.action = SqlAction(
                    (expr_el.text or "") if expr_el is not None else "",
                    _key_values(_child(act, "Parameters"), "the action's Parameters"),
                )
            elif akind != "EmptyRuleAction":
                raise BrokerError(400, "The rule action type '%s' is not supported." % akind[:50])
    except RuleError as e:
        raise BrokerError(400, str(e)) from None
    return rule


def parse_rule(body: bytes) -> Filter:
    """The rule of a RuleDescription entry (no body or no Filter: TrueFilter, no action)."""
    if not body or not body.strip():
        return Filter()
    root = _parse_xml(body, "rule description")
    rd = next((el for el in root.iter() if _local(el.tag) == "RuleDescription"), None)
    if rd is None:
        return Filter()
    return rule_from_element(rd)


def _filter_xml(f: Filter) -> str:
    if isinstance(f, SqlFilter):
        params = "<Parameters>%s</Parameters>" % _key_values_xml(f.parameters) if f.parameters else ""
        return (
            '<Filter i:type="SqlFilter"><SqlExpression>%s</SqlExpression>%s<CompatibilityLevel>20'
            "</CompatibilityLevel></Filter>"
        ) % (escape(f.expression), params)
    if isinstance(f, CorrelationFilter):
        inner = "".join("<%s>%s</%s>" % (k, escape(str(v)), k) for k, v in f.fields.items())
        props = "<Properties>%s</Properties>" % _key_values_xml(f.original_properties) if f.properties else ""
        return '<Filter i:type="CorrelationFilter">%s%s</Filter>' % (inner, props)
    if isinstance(f, FalseFilter):
        return (
            '<Filter i:type="FalseFilter"><SqlExpression>1=0</SqlExpression><CompatibilityLevel>20'
            "</CompatibilityLevel></Filter>"
        )
    return (
        '<Filter i:type="TrueFilter"><SqlExpression>1=1</SqlExpression><CompatibilityLevel>20'
        "</CompatibilityLevel></Filter>"
    )


def _action_xml(f: Filter) -> str:
    a = f.action
    if a is None:
        return '<Action i:type="EmptyRuleAction"/>'
    params = "<Parameters>%s</Parameters>" % _key_values_xml(a.parameters) if a.parameters else ""
    return (
        '<Action i:type="SqlRuleAction"><SqlExpression>%s</SqlExpression>%s<CompatibilityLevel>20'
        "</CompatibilityLevel></Action>"
    ) % (escape(a.expression), params)


def rule_entry_xml(sub: Entity, name: str, base_url: str) -> str:
    f = sub.rules[name]
    url = "%s/%s/Rules/%s" % (base_url, sub.display_path, name)
    content = (
        '<RuleDescription xmlns="%s" xmlns:i="http://www.w3.org/2001/XMLSchema-instance">%s%s'
        "<CreatedAt>%s</CreatedAt><Name>%s</Name></RuleDescription>"
    ) % (SB_NS, _filter_xml(f), _action_xml(f), iso(f.created or sub.created), escape(name))
    return _entry(url, name, f.created or sub.created, f.created or sub.created, None, content)
