"""Read-only entity management over the Atom API: list queues, topics and
subscriptions with their message counts and the settings that matter to a
consumer (lock duration, maximum delivery count).

The message operations run in the C core; these few GETs of Atom XML do not
need it and use the standard library (``urllib``, ``xml.etree``)."""

from __future__ import annotations

import http.client
import ssl
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Callable, Iterator, List, Optional

from . import _core
from . import errors as _errors
from ._auth import management_authorization, parse_connection_string

__all__ = ["EntityInfo", "Management"]

_ATOM = "{http://www.w3.org/2005/Atom}"
_PAGE = 100  # the service pages feeds by 100


@dataclass(frozen=True)
class EntityInfo:
    """One queue, topic or subscription as the management API describes it.

    Counts are ``None`` when the service did not report them (a topic has no
    active messages of its own, only its subscriptions do)."""

    path: str  # "orders", "events/subscriptions/audit"
    kind: str  # "queue", "topic" or "subscription"
    message_count: Optional[int]  # active + dead-lettered + scheduled
    active: Optional[int]
    dead_letter: Optional[int]
    scheduled: Optional[int]
    transfer: Optional[int]
    lock_duration: Optional[float]  # seconds; None on topics
    max_delivery_count: Optional[int]  # None on topics
    status: Optional[str]
    requires_duplicate_detection: bool = False  # queues and topics
    duplicate_detection_window: Optional[float] = None  # seconds

    def _repr_html_(self) -> str:
        return _html_table([self])


def _duration(text: Optional[str]) -> Optional[float]:
    """ISO 8601 durations as the service writes them: PnDTnHnMn.nS."""
    if not text:
        return None
    t = text.strip().upper()
    if not t.startswith("P"):
        return None
    days, _, rest = t[1:].partition("T") if "T" in t else (t[1:], "", "")
    total = 0.0
    if days:
        if not days.endswith("D"):
            return None
        total += float(days[:-1]) * 86400
    num = ""
    for ch in rest:
        if ch.isdigit() or ch == ".":
            num += ch
            continue
        if not num:
            return None
        total += float(num) * {"H": 3600, "M": 60, "S": 1}.get(ch, float("nan"))
        num = ""
    return None if num or total != total else total


def _int(text: Optional[str]) -> Optional[int]:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _info(entry: ET.Element) -> Optional[EntityInfo]:
    content = entry.find(_ATOM + "content")
    desc = next(iter(content), None) if content is not None else None
    if desc is None:
        return None
    kind = {"QueueDescription": "queue", "TopicDescription": "topic", "SubscriptionDescription": "subscription"}.get(
        _local(desc.tag)
    )
    if kind is None:
        return None
    fields = {}
    counts = {}
    for el in desc:
        name = _local(el.tag)
        if name == "CountDetails":
            counts = {_local(c.tag): (c.text or "").strip() for c in el}
        else:
            fields[name] = (el.text or "").strip()
    link = entry.find(_ATOM + "link[@rel='self']")
    href = link.get("href", "") if link is not None else ""
    path = urllib.parse.unquote(urllib.parse.urlsplit(href).path).strip("/")
    if not path:
        path = (entry.findtext(_ATOM + "title") or "").strip()
    return EntityInfo(
        path=path,
        kind=kind,
        message_count=_int(fields.get("MessageCount")),
        active=_int(counts.get("ActiveMessageCount")),
        dead_letter=_int(counts.get("DeadLetterMessageCount")),
        scheduled=_int(counts.get("ScheduledMessageCount")),
        transfer=_int(counts.get("TransferMessageCount")),
        lock_duration=_duration(fields.get("LockDuration")),
        max_delivery_count=_int(fields.get("MaxDeliveryCount")),
        status=fields.get("Status") or None,
        requires_duplicate_detection=fields.get("RequiresDuplicateDetection") == "true",
        duplicate_detection_window=_duration(fields.get("DuplicateDetectionHistoryTimeWindow")),
    )


