"""HTTP front of the emulator: the Service Bus REST surface plus ``/$admin/`` test controls."""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import json
import logging
import math
import random
import re
import time
import urllib.parse
import uuid
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

from aiohttp import hdrs, web
from aiohttp.web_protocol import RequestHandler

from . import atom
from .broker import Broker
from .model import BrokerError, Entity, Settings
from .props import PropertyError, custom_from_headers, rfc1123, custom_from_user_properties, parse_broker_properties
from .rules import RuleError, filter_from_json
from .sas import AuthError, SasValidator, loggable_path

log = logging.getLogger("peeklock.emulator")

SERVER = "Microsoft-HTTPAPI/2.0"
XML_CT = "application/xml; charset=utf-8"
ENTRY_CT = "application/atom+xml;type=entry;charset=utf-8"
FEED_CT = "application/atom+xml;type=feed;charset=utf-8"
BATCH_CT = "application/vnd.microsoft.servicebus.json"
MAX_TIMEOUT = 300
DEFAULT_TIMEOUT = 60
MAX_REQUEST_BODY = 64 * 1024 * 1024
MAX_ADMIN_BODY = 1024 * 1024
DEFAULT_PAGE = 100  # entries in a feed page when the request gives no $top
OPERATIONS = ("send", "peek_lock", "receive_and_delete", "renew", "unlock", "complete", "management", "any")
_REQUEST_COUNTER = {op: "requests." + op for op in OPERATIONS}
_TIMEOUTS: Dict[str, float] = {}  # query string -> its valid timeout (parse_timeout)
_SETTLE_OPS = {"PUT": "unlock", "DELETE": "complete", "POST": "renew"}


class SBResponse(web.StreamResponse):
    """StreamResponse whose headers are held back until ``write_eof`` so that status line,
    headers and body leave in one send (aiohttp >= 3.12 sends a plain StreamResponse's headers
    on their own, which costs a second system call and a second segment per answer)."""

    _send_headers_immediately = False


class SBBareResponse(SBResponse):
    """An SBResponse that can leave out Content-Type (a message sent without one) and keep
    ``Content-Length: 0`` on a 204, as the service does (a class of its own, so that the common
    answers go without this hook)."""

    omit_content_type = False
    zero_length = False

    async def _prepare_headers(self) -> None:
        await super()._prepare_headers()
        if self.omit_content_type:
            self._headers.popall(hdrs.CONTENT_TYPE, None)
        if self.zero_length:
            self._headers[hdrs.CONTENT_LENGTH] = "0"


class QuietRequestHandler(RequestHandler):
    """aiohttp's connection handler, except that a request it cannot parse is answered and logged
    without the offending text: aiohttp would echo the bad header line (an Authorization with
    its signature, say) in the 400 body and log it with a traceback."""

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: Optional[BaseException] = None,
        message: Optional[str] = None,
    ) -> web.StreamResponse:
        if status != 400:
            return super().handle_error(request, status, exc, message)
        log.info("refused a request that is not valid HTTP (%s)", type(exc).__name__ if exc else "400")
        if request.writer.output_size > 0:
            raise ConnectionError("Response is sent already")
        resp = web.Response(
            status=400,
            body=error_body(
                400,
                "The request is not valid HTTP: a request line, "
                "header name or header value has characters or a "
                "form HTTP does not allow",
            ),
            content_type="application/xml",
            charset="utf-8",
            headers={hdrs.SERVER: SERVER},
        )
        resp.force_close()
        return resp


class QuietServer(web.Server):
    def __call__(self) -> RequestHandler:
        return QuietRequestHandler(self, loop=self._loop, **self._kwargs)


class Dropped(Exception):
    """The connection was closed on purpose (fault injection)."""


