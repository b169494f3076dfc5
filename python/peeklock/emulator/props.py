"""BrokerProperties and custom-property handling, as the service does it.

Pure functions, no I/O: parse what a sender gives, format what a receiver gets.
See docs/emulator.md and shared protocol.md section 2.
"""

from __future__ import annotations

import email.utils
import json
import math
import re
import time
from typing import Any, Dict, List, Optional, Tuple

# TimeSpan.MaxValue in seconds, as the service prints it.
TTL_MAX_TEXT = "922337203685.47754"
TTL_MAX = 922337203685.47754

STRING_FIELDS = (
    "CorrelationId",
    "Label",
    "MessageId",
    "PartitionKey",
    "ReplyTo",
    "ReplyToSessionId",
    "SessionId",
    "To",
    "ViaPartitionKey",
)

# Request headers that are never custom properties (lower case). Everything
# else a sender puts on a send request is an application property.
RESERVED_HEADERS = frozenset(
    """
accept accept-charset accept-encoding accept-language authorization brokerproperties
cache-control connection content-length content-type content-encoding content-md5
content-language content-range cookie date expect host if-match if-none-match
if-modified-since if-unmodified-since if-range keep-alive max-forwards pragma
proxy-authorization proxy-connection range referer te trailer transfer-encoding upgrade
user-agent via warning dataserviceversion maxdataserviceversion origin traceparent
tracestate request-id x-http-method x-requested-with dnt
""".split()
)
RESERVED_PREFIXES = ("x-ms-", "x-forwarded-", "sec-", "x-real-ip")

MAX_STRING_LEN = 128
MAX_NUMBER_TEXT = 400  # characters of an unquoted (number) custom property: a Double is at most ~1e308

_INT_RE = re.compile(r"^[+-]?\d+$")
_FLOAT_RE = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
_TIMESPAN_RE = re.compile(r"^(-)?(?:(\d+)\.)?(\d{1,2}):(\d{1,2}):(\d{1,2})(?:\.(\d{1,7}))?$")


class PropertyError(ValueError):
    """A sender gave a property the service would reject (HTTP 400)."""


_DATE_CACHE: Dict[int, str] = {}


def rfc1123(ts: float) -> str:
    """RFC 1123 date in GMT, one-second precision: 'Sat, 25 Oct 2014 00:56:48 GMT'."""
    sec = math.floor(ts)
    text = _DATE_CACHE.get(sec)
    if text is None:
        if len(_DATE_CACHE) > 256:
            _DATE_CACHE.clear()
        text = _DATE_CACHE[sec] = email.utils.formatdate(sec, usegmt=True)
    return text


def parse_http_date(text: str) -> Optional[float]:
    """Unix time of an RFC 2616/1123 date, or None if it is not one."""
    try:
        dt = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if dt is None:
        return None
    try:
        return dt.timestamp()
    except (OverflowError, ValueError, OSError):
        return None


def format_number(x: float) -> str:
    if x == TTL_MAX or x >= TTL_MAX:
        return TTL_MAX_TEXT
    if float(x).is_integer():
        return str(int(x))
    return repr(float(x))


def header_invalid(name: str, value: str) -> str:
    shown = value if len(value) <= 200 else value[:200] + "..."
    return "The value '%s' of the HTTP header '%s' is invalid." % (shown, name)


def _as_seconds(name: str, value: Any, raw: str) -> float:
    """TimeToLive: a JSON number or a numeric string (PY and PHP send strings)."""
    if isinstance(value, bool):
        raise PropertyError(header_invalid("BrokerProperties", raw))
    if isinstance(value, (int, float)):
        secs = float(value)
    elif isinstance(value, str) and _FLOAT_RE.match(value.strip()):
        secs = float(value.strip())
    else:
        raise PropertyError(header_invalid("BrokerProperties", raw))
    if not math.isfinite(secs) or secs <= 0:
        raise PropertyError(header_invalid("BrokerProperties", raw))
    return min(secs, TTL_MAX)


def parse_timespan(text: str) -> Optional[float]:
    """'d.hh:mm:ss[.fffffff]' as seconds, or None."""
    m = _TIMESPAN_RE.match(text.strip())
    if not m:
        return None
    neg, d, h, mi, s, frac = m.groups()
    secs: float = int(d or 0) * 86400 + int(h) * 3600 + int(mi) * 60 + int(s)
    if frac:
        secs += int(frac.ljust(7, "0")) / 1e7
    return -secs if neg else float(secs)