def _html_table(rows: List[EntityInfo]) -> str:
    from html import escape

    def cell(v: object) -> str:
        return "" if v is None else escape(str(v))

    head = (
        "<tr><th>entity</th><th>kind</th><th>active</th><th>dead-letter</th>"
        "<th>scheduled</th><th>lock (s)</th><th>max deliveries</th></tr>"
    )
    body = "".join(
        f"<tr><td>{cell(r.path)}</td><td>{cell(r.kind)}</td><td>{cell(r.active)}</td>"
        f"<td>{cell(r.dead_letter)}</td><td>{cell(r.scheduled)}</td>"
        f"<td>{cell(r.lock_duration)}</td><td>{cell(r.max_delivery_count)}</td></tr>"
        for r in rows
    )
    return f"<table class='peeklock-entities'>{head}{body}</table>"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is an error: urllib would send the Authorization header on to
    wherever the redirect points, another host or plain http included."""

    def redirect_request(
        self, req: urllib.request.Request, fp: object, code: int, msg: str, headers: object, newurl: str
    ) -> None:
        return None


def _opener(context: Optional[ssl.SSLContext]) -> urllib.request.OpenerDirector:
    handlers: List[urllib.request.BaseHandler] = [_NoRedirect()]
    if context is not None:
        handlers.append(urllib.request.HTTPSHandler(context=context))
    return urllib.request.build_opener(*handlers)


class EntityList(List[EntityInfo]):
    """A list of entities that renders as a table in Jupyter."""

    def _repr_html_(self) -> str:
        return _html_table(list(self))


class Management:
    """Atom GETs against one namespace. ``authorization(uri)`` returns the
    Authorization header value for a request to ``uri``."""

    def __init__(
        self,
        endpoint: str,
        authorization: Callable[[str], str],
        *,
        timeout: float = 30.0,
        ca_file: Optional[str] = None,
    ) -> None:
        self.endpoint = endpoint.rstrip("/")
        self._authorization = authorization
        self._timeout = timeout
        self._context = ssl.create_default_context(cafile=ca_file) if ca_file else None

    @classmethod
    def from_connection_string(
        cls, connection_string: str, *, timeout: float = 30.0, ca_file: Optional[str] = None
    ) -> "Management":
        cs = parse_connection_string(connection_string)
        if not cs.sas_token and not (cs.key and cs.key_name):
            raise ValueError("the connection string has no SharedAccessKey or SharedAccessSignature")
        # The core's client checks the endpoint as it does for the data-plane Client: no
        # SAS token over plain http to a host that is not loopback (unless the connection
        # string names it in AllowPlaintextHost=); making one opens no connection.
        core = _core.pl_client_new(connection_string=connection_string, ca_file=ca_file)
        endpoint = str(_core.pl_client_endpoint(core))
        del core
        return cls(
            endpoint,
            management_authorization(connection_string, None, None, None, None),
            timeout=timeout,
            ca_file=ca_file,
        )

    def _get(self, path: str, query: str = "", *, missing_ok: bool = True) -> Optional[ET.Element]:
        """The Atom document at ``path``; None for an empty answer, and for a 404 when
        ``missing_ok`` (an entity or a topic's subscriptions: what is gone is not
        there). The namespace's lists are never missing: the service answers an
        empty namespace with an empty feed, so a 404 there is a wrong endpoint."""
        url = f"{self.endpoint}/{urllib.parse.quote(path, safe='/$')}"
        if query:
            url += "?" + query
        req = urllib.request.Request(
            url, headers={"Authorization": self._authorization(self.endpoint + "/"), "Accept": "application/atom+xml"}
        )
        try:
            with _opener(self._context).open(req, timeout=self._timeout) as r:
                body = r.read()
        except urllib.error.HTTPError as e:
            if e.code == 404 and missing_ok:
                return None
            if e.code == 404:
                raise _errors.HTTPError(
                    f"management GET {path}: not found, where a Service Bus namespace answers a feed "
                    f"(empty or not): is {self.endpoint} the namespace's endpoint?",
                    status=404,
                    code=_errors.PL_EHTTP,
                ) from None
            try:  # what the status means is the core's table, the REST answers' too
                _core.pl_http_status_error(e.code, None, f"management GET {path}")
            except _errors.Error as err:
                raise err from None
        except urllib.error.URLError as e:
            raise _errors.ConnectionError(
                f"management GET {path}: {e.reason}", code=_errors.PL_ECONNECT, retryable=True
            ) from None
        except TimeoutError:
            raise _errors.TimeoutError(
                f"management GET {path}: no answer within {self._timeout:g} s", code=_errors.PL_ETIMEOUT, retryable=True
            ) from None
        except (http.client.HTTPException, OSError) as e:  # cut short while reading
            raise _errors.ConnectionError(
                f"management GET {path}: {type(e).__name__}", code=_errors.PL_ECONNECT, retryable=True
            ) from None
        if not body.strip():
            return None
        try:
            return ET.fromstring(body)
        except ET.ParseError as e:
            raise _errors.ProtocolError(
                f"management GET {path}: not Atom XML ({e})", code=_errors.PL_EPROTOCOL
            ) from None

    def get(self, path: str) -> Optional[EntityInfo]:
        """The entity at ``path`` (``orders``, ``t/subscriptions/s``), or None."""
        root = self._get(path.strip("/"))
        if root is None or _local(root.tag) != "entry":
            return None  # the old service answers a missing queue with a feed
        return _info(root)

    def _feed(self, path: str, *, missing_ok: bool = False) -> Iterator[EntityInfo]:
        skip = 0
        while True:
            root = self._get(path, f"$skip={skip}&$top={_PAGE}", missing_ok=missing_ok)
            entries = [] if root is None else root.findall(_ATOM + "entry")
            for e in entries:
                info = _info(e)
                if info is not None:
                    yield info
            if len(entries) < _PAGE:
                return
            skip += len(entries)

    def entities(self) -> EntityList:
        """Every queue, topic and subscription of the namespace, topics followed
        by their subscriptions."""
        out = EntityList(self._feed("$Resources/Queues"))
        for topic in list(self._feed("$Resources/Topics")):
            out.append(topic)
            for sub in self._feed(f"{topic.path}/Subscriptions", missing_ok=True):  # (topic deleted since)
                if "/" not in sub.path:  # an entry whose self link is only its name
                    sub = _replace_path(sub, f"{topic.path}/subscriptions/{sub.path}")
                out.append(sub)
        return out


def _replace_path(info: EntityInfo, path: str) -> EntityInfo:
    from dataclasses import replace

    return replace(info, path=path)
