"""Entities from the official Service Bus emulator's ``Config.json`` format.

Reads ``UserConfig.Namespaces[].Queues[] / Topics[].Subscriptions[]`` with their
``Properties`` (LockDuration, MaxDeliveryCount, DefaultMessageTimeToLive,
DeadLetteringOnMessageExpiration, RequiresSession, ...) and subscriptions' ``Rules``. A property
is obeyed as in an Atom description (atom.parse_description) or refused: an unknown key, or a
value the emulator cannot honour, is an error naming it.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List, Optional, Tuple

from .atom import apply_setting, parse_duration
from .model import MAX_LOCK_DURATION, BrokerError, Settings
from .rules import Filter, RuleError, filter_from_json
from .props import TTL_MAX


class ConfigError(ValueError):
    pass


def _settings(props: Any, base: Settings, where: str, kind: str = "queue") -> Settings:
    s = base.copy()
    if props is None:
        return s
    if not isinstance(props, dict):
        raise ConfigError("%s: 'Properties' must be an object" % where)
    for key, val in props.items():
        try:
            if key == "LockDuration":
                v = parse_duration(str(val))
                if v is None or not 1 <= v <= MAX_LOCK_DURATION:
                    raise ValueError
                s.lock_duration = v
            elif key == "DefaultMessageTimeToLive":
                v = parse_duration(str(val))
                if v is None or v <= 0:
                    raise ValueError
                s.default_ttl = min(v, TTL_MAX)
            elif key == "MaxDeliveryCount":
                if isinstance(val, bool) or int(val) < 1:
                    raise ValueError
                s.max_delivery_count = int(val)
            elif key == "DeadLetteringOnMessageExpiration":
                if not isinstance(val, bool):
                    raise ValueError
                s.dl_on_expiration = val
            elif key == "RequiresSession":
                if not isinstance(val, bool):
                    raise ValueError
                s.requires_session = val
            elif key == "RequiresDuplicateDetection":
                s.requires_duplicate_detection = bool(val)
            elif key == "MaxSizeInMegabytes":
                s.max_size_mb = int(val)
            elif key == "MaxMessageSizeInKilobytes":
                s.max_message_size = int(val) * 1024
            else:
                apply_setting(s, kind, key, ("true" if val else "false") if isinstance(val, bool) else str(val))
        except (TypeError, ValueError):
            raise ConfigError("%s: invalid value %r for %s" % (where, val, key)) from None
        except BrokerError as e:
            raise ConfigError("%s: %s" % (where, e.detail)) from None
    return s


def _rules(rules: Any, where: str) -> Dict[str, Filter]:
    """The official emulator's subscription ``Rules``: ``[{"Name", "Properties": {"FilterType":
    "Sql"|"Correlation", "SqlFilter": {"SqlExpression"}, "CorrelationFilter": {...,
    "Properties": {...}}, "Action": {"SqlExpression"}}}]``."""
    if not isinstance(rules, list):
        raise ConfigError("%s: 'Rules' must be a list" % where)
    out: Dict[str, Filter] = {}
    for r in rules:
        name = r.get("Name") if isinstance(r, dict) else None
        props = r.get("Properties") if isinstance(r, dict) else None
        if not isinstance(name, str) or not name or not isinstance(props, dict):
            raise ConfigError("%s: a rule needs a Name and Properties" % where)
        ftype = str(props.get("FilterType", "")).lower()
        try:
            if ftype == "sql":
                spec: Dict[str, Any] = {"sql": (props.get("SqlFilter") or {}).get("SqlExpression")}
            elif ftype == "correlation":
                spec = {"correlation": dict(props.get("CorrelationFilter") or {})}
            else:
                raise RuleError("FilterType must be Sql or Correlation")
            action = (props.get("Action") or {}).get("SqlExpression") if isinstance(props.get("Action"), dict) else None
            if action:
                spec["action"] = action
            out[name] = filter_from_json(spec)
        except (RuleError, AttributeError) as e:
            raise ConfigError("%s: rule %s: %s" % (where, name, e)) from None
    return out


def load_config(
    path: str, base: Settings
) -> Tuple[Optional[str], List[Tuple[str, str, Settings]], Dict[str, Dict[str, Filter]]]:
    """Return (namespace name, [(path, kind, settings)] in creation order, {subscription path: rules})."""
    try:
        with open(path, "r", encoding="utf-8-sig") as f:
            doc = json.load(f)
    except OSError as e:
        raise ConfigError("cannot read %s: %s" % (path, e.strerror)) from None
    except ValueError as e:
        raise ConfigError("%s is not valid JSON: %s" % (path, e)) from None
    uc = doc.get("UserConfig", doc) if isinstance(doc, dict) else None
    if not isinstance(uc, dict) or not isinstance(uc.get("Namespaces", []), list):
        raise ConfigError('%s: expected {"UserConfig": {"Namespaces": [...]}}' % path)
    out: List[Tuple[str, str, Settings]] = []
    rules: Dict[str, Dict[str, Filter]] = {}
    ns_name = None
    for ns in uc.get("Namespaces", []):
        if not isinstance(ns, dict):
            raise ConfigError("%s: each namespace must be an object" % path)
        ns_name = ns_name or ns.get("Name")
        for q in ns.get("Queues", []) or []:
            name = q.get("Name") if isinstance(q, dict) else None
            if not isinstance(name, str) or not name:
                raise ConfigError("%s: a queue has no Name" % path)
            out.append((name, "queue", _settings(q.get("Properties"), base, "queue " + name)))
        for t in ns.get("Topics", []) or []:
            name = t.get("Name") if isinstance(t, dict) else None
            if not isinstance(name, str) or not name:
                raise ConfigError("%s: a topic has no Name" % path)
            tset = _settings(t.get("Properties"), base, "topic " + name, "topic")
            out.append((name, "topic", tset))
            for sub in t.get("Subscriptions", []) or []:
                sname = sub.get("Name") if isinstance(sub, dict) else None
                if not isinstance(sname, str) or not sname:
                    raise ConfigError("%s: a subscription of %s has no Name" % (path, name))
                spath = "%s/subscriptions/%s" % (name, sname)
                out.append(
                    (
                        spath,
                        "subscription",
                        _settings(sub.get("Properties"), base, "subscription " + sname, "subscription"),
                    )
                )
                if sub.get("Rules"):
                    rules[spath] = _rules(sub["Rules"], "subscription " + sname)
    return ns_name, out, rules