def parse_broker_properties(raw: Optional[str], batch_obj: Any = None) -> Dict[str, Any]:
    """Validate the sender's BrokerProperties; return the settable fields.

    Returns a dict that may hold the string fields, "TimeToLive" (float seconds),
    "ScheduledEnqueueTimeUtc" (unix float) and "ForcePersistence" (bool).
    Raises PropertyError with the service's Detail text.
    """
    if batch_obj is None:
        if raw is None or raw.strip() == "":
            return {}
        try:
            obj = json.loads(raw)
        except (ValueError, RecursionError):
            raise PropertyError(header_invalid("BrokerProperties", raw)) from None
    else:
        obj = batch_obj
        raw = raw if raw is not None else json.dumps(batch_obj)[:200]
    if not isinstance(obj, dict):
        raise PropertyError(header_invalid("BrokerProperties", raw))
    out: Dict[str, Any] = {}
    for key in STRING_FIELDS:
        if key in obj and obj[key] is not None:
            v = obj[key]
            if isinstance(v, bool) or not isinstance(v, (str, int, float)):
                raise PropertyError(header_invalid("BrokerProperties", raw))
            v = v if isinstance(v, str) else format_number(v)
            if key in ("MessageId", "SessionId", "PartitionKey") and len(v) > MAX_STRING_LEN:
                raise PropertyError(header_invalid("BrokerProperties", raw))
            out[key] = v
    if "MessageId" in out and out["MessageId"] == "":
        raise PropertyError(header_invalid("BrokerProperties", raw))
    if obj.get("TimeToLive") is not None:
        out["TimeToLive"] = _as_seconds("TimeToLive", obj["TimeToLive"], raw)
    elif obj.get("TimeToLiveTimeSpan") is not None:
        ts = obj["TimeToLiveTimeSpan"]
        secs = parse_timespan(ts) if isinstance(ts, str) else None
        if secs is None or secs <= 0:
            raise PropertyError(header_invalid("BrokerProperties", raw))
        out["TimeToLive"] = min(secs, TTL_MAX)
    if obj.get("ScheduledEnqueueTimeUtc") is not None:
        v = obj["ScheduledEnqueueTimeUtc"]
        when = parse_http_date(v) if isinstance(v, str) else None
        if when is None:
            raise PropertyError(header_invalid("BrokerProperties", raw))
        out["ScheduledEnqueueTimeUtc"] = when
    if obj.get("ForcePersistence") is not None:
        v = obj["ForcePersistence"]
        if isinstance(v, str) and v.lower() in ("true", "false"):
            v = v.lower() == "true"
        if not isinstance(v, bool):
            raise PropertyError(header_invalid("BrokerProperties", raw))
        out["ForcePersistence"] = v
    sid, pk = out.get("SessionId"), out.get("PartitionKey")
    if sid is not None and pk is not None and sid != pk:
        raise PropertyError(header_invalid("BrokerProperties", raw))
    if sid is not None and pk is None:
        out["PartitionKey"] = sid
    return out


def classify_custom(name: str, value: str) -> str:
    """Type of a custom-property header value; raises PropertyError if invalid.

    Returns one of "DateTime", "String", "Boolean", "Int64", "Double".
    """
    v = value.strip()
    if len(v) >= 2 and v[0] == '"' and v[-1] == '"':
        return "DateTime" if parse_http_date(v[1:-1]) is not None else "String"
    if v in ("true", "false"):
        return "Boolean"
    if len(v) > MAX_NUMBER_TEXT:
        # thousands of digits: no Int64, and as a Double infinite (int() would refuse the text)
        raise PropertyError(header_invalid(name, value))
    if _INT_RE.match(v):
        n = int(v)
        if -(2**63) <= n < 2**63:
            return "Int64"
        return "Double"
    if _FLOAT_RE.match(v):
        try:
            if math.isfinite(float(v)):
                return "Double"
        except ValueError:
            pass
    raise PropertyError(header_invalid(name, value))


def is_reserved_header(lname: str) -> bool:
    return lname in RESERVED_HEADERS or lname.startswith(RESERVED_PREFIXES)


def custom_from_headers(raw_headers) -> List[Tuple[str, str]]:
    """Custom properties of a send request, spelled as sent, values verbatim."""
    out: List[Tuple[str, str]] = []
    seen = set()
    for bname, bvalue in raw_headers:
        name = bname.decode("latin-1")
        lname = name.lower()
        if is_reserved_header(lname) or lname in seen:
            continue
        value = bvalue.decode("utf-8", "replace").strip()
        classify_custom(name, value)
        seen.add(lname)
        out.append((name, value))
    return out


def custom_from_user_properties(obj: Any) -> List[Tuple[str, str]]:
    """UserProperties of a batch entry as the header forms a receiver gets back."""
    if obj is None:
        return []
    if not isinstance(obj, dict):
        raise PropertyError("The value of 'UserProperties' in the batch is invalid.")
    out = []
    for k, v in obj.items():
        if not isinstance(k, str) or not k or any(c in k for c in ' \t\r\n:"'):
            raise PropertyError("The user property name '%s' is invalid." % (str(k)[:100],))
        if isinstance(v, bool):
            out.append((k, "true" if v else "false"))
        elif isinstance(v, (int, float)):
            if isinstance(v, float) and not math.isfinite(v):
                raise PropertyError("The value of user property '%s' is invalid." % k)
            out.append((k, str(v)))
        elif isinstance(v, str):
            if any(c in v for c in "\r\n"):
                raise PropertyError("The value of user property '%s' is invalid." % k)
            out.append((k, '"' + v.replace('"', '\\"') + '"'))
        elif v is None:
            continue
        else:
            raise PropertyError("The value of user property '%s' is invalid." % k)
    return out


def broker_property_entry(key: str, v: Any) -> str:
    """One ``"key":value`` member of the BrokerProperties JSON."""
    t = type(v)
    if t is str:
        # fast path: nothing to escape (printable ASCII is free of control characters)
        if v.isascii() and v.isprintable() and '"' not in v and "\\" not in v:
            return '"%s":"%s"' % (key, v)
        return '"%s":%s' % (key, json.dumps(v))
    if t is int:
        return '"%s":%d' % (key, v)
    if isinstance(v, bool):
        s = "true" if v else "false"
    elif isinstance(v, int):
        s = str(v)
    elif isinstance(v, float):
        s = format_number(v)
    else:
        s = json.dumps(v)
    return '"%s":%s' % (key, s)


def broker_properties_json(fields: Dict[str, Any]) -> str:
    """Compact JSON, keys in ordinal (alphabetical) order, numbers as the service prints them."""
    return "{" + ",".join([broker_property_entry(key, fields[key]) for key in sorted(fields)]) + "}"


def now_real() -> float:
    return time.time()