class FaultRule:
    def __init__(self, spec: Dict[str, Any]):
        if not isinstance(spec, dict):
            raise BrokerError(400, "A fault rule is a JSON object.")
        op = spec.get("operation", "any")
        if op not in OPERATIONS:
            raise BrokerError(400, "'operation' must be one of %s." % ", ".join(OPERATIONS))
        self.operation = op
        ent = spec.get("entity")
        if ent is not None and not isinstance(ent, str):
            raise BrokerError(400, "'entity' must be an entity path.")
        self.entity = ent.strip("/").lower() if ent else None
        self.status = spec.get("status")
        if self.status is not None and (
            isinstance(self.status, bool) or not isinstance(self.status, int) or not 400 <= self.status <= 599
        ):
            raise BrokerError(400, "'status' must be an HTTP error status (400-599).")
        self.retry_after = spec.get("retry_after")
        if self.retry_after is not None and (
            isinstance(self.retry_after, bool) or not isinstance(self.retry_after, (int, float)) or self.retry_after < 0
        ):
            raise BrokerError(400, "'retry_after' must be a number of seconds >= 0.")
        self.delay_ms = spec.get("delay_ms", 0) or 0
        if (
            isinstance(self.delay_ms, bool)
            or not isinstance(self.delay_ms, (int, float))
            or not 0 <= self.delay_ms <= 600000
        ):
            raise BrokerError(400, "'delay_ms' must be a number of milliseconds between 0 and 600000.")
        self.drop = spec.get("drop", False)
        if not isinstance(self.drop, bool):
            raise BrokerError(400, "'drop' must be true or false.")
        self.after = spec.get("after", False)
        if not isinstance(self.after, bool):
            raise BrokerError(400, "'after' must be true or false.")
        self.probability = spec.get("probability", 1.0)
        if (
            isinstance(self.probability, bool)
            or not isinstance(self.probability, (int, float))
            or not 0 <= self.probability <= 1
        ):
            raise BrokerError(400, "'probability' must be a number between 0 and 1.")
        self.count = spec.get("count")
        if self.count is not None and (
            isinstance(self.count, bool) or not isinstance(self.count, int) or self.count < 0
        ):
            raise BrokerError(400, "'count' must be a whole number >= 0 or null.")
        seed = spec.get("seed")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise BrokerError(400, "'seed' must be an integer.")
        if self.status is None and not self.drop and not self.delay_ms:
            raise BrokerError(400, "A fault rule needs 'status', 'drop' or 'delay_ms'.")
        self.rng = random.Random(seed)
        self.id = uuid.uuid4().hex[:12]
        self.hits = 0
        self.seen = 0

    def matches(self, op: str, entity_key: Optional[str]) -> bool:
        if self.operation != "any" and self.operation != op:
            return False
        if self.entity is not None and self.entity != entity_key:
            return False
        if self.count is not None and self.hits >= self.count:
            return False
        self.seen += 1
        if self.probability < 1.0 and self.rng.random() >= self.probability:
            return False
        self.hits += 1
        return True

    def to_json(self) -> Dict[str, Any]:
        return {
            "id": self.id,
            "operation": self.operation,
            "entity": self.entity,
            "status": self.status,
            "retry_after": self.retry_after,
            "delay_ms": self.delay_ms,
            "drop": self.drop,
            "after": self.after,
            "probability": self.probability,
            "count": self.count,
            "hits": self.hits,
            "seen": self.seen,
        }


def _error_timestamp(ts: float) -> str:
    t = time.gmtime(ts)
    hour = t.tm_hour % 12 or 12
    return "%d/%d/%d %d:%02d:%02d %s" % (
        t.tm_mon,
        t.tm_mday,
        t.tm_year,
        hour,
        t.tm_min,
        t.tm_sec,
        "AM" if t.tm_hour < 12 else "PM",
    )


def error_body(status: int, detail: str) -> bytes:
    from xml.sax.saxutils import escape

    text = "<Error><Code>%d</Code><Detail>%s.TrackingId:%s_G%d,TimeStamp:%s</Detail></Error>" % (
        status,
        escape(detail),
        uuid.uuid4(),
        random.randint(0, 30),
        _error_timestamp(time.time()),
    )
    return text.encode("utf-8", "replace")


class EmulatorApp:
    """Owns the broker, auth, faults and the aiohttp application."""

    def __init__(self, broker: Broker, keys: Optional[Dict[str, str]], namespace: str = "peeklock"):
        self.broker = broker
        self.sas = SasValidator(keys) if keys else None
        self.namespace = namespace
        self.faults: List[FaultRule] = []
        self.default_settings = Settings()
        self.closing = False  # set on SIGTERM/SIGINT: pending long polls answer at once
        self.scheme = "http"  # "https" when served over TLS (Atom ids, Location)
        self.created = broker.clock.now()

    def make_server(self, **kwargs) -> web.Server:
        """A low-level aiohttp server (no router or middleware on the hot path)."""
        loop = asyncio.get_running_loop()

        factory = functools.partial(web.BaseRequest, loop=loop, client_max_size=MAX_REQUEST_BODY)
        return QuietServer(self.handle, request_factory=factory, **kwargs)

    # ----- responses -------------------------------------------------------------------------

    async def respond(
        self,
        request: web.BaseRequest,
        status: int,
        body: bytes = b"",
        content_type: Optional[str] = XML_CT,
        headers: Optional[List[Tuple[str, str]]] = None,
        chunked: bool = True,
        close: bool = False,
    ) -> web.StreamResponse:
        self.broker.store.commit()
        hl = headers if headers is not None else []  # callers hand over a list of their own
        if content_type is not None:
            hl.append((hdrs.CONTENT_TYPE, content_type))
        hl.append((hdrs.SERVER, SERVER))
        # Date follows the emulator clock, like LockedUntilUtc, so that a client learning the
        # lock duration as LockedUntilUtc - Date gets the entity's duration after a clock advance.
        hl.append((hdrs.DATE, rfc1123(self.broker.clock.now())))
        zero = status == 204 or status == 304
        resp: web.StreamResponse
        if content_type is None or zero:
            resp = SBBareResponse(status=status, headers=hl)  # one multidict built from the list
            resp.omit_content_type = content_type is None
            resp.zero_length = zero
        else:
            resp = SBResponse(status=status, headers=hl)
        if close:
            resp.force_close()
        if not zero:
            if chunked and request.version >= (1, 1):
                resp.enable_chunked_encoding()
            else:
                resp.content_length = len(body)
        await resp.prepare(request)
        await resp.write_eof(body)  # headers, the one chunk and the terminator in one send
        return resp

    async def error(self, request, status: int, detail: str, headers=None, close: bool = False) -> web.StreamResponse:
        return await self.respond(request, status, error_body(status, detail), XML_CT, headers, close=close)

    async def json(self, request, status: int, obj: Any) -> web.StreamResponse:
        self.broker.store.commit()
        return web.json_response(obj, status=status, headers={hdrs.SERVER: SERVER})

    # ----- dispatch --------------------------------------------------------------------------

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        try:
            try:
                expect = request.headers.get(hdrs.EXPECT)
                if expect is not None:
                    if expect.strip() and expect.lower() != "100-continue":
                        raise BrokerError(417, "The Expect value '%s' is not supported." % (_clean(expect) or "")[:50])
                return await self._dispatch(request)
            except BrokerError as e:
                return await self.error(request, e.status, e.detail, list(e.headers.items()), close=e.close)
            except (PropertyError, RuleError) as e:
                return await self.error(request, 400, str(e))
            except Dropped:
                raise asyncio.CancelledError()
            except web.HTTPRequestEntityTooLarge:
                return await self.error(request, 403, "SubCode=40300. The request body exceeds the maximum size.")
            except (ConnectionError, asyncio.CancelledError):
                raise
            except Exception:  # never crash the server on a request
                log.exception("internal error on %s %s", request.method, loggable_path(request.raw_path))
                return await self.error(request, 500, "Internal error in the emulator")
            finally:
                # a request that failed halfway must not leave writes behind uncommitted forever
                self.broker.store.commit()
        except ConnectionError:
            # The client went away before its answer was written (it timed out during an
            # injected delay, or vanished): there is no one to answer, and nothing to log loudly.
            log.debug("client gone before the answer to %s %s", request.method, loggable_path(request.raw_path))
            raise asyncio.CancelledError() from None

    async def _dispatch(self, request: web.BaseRequest) -> web.StreamResponse:
        raw = request.raw_path
        path = raw.partition("?")[0]
        if "%" in path:
            path = urllib.parse.unquote(path)
        segs = _segments(path)
        lpath = path.lower()  # str.lower never makes or removes a "/"
        lsegs = segs if lpath == path else _segments(lpath)
        if lsegs and lsegs[0] == "$admin":
            return await self.admin(request, segs[1:], lsegs[1:])
        if "messages" in lsegs:
            i = lsegs.index("messages")
            ekey = "/".join(lsegs[:i])
            rest = lsegs[i + 1 :]
            m = request.method
            if not rest and m == "POST":
                op = "send"
            elif rest == ["head"] and m in ("POST", "DELETE"):
                op = "peek_lock" if m == "POST" else "receive_and_delete"
            elif len(rest) == 2 and m in ("PUT", "DELETE", "POST"):
                op = _SETTLE_OPS[m]
            else:
                raise BrokerError(
                    405 if not rest or rest == ["head"] or len(rest) == 2 else 400,
                    "The request method or path is not supported for messages.",
                )
        else:
            op = "management"
            ekey = "/".join(lsegs)
        self.broker.counters[_REQUEST_COUNTER[op]] += 1
        self.authorize(request)
        if hdrs.EXPECT in request.headers:
            await self.continue_if_expected(request, *self.body_limit(request, op, ekey))
        rule = self.fault_for(op, ekey) if self.faults else None
        if rule is not None and not rule.after:
            resp = await self.apply_fault(request, rule, before=True)
            if resp is not None:
                return resp
        result: Optional[web.StreamResponse] = None
        if op == "management":
            result = await self.management(request, segs, lsegs)
        else:
            ent = self.broker.get(ekey)
            if ent is None:
                raise BrokerError(
                    410, "The messaging entity '%s' could not be found." % "/".join(segs[: lsegs.index("messages")])
                )
            if op == "send":
                await self.send(request, ent, rule)
            elif op in ("peek_lock", "receive_and_delete"):
                return await self.receive(request, ent, op == "peek_lock", rule)
            else:
                ident = segs[i + 1]
                token = segs[i + 2]
                if ent.kind == "topic":
                    raise BrokerError(400, "Messages are settled on a queue or a subscription, not on a topic.")
                getattr(self.broker, op)(ent, ident, token)
        if rule is not None and rule.after:
            resp = await self.apply_fault(request, rule, before=False)
            if resp is not None:
                return resp
        if result is not None:  # a management answer (send and settle give None)
            return result
        return await self.respond(request, 201 if op == "send" else 200)

    @staticmethod
    def host_of(request: web.BaseRequest) -> str:
        """Host[:port] the client addressed, for the SAS scope check. Some clients (azure-sb)
        send Host without the port while signing a URL with it. (Location echoes the Host
        header verbatim: azure-sb cuts its own host name out of Location.)"""
        host = _host_header(request)
        if host.endswith("]") or ":" not in host:
            sock = request.transport.get_extra_info("sockname") if request.transport else None
            if sock and len(sock) >= 2 and sock[1] not in (80,):
                host = "%s:%d" % (host, sock[1])
        return host

    def body_limit(
        self, request: web.BaseRequest, op: str, ekey: str
    ) -> Tuple[int, Optional[Callable[[str], BrokerError]]]:
        """The most body bytes the request may bring, and the error past it (None: the generic one)."""
        if op == "send":
            ent = self.broker.get(ekey)
            if ent is not None:
                return self.send_limit(ent, _is_batch(request.headers.get(hdrs.CONTENT_TYPE)))
        if op == "management":
            return atom.MAX_DESCRIPTION, None
        return MAX_REQUEST_BODY, None

    def send_limit(self, ent: Entity, batch: bool) -> Tuple[int, Callable[[str], BrokerError]]:
        if batch:
            # the JSON of a batch may spell a byte in up to 6 (\u0000) or, base64, in 4/3
            return (
                6 * ent.settings.max_message_size + 65536,
                lambda size: self.broker.too_large(ent, size, "batch", close=True),
            )
        return ent.settings.max_message_size, lambda size: self.broker.too_large(ent, size, close=True)

    async def continue_if_expected(
        self,
        request: web.BaseRequest,
        limit: int = MAX_REQUEST_BODY,
        refuse: Optional[Callable[[str], BrokerError]] = None,
    ) -> None:
        """Answer `Expect: 100-continue` once the request passed authorization and its declared
        size is acceptable; otherwise the final status goes out without the body being read."""
        expect = request.headers.get(hdrs.EXPECT)
        if expect is None or expect.lower() != "100-continue" or request.version < (1, 1):
            return
        length = request.content_length
        if length is not None and length > limit:
            if refuse is not None:
                raise refuse(str(length))
            raise BrokerError(403, "SubCode=40300. The request body exceeds the maximum size.", close=True)
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0

    def authorize(self, request: web.BaseRequest) -> None:
        if self.sas is None:
            return
        try:
            raw = request.raw_path
            self.sas.check(
                request.headers.get(hdrs.AUTHORIZATION),
                self.host_of(request),
                urllib.parse.unquote(raw) if "%" in raw else raw,
            )
        except AuthError as e:
            raise BrokerError(401, str(e)) from None

    def fault_for(self, op: str, ekey: str) -> Optional[FaultRule]:
        for rule in self.faults:
            if rule.matches(op, ekey):
                self.broker.counters["faults"] += 1
                return rule
        return None

    async def apply_fault(self, request, rule: FaultRule, before: bool) -> Optional[web.StreamResponse]:
        if rule.delay_ms:
            await asyncio.sleep(rule.delay_ms / 1000.0)
        if rule.drop:
            self.broker.store.commit()
            if request.transport is not None:
                request.transport.abort()
            raise Dropped()
        if rule.status is not None:
            headers = []
            if rule.retry_after is not None:
                ra = rule.retry_after
                headers.append(("Retry-After", str(int(ra)) if float(ra).is_integer() else str(ra)))
            detail = {
                503: "SubCode=50002. ServerBusy: the server is busy. Please retry the operation",
                500: "Internal server error (injected)",
                429: "SubCode=50004. Throttled (injected)",
            }.get(rule.status, "Injected fault")
            return await self.error(request, rule.status, detail, headers)
        return None

    # ----- message operations ----------------------------------------------------------------

    async def read_body(
        self, request: web.BaseRequest, limit: int, refuse: Optional[Callable[[str], BrokerError]] = None
    ) -> bytes:
        """The request body, refused (and the connection closed) as soon as it passes `limit`
        bytes: by its Content-Length before reading, or while it streams in."""

        def too_big(size: str) -> BrokerError:
            if refuse is not None:
                return refuse(size)
            return BrokerError(
                403, "SubCode=40300. The request body exceeds the maximum size of %d bytes." % limit, close=True
            )

        length = request.content_length
        if length is not None and length > limit:
            raise too_big(str(length))
        chunks = []
        total = 0
        while True:
            chunk = await request.content.readany()
            if not chunk:
                break
            total += len(chunk)
            if total > limit:
                raise too_big("more than %d" % limit)
            chunks.append(chunk)
        return b"".join(chunks)

    async def send(self, request: web.BaseRequest, ent: Entity, rule) -> None:
        if ent.kind not in ("queue", "topic"):
            raise BrokerError(400, "Cannot send to '%s': send to a queue or a topic." % ent.name)
        if ent.settings.status in ("Disabled", "SendDisabled"):
            raise BrokerError(
                400,
                "SubCode=40000. The messaging entity '%s' is disabled for sending (Status %s)."
                % (ent.name, ent.settings.status),
            )
        ct = request.headers.get(hdrs.CONTENT_TYPE)
        batch = _is_batch(ct)
        limit, refuse = self.send_limit(ent, batch)
        if batch:
            items = self.parse_batch(await self.read_body(request, limit, refuse))
            total = 0
            for b, props, custom in items:
                size = len(b) + sum(len(k) + len(v) for k, v in custom)
                self.broker.check_size(ent, size)
                total += size
            # the service limits a batch as it limits one message
            self.broker.check_size(ent, total, "batch")
            for b, props, custom in items:
                self.broker.send(ent, b, XML_CT, props, custom)
            return None
        body = await self.read_body(request, limit, refuse)
        props = parse_broker_properties(_clean(request.headers.get("BrokerProperties")))
        custom = custom_from_headers(request.raw_headers)
        size = len(body) + sum(len(k) + len(v) for k, v in custom)
        self.broker.check_size(ent, size)
        self.broker.send(ent, body, ct, props, custom)
        return None

    def parse_batch(self, body: bytes):
        try:
            arr = json.loads(body.decode("utf-8"))
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise BrokerError(400, "The batch body is not a JSON array of messages.") from None
        if not isinstance(arr, list):
            raise BrokerError(400, "The batch body is not a JSON array of messages.")
        out = []
        for n, item in enumerate(arr):
            if not isinstance(item, dict):
                raise BrokerError(400, "Batch entry %d is not a JSON object." % n)
            b = item.get("Body", "")
            if not isinstance(b, str):
                raise BrokerError(400, "Batch entry %d: 'Body' must be a string." % n)
            if item.get("IsBodyBase64") is True:
                try:
                    data = base64.b64decode(b, validate=True)
                except (binascii.Error, ValueError):
                    raise BrokerError(400, "Batch entry %d: 'Body' is not valid base64." % n) from None
            else:
                data = b.encode("utf-8")
            bp = item.get("BrokerProperties")
            try:
                props = parse_broker_properties(None, bp) if bp is not None else {}
            except PropertyError:
                raise BrokerError(400, "Batch entry %d: 'BrokerProperties' is invalid." % n) from None
            custom = custom_from_user_properties(item.get("UserProperties"))
            out.append((data, props, custom))
        return out

    async def receive(self, request: web.BaseRequest, ent: Entity, peek_lock: bool, rule) -> web.StreamResponse:
        if ent.kind == "topic":
            raise BrokerError(400, "Cannot receive from a topic: receive from one of its subscriptions.")
        owner = ent.parent if ent.kind == "deadletter" and ent.parent is not None else ent
        if owner.settings.status in ("Disabled", "ReceiveDisabled"):
            raise BrokerError(
                400,
                "SubCode=40000. The messaging entity '%s' is disabled for receiving (Status %s)."
                % (ent.name, owner.settings.status),
            )
        timeout = self.parse_timeout(request)
        broker = self.broker
        deadline = broker.clock.now() + timeout
        msg = None
        while True:
            if broker.entities.get(ent.key) is not ent:
                raise BrokerError(410, "The messaging entity '%s' could not be found." % ent.name)
            if self.closing:
                raise BrokerError(503, "SubCode=50002. ServerBusy: the emulator is shutting down", {"Retry-After": "1"})
            msg = broker.try_receive(ent, peek_lock)
            if msg is not None:
                break
            now = broker.clock.now()
            remaining = deadline - now
            if remaining <= 0:
                break
            wait = min(remaining, broker.next_event(ent) - now)
            loop = asyncio.get_running_loop()
            fut = loop.create_future()
            ent.waiters.append(fut)
            handle = loop.call_later(max(wait, 0.0), _resolve, fut)
            woke = False
            try:
                await fut
                woke = True
            finally:
                handle.cancel()
                try:
                    ent.waiters.remove(fut)
                except ValueError:
                    pass
                if not woke and fut.done() and not fut.cancelled():
                    broker._wake_one(ent)  # pass a wake-up on to another waiter
            tr = request.transport
            if tr is None or tr.is_closing():
                broker._wake_one(ent)
                raise asyncio.CancelledError()
        if msg is None:
            return await self.respond(request, 204)
        headers = [("BrokerProperties", broker.broker_properties(ent, msg, peek_lock))]
        if peek_lock:
            headers.append(
                (
                    "Location",
                    "%s://%s/%s/messages/%d/%s"
                    % (self.scheme, _host_header(request), ent.name, msg.seq, msg.lock_token),
                )
            )
        if msg.custom:
            headers.extend(msg.custom)
        if rule is not None and rule.after:
            resp = await self.apply_fault(request, rule, before=False)
            if resp is not None:
                return resp
        return await self.respond(request, 201 if peek_lock else 200, msg.body, msg.content_type, headers)

    def parse_timeout(self, request: web.BaseRequest) -> float:
        qs = request.raw_path.partition("?")[2]
        t = _TIMEOUTS.get(qs)  # a client asks with the same query string again and again
        if t is None:
            t = self._parse_timeout(qs)
            if len(_TIMEOUTS) >= 1000:
                _TIMEOUTS.clear()
            _TIMEOUTS[qs] = t
        return t

    @staticmethod
    def _parse_timeout(qs: str) -> float:
        raw = None
        if qs:
            if "%" in qs or "+" in qs:
                pairs = urllib.parse.parse_qsl(qs, keep_blank_values=True)
            else:  # nothing to unquote: the same pairs parse_qsl gives, without its cost
                pairs = [p.partition("=")[::2] for p in qs.split("&") if p]
            for k, v in pairs:
                if k.lower() == "timeout":
                    raw = v
                    break
        if raw is None:
            return DEFAULT_TIMEOUT
        try:
            t = float(raw)
        except ValueError:
            t = float("nan")
        if not math.isfinite(t) or t < 0:
            raise BrokerError(400, "The value '%s' of the query parameter 'timeout' is invalid." % raw[:50])
        return float(min(int(t), MAX_TIMEOUT))

    # ----- management ------------------------------------------------------------------------

    def base_url(self, request) -> str:
        return "%s://%s" % (self.scheme, _host_header(request))

    def counted(self, ent: Entity, now: float) -> Dict[str, int]:
        """The entity's counts after applying what is due (a topic's due scheduled messages too)."""
        if ent.kind == "subscription" and ent.parent is not None:
            self.broker.sweep(ent.parent, now)
        self.broker.sweep(ent, now)
        if ent.dlq is not None:
            self.broker.sweep(ent.dlq, now)
        return self.broker.counts(ent)

    def entry(self, ent: Entity, base: str, now: float) -> str:
        return atom.entry_xml(ent, self.counted(ent, now), base, self.namespace)

    async def management(self, request: web.BaseRequest, segs: List[str], lsegs: List[str]):
        m = request.method
        base = self.base_url(request)
        now = self.broker.clock.now()
        self.broker.reap_idle(now)
        if lsegs == ["$namespaceinfo"] and m == "GET":
            body = atom.namespace_entry_xml(base, self.namespace, self.created, now)
            return await self.respond(request, 200, body.encode(), ENTRY_CT)
        if len(lsegs) == 2 and lsegs[0] == "$resources" and lsegs[1] in ("queues", "topics") and m == "GET":
            kind = lsegs[1][:-1]
            title = kind.capitalize() + "s"
            ents = sorted(self.broker.iter_entities(kind), key=lambda e: e.key)
            url = "%s/$Resources/%s" % (base, title)
            page, nxt = self._page(request, ents, url)
            body = atom.feed_xml(title, url, [self.entry(e, base, now) for e in page], nxt, now)
            return await self.respond(request, 200, body.encode(), FEED_CT)
        if len(lsegs) == 2 and lsegs[1] == "subscriptions" and m == "GET":
            topic = self.broker.get(lsegs[0])
            if topic is None or topic.kind != "topic":
                raise BrokerError(404, "The messaging entity '%s' could not be found." % segs[0])
            url = "%s/%s/Subscriptions%s" % (base, topic.name, "/" if request.path.endswith("/") else "")
            page, nxt = self._page(request, sorted(topic.subscriptions.values(), key=lambda e: e.key), url)
            body = atom.feed_xml("Subscriptions", url, [self.entry(e, base, now) for e in page], nxt, now)
            return await self.respond(request, 200, body.encode(), FEED_CT)
        if not segs:
            raise BrokerError(404, "No service is hosted at the specified address.")
        if len(lsegs) in (4, 5) and lsegs[1] == "subscriptions" and lsegs[3] == "rules":
            return await self.rules(request, segs, lsegs)
        is_sub = len(lsegs) == 3 and lsegs[1] == "subscriptions"
        if not is_sub and len(lsegs) != 1 or any(s.startswith("$") for s in lsegs):
            raise BrokerError(400 if m == "PUT" else 404, "The entity path '%s' is not valid." % "/".join(segs))
        name = "/".join(segs)
        key = name.lower()
        if m == "GET":
            ent = self.broker.get(key)
            if ent is None and is_sub:
                # the service answers a missing subscription with an empty 404 (recorded traffic)
                return await self.respond(request, 404, b"", None, chunked=False)
            if ent is None:
                raise BrokerError(404, "The messaging entity '%s' could not be found." % name)
            return await self.respond(request, 200, self.entry(ent, base, now).encode(), ENTRY_CT)
        if m == "DELETE":
            self.broker.delete_entity(key)
            return await self.respond(request, 200, b"", XML_CT, chunked=False)
        if m == "PUT":
            raw = await self.read_body(request, atom.MAX_DESCRIPTION)
            kind, settings, default_rule = atom.parse_description(
                raw, "subscription" if is_sub else "queue", self.default_settings
            )
            if is_sub != (kind == "subscription"):
                raise BrokerError(400, "A %s description cannot be put at '%s'." % (kind, name))
            for what, path in (
                ("ForwardTo", settings.forward_to),
                ("ForwardDeadLetteredMessagesTo", settings.forward_dlq_to),
            ):
                if path is not None:
                    target = self.broker.get(path.lower())
                    if target is None or target.kind not in ("queue", "topic") or target.key == key:
                        raise BrokerError(
                            400,
                            "The %s entity '%s' is not a queue or topic of this namespace "
                            "(other than the entity itself)." % (what, path[:100]),
                        )
            replace = request.headers.get(hdrs.IF_MATCH, "").strip() == "*"
            if replace and self.broker.get(key) is None:
                raise BrokerError(404, "The messaging entity '%s' could not be found." % name)
            ent, created = self.broker.create_entity(name, kind, settings, replace=replace)
            if created and default_rule is not None:
                rule_name, rule = default_rule
                rule.created = ent.created
                ent.rules = {rule_name: rule}
                self.broker.store.save_rules(ent)
            return await self.respond(request, 201 if created else 200, self.entry(ent, base, now).encode(), ENTRY_CT)
        raise BrokerError(405, "The method %s is not allowed here." % m)

    async def rules(self, request: web.BaseRequest, segs: List[str], lsegs: List[str]):
        m = request.method
        base = self.base_url(request)
        sub = self.broker.get("/".join(lsegs[:3]))
        if sub is None or sub.kind != "subscription":
            raise BrokerError(404, "The messaging entity '%s' could not be found." % "/".join(segs[:3]))
        if len(lsegs) == 4:
            if m != "GET":
                raise BrokerError(405, "The method %s is not allowed here." % m)
            now = self.broker.clock.now()
            url = "%s/%s/Rules%s" % (base, sub.display_path, "/" if request.path.endswith("/") else "")
            page, nxt = self._page(request, sorted(sub.rules), url)
            body = atom.feed_xml("Rules", url, [atom.rule_entry_xml(sub, n, base) for n in page], nxt, now)
            return await self.respond(request, 200, body.encode(), FEED_CT)
        name = segs[4]
        if m == "GET":
            if name not in sub.rules:
                raise BrokerError(404, "The rule '%s' could not be found." % name)
            return await self.respond(request, 200, atom.rule_entry_xml(sub, name, base).encode(), ENTRY_CT)
        if m == "DELETE":
            self.broker.delete_rule(sub, name)
            return await self.respond(request, 200, b"", XML_CT, chunked=False)
        if m == "PUT":
            flt = atom.parse_rule(await self.read_body(request, atom.MAX_DESCRIPTION))
            replace = request.headers.get(hdrs.IF_MATCH, "").strip() == "*"
            old = sub.rules.get(name)
            flt.created = old.created if old is not None and replace else self.broker.clock.now()
            created = self.broker.set_rule(sub, name, flt, replace=replace)
            return await self.respond(
                request, 201 if created else 200, atom.rule_entry_xml(sub, name, base).encode(), ENTRY_CT
            )
        raise BrokerError(405, "The method %s is not allowed here." % m)

    def _page(self, request, items: List[Any], url: str) -> Tuple[List[Any], Optional[str]]:
        """The $skip/$top page of items and the rel="next" URL when more remain."""
        q = {k.lower(): v for k, v in request.query.items()}
        try:
            skip = max(int(q.get("$skip", "0")), 0)
            top = max(int(q.get("$top", str(DEFAULT_PAGE))), 0)
        except ValueError:
            raise BrokerError(400, "$skip and $top must be whole numbers.") from None
        page = items[skip : skip + top]
        nxt = None
        if skip + top < len(items) and top > 0:
            extra = {"$skip": str(skip + top), "$top": str(top)}
            if "api-version" in q:
                extra["api-version"] = q["api-version"]
            nxt = url + "?" + urllib.parse.urlencode(extra, safe="$")
        return page, nxt

    # ----- /$admin/ --------------------------------------------------------------------------

    async def admin(self, request: web.BaseRequest, segs: List[str], lsegs: List[str]) -> web.StreamResponse:
        await self.continue_if_expected(request)
        m = request.method
        b = self.broker
        try:
            if lsegs == ["clock"] and m == "GET":
                return await self.json(request, 200, {"now": b.clock.now(), "offset": b.clock.offset})
            if lsegs == ["clock", "advance"] and m == "POST":
                body = await self._json_body(request)
                secs = body.get("seconds") if isinstance(body, dict) else None
                now = b.advance(secs)  # type: ignore[arg-type]  # advance() checks the type
                return await self.json(request, 200, {"now": now, "offset": b.clock.offset})
            if lsegs and lsegs[0] == "entities" and len(segs) >= 2 and m in ("PUT", "DELETE", "GET"):
                path = "/".join(segs[1:])
                if m == "DELETE":
                    try:
                        b.delete_entity(path)
                    except BrokerError:
                        return await self.json(request, 404, {"error": "no entity '%s'" % path})
                    return await self.json(request, 200, {"deleted": path})
                if m == "GET":
                    ent = b.get(path.lower())
                    if ent is None:
                        return await self.json(request, 404, {"error": "no entity '%s'" % path})
                    b.sweep(ent, b.clock.now())
                    return await self.json(request, 200, b.entity_state(ent))
                body = await self._json_body(request)
                if not isinstance(body, dict):
                    raise BrokerError(400, "The body must be a JSON object.")
                kind = body.get("kind") or ("subscription" if "/subscriptions/" in path.lower() else "queue")
                if kind not in ("queue", "topic", "subscription"):
                    raise BrokerError(400, "'kind' must be queue, topic or subscription.")
                existing = b.get(path.strip("/").lower())
                base = existing.settings if existing is not None else self.default_settings
                settings = atom.settings_from_admin(body, base)
                rules = None
                if body.get("rules") is not None:
                    if kind != "subscription" or not isinstance(body["rules"], dict):
                        raise BrokerError(400, "'rules' is an object of rule name -> filter, on subscriptions only.")
                    try:
                        rules = {str(n): filter_from_json(f) for n, f in body["rules"].items()}
                    except RuleError as e:
                        raise BrokerError(400, str(e)) from None
                ent, created = b.create_entity(path, kind, settings, replace=True)
                if rules is not None:
                    ent.rules = rules
                    b.store.save_rules(ent)
                return await self.json(request, 201 if created else 200, b.entity_state(ent))
            if lsegs == ["faults"]:
                if m == "POST":
                    body = await self._json_body(request)
                    specs = body if isinstance(body, list) else [body]
                    made = [FaultRule(r) for r in specs]
                    self.faults.extend(made)
                    if isinstance(body, list):
                        return await self.json(request, 201, {"ids": [r.id for r in made]})
                    return await self.json(request, 201, {"id": made[0].id})
                if m == "DELETE":
                    n = len(self.faults)
                    self.faults.clear()
                    return await self.json(request, 200, {"removed": n})
                if m == "GET":
                    return await self.json(request, 200, {"faults": [r.to_json() for r in self.faults]})
            if len(lsegs) == 2 and lsegs[0] == "faults" and m == "DELETE":
                before = len(self.faults)
                self.faults = [r for r in self.faults if r.id != segs[1]]
                return await self.json(
                    request, 200 if len(self.faults) < before else 404, {"removed": before - len(self.faults)}
                )
            if lsegs == ["state"] and m == "GET":
                st = b.state()
                st["faults"] = [r.to_json() for r in self.faults]
                return await self.json(request, 200, st)
            if lsegs == ["reset"] and m == "POST":
                b.reset()
                self.faults.clear()
                return await self.json(request, 200, {"reset": True})
            if lsegs == ["token"] and m == "GET":
                return await self.json(request, 200, {"key_names": sorted(self.sas.keys) if self.sas else []})
        except BrokerError as e:
            resp = await self.json(request, e.status, {"error": e.detail})
            if e.close:
                resp.force_close()
            return resp
        return await self.json(request, 404, {"error": "unknown admin endpoint %s %s" % (m, request.path)})

    async def _json_body(self, request) -> Any:
        raw = await self.read_body(request, MAX_ADMIN_BODY)
        if not raw.strip():
            return {}
        try:
            return json.loads(raw)
        except (ValueError, RecursionError):
            raise BrokerError(400, "The body is not valid JSON.") from None


_GOOD_HOSTS: Set[str] = set()
_HOST_RE = re.compile(r"^(?:[A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?\Z")


def _host_header(request: web.BaseRequest) -> str:
    """The Host header, or the local address when there is none (never a DNS lookup). A Host
    that is not a host[:port] (``127.0.0.1:80/q1`` would stretch a SAS scope) is a 400."""
    host = request.headers.get(hdrs.HOST)
    if host:
        if host not in _GOOD_HOSTS:  # clients send the same Host again and again
            if not _HOST_RE.match(host):
                raise BrokerError(400, "The Host header is not a host name or address with an optional port.")
            if len(_GOOD_HOSTS) >= 1000:
                _GOOD_HOSTS.clear()
            _GOOD_HOSTS.add(host)
        return host
    sock = request.transport.get_extra_info("sockname") if request.transport else None
    return "%s:%d" % (sock[0], sock[1]) if sock and len(sock) >= 2 else "127.0.0.1"


def _is_batch(content_type: Optional[str]) -> bool:
    return content_type is not None and content_type.split(";", 1)[0].strip().lower() == BATCH_CT


def _segments(path: str) -> List[str]:
    """The non-empty segments of a path ("/a//b/" -> ["a", "b"])."""
    segs = path.strip("/").split("/")
    return [s for s in segs if s] if "" in segs else segs


def _clean(text: Optional[str]) -> Optional[str]:
    """Header text as real Unicode (undecodable bytes become U+FFFD, not lone surrogates)."""
    if text is None:
        return None
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _resolve(fut: "asyncio.Future[None]") -> None:
    if not fut.done():
        fut.set_result(None)
