"""OpenTelemetry traces and metrics for peeklock, after the messaging semantic
conventions (``messaging.system = "servicebus"``).

    from peeklock import telemetry
    telemetry.instrument()            # global tracer and meter providers
    telemetry.instrument(tracer_provider=tp, meter_provider=mp)
    telemetry.uninstrument()

``opentelemetry-api`` is an optional dependency (``pip install
'peeklock[telemetry]'``). Until :func:`instrument` is called nothing here runs:
the client's calls are the C methods they always are, at no cost.

Spans: ``send`` (PRODUCER), ``receive`` (CLIENT: peek-lock and
receive-and-delete), ``process`` (CONSUMER: the ``with msg:`` block, so the
processor's handlers too), ``complete`` / ``abandon`` (CLIENT, operation type
``settle``) and ``renew_message_lock`` (CLIENT, one per renewal, from the
renewer's events, in the message's process span's trace). ``send`` writes the
W3C ``traceparent`` value into the message's ``Diagnostic-Id`` property, as the
official SDKs do, unless the caller set one, and sends it as the request's
``traceparent`` header too (over REST that header is the HTTP request's own
trace context: the service keeps no such property); ``receive`` and ``process``
link to the context found in either, so traces join across services.

Metrics: ``messaging.client.operation.duration``,
``messaging.client.sent.messages``, ``messaging.client.consumed.messages``,
``messaging.process.duration``, and the lock metrics ``peeklock.lock.renewals``,
``peeklock.lock.renewal_failures`` (``error.type``: the failure's code),
``peeklock.lock.renewal_slack`` (seconds of lock left when a renewal landed),
``peeklock.lock.lost``, ``peeklock.lock.cap_reached`` and ``peeklock.locks.held``.
No attribute ever carries a lock token, key or signature.
"""

from __future__ import annotations

import functools
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, List, Optional, Tuple

from . import _core
from ._outgoing import OutgoingMessage
from ._spans import detached

if TYPE_CHECKING:
    from .client import Client, Message

__all__ = ["instrument", "uninstrument", "is_instrumented"]

SYSTEM = "servicebus"

# Histogram bucket bounds, in seconds, given as the instruments' advice (an SDK View may
# still override them): the semantic conventions' bounds for messaging.client.operation.duration
# and messaging.process.duration (5 ms .. 10 s; the SDK's default, 0 5 10 25 ..., suits
# milliseconds and put every operation under 5 s), and for the renewal slack up to the
# longest lock (5 min). lua/peeklock/metrics.lua serves the same two lists.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
SLACK_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0)
_TRACEPARENT = "traceparent"
_DIAGNOSTIC_ID = "Diagnostic-Id"

_lock = threading.Lock()
_state: Optional["_Instrumentation"] = None
# open process spans, by message: (instrumentation, span, context token or None,
# start, metric attributes). Module-level so that a block open across
# uninstrument() still ends its span: the __exit__ wrapper stays installed.
_open: "weakref.WeakKeyDictionary[Message, Tuple[Any, Any, Any, float, Dict[str, Any]]]" = weakref.WeakKeyDictionary()


def is_instrumented() -> bool:
    return _state is not None


def _server(client: "Client") -> str:
    ep = client.endpoint
    return ep.split("://", 1)[-1].split("/", 1)[0].rsplit(":", 1)[0]


def _destination(entity: str) -> Tuple[str, Optional[str]]:
    """(destination name, subscription name) of an entity path: the core's rule
    (pl_entity_destination; "subscriptions" in any case)."""
    return _core.pl_entity_destination(entity)


class _Instrumentation:
    def __init__(self, tracer_provider: Any, meter_provider: Any) -> None:
        from opentelemetry import metrics, propagate, trace
        from opentelemetry.trace import Link, SpanKind, Status, StatusCode

        from . import __version__

        self.trace = trace
        self.propagate = propagate
        self.Link, self.SpanKind, self.Status, self.StatusCode = Link, SpanKind, Status, StatusCode
        self.explicit = tracer_provider is not None or meter_provider is not None
        self.ProxyTracerProvider = trace.ProxyTracerProvider
        self.metrics = metrics
        self.tracer = trace.get_tracer("peeklock", __version__, tracer_provider=tracer_provider)
        meter = metrics.get_meter("peeklock", __version__, meter_provider=meter_provider)
        self.op_duration = meter.create_histogram(
            "messaging.client.operation.duration",
            unit="s",
            description="Duration of messaging operation initiated by a producer or consumer client.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self.sent = meter.create_counter(
            "messaging.client.sent.messages",
            unit="{message}",
            description="Number of messages producer attempted to send to the broker.",
        )
        self.consumed = meter.create_counter(
            "messaging.client.consumed.messages",
            unit="{message}",
            description="Number of messages that were delivered to the application.",
        )
        self.process_duration = meter.create_histogram(
            "messaging.process.duration",
            unit="s",
            description="Duration of processing operation.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self.renewals = meter.create_counter(
            "peeklock.lock.renewals", unit="{renewal}", description="Lock renewals by the background renewer."
        )
        self.renewal_failures = meter.create_counter(
            "peeklock.lock.renewal_failures",
            unit="{renewal}",
            description="Failed lock renewals by the background renewer (retried while lock time remains).",
        )
        self.slack = meter.create_histogram(
            "peeklock.lock.renewal_slack",
            unit="s",
            description="Lock time left when a renewal by the background renewer landed.",
            explicit_bucket_boundaries_advisory=SLACK_BUCKETS,
        )
        self.lost = meter.create_counter("peeklock.lock.lost", unit="{lock}", description="Locks lost while held.")
        self.cap = meter.create_counter(
            "peeklock.lock.cap_reached", unit="{lock}", description="Locks whose renewal stopped at max_renew."
        )
        self.clients: "weakref.WeakSet[Client]" = weakref.WeakSet()
        meter.create_observable_gauge(
            "peeklock.locks.held", callbacks=[self._held], unit="{lock}", description="Locks the renewers hold now."
        )
        self.by_seq: Dict[Tuple[int, str, int], Any] = {}  # (client, entity, seq) -> span
        self.saved: List[Tuple[Any, str, Any]] = []

    def off(self) -> bool:
        """True while neither a tracer nor a meter provider is set (the API's
        defaults): then the wrappers call straight through, at no cost beyond
        this check."""
        if self.explicit:
            return False
        return (
            isinstance(self.trace.get_tracer_provider(), self.ProxyTracerProvider)
            and type(self.metrics.get_meter_provider()).__name__ == "_ProxyMeterProvider"
        )

    # ---- helpers ----
    def _held(self, options: Any) -> Iterable[Any]:
        from opentelemetry.metrics import Observation

        total = 0
        for c in list(self.clients):
            r = c._renewer_handle
            if r is not None and not c._closed:
                total += int(_core.pl_renewer_stats_get(r)["held"])
        return [Observation(total, {"messaging.system": SYSTEM})]

    def attrs(self, client: "Client", op: str, op_type: str, entity: str) -> Dict[str, Any]:
        name, sub = _destination(entity)
        a: Dict[str, Any] = {
            "messaging.system": SYSTEM,
            "messaging.operation.name": op,
            "messaging.operation.type": op_type,
            "messaging.destination.name": name,
            "server.address": _server(client),
        }
        if sub is not None:
            a["messaging.destination.subscription.name"] = sub
        return a

    def message_attrs(self, msg: "Message") -> Dict[str, Any]:
        a: Dict[str, Any] = {"messaging.servicebus.message.delivery_count": msg.delivery_count}
        if msg.message_id is not None:
            a["messaging.message.id"] = msg.message_id
        if msg.enqueued_time is not None:
            a["messaging.servicebus.message.enqueued_time"] = int(msg.enqueued_time.timestamp())
        return a

    def links(self, msg: "Message") -> List[Any]:
        tp = msg.properties.get(_TRACEPARENT) or msg.properties.get(_DIAGNOSTIC_ID)
        if not isinstance(tp, str):
            return []
        ctx = self.propagate.extract({_TRACEPARENT: tp})
        sc = self.trace.get_current_span(ctx).get_span_context()
        return [self.Link(sc)] if sc.is_valid else []

    def fail(self, span: Any, e: BaseException) -> None:
        span.set_attribute("error.type", type(e).__name__)
        span.set_status(self.Status(self.StatusCode.ERROR, type(e).__name__))

    def carrier(self) -> Dict[str, str]:
        out: Dict[str, str] = {}
        self.propagate.inject(out)
        tp = out.get(_TRACEPARENT)
        if tp:
            out[_DIAGNOSTIC_ID] = tp
        return out

    def with_trace(self, props: Optional[Dict[str, Any]]) -> Dict[str, Any]:
        out = dict(props or {})
        for k, v in self.carrier().items():
            if k in (_TRACEPARENT, _DIAGNOSTIC_ID):
                out.setdefault(k, v)
        return out

    def timed(self, op: str, attrs: Dict[str, Any], t0: float, error: Optional[str]) -> None:
        a = {k: v for k, v in attrs.items() if k != "messaging.message.id"}
        if error:
            a["error.type"] = error
        self.op_duration.record(time.monotonic() - t0, a)

    # ---- the renewer's events ----
    def on_event(self, client: "Client", kind: str, entity: str, seq: int, message_id: Optional[str], ev: Any) -> None:
        from . import _core

        attrs = self.attrs(client, "renew_message_lock", "renew", entity)
        if kind == "renew_failed":
            code = str(_core.pl_strerror(_core.pl_event_code(ev))).split(":", 1)[0]
            self.renewal_failures.add(1, dict(attrs, **{"error.type": code}))
        elif kind == "renewed":
            self.renewals.add(1, attrs)
            self.slack.record(max(0.0, _core.pl_event_slack_ms(ev) / 1000), attrs)
            parent = self.by_seq.get((id(client), entity, seq))
            ctx = self.trace.set_span_in_context(parent) if parent is not None else None
            span = self.tracer.start_span(
                "renew_message_lock " + _destination(entity)[0],
                context=ctx,
                kind=self.SpanKind.CLIENT,
                attributes=dict(attrs, **({"messaging.message.id": message_id} if message_id else {})),
            )
            span.end()
        elif kind == "lost":
            self.lost.add(1, attrs)
            parent = self.by_seq.get((id(client), entity, seq))
            if parent is not None:
                parent.set_attribute("error.type", "LockLostError")
        elif kind == "cap_reached":
            self.cap.add(1, attrs)


# --------------------------------------------------------------------------
# wrappers
# --------------------------------------------------------------------------


def _traced_copy(st: _Instrumentation, om: "OutgoingMessage") -> "OutgoingMessage":
    """A copy of ``om`` whose properties carry the current trace context."""
    copy = OutgoingMessage.__new__(OutgoingMessage)
    for slot in OutgoingMessage.__slots__:
        setattr(copy, slot, getattr(om, slot))
    copy.properties = st.with_trace(om.properties)
    return copy


def _wrap_send(orig: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(orig)
    def send(self: "Client", entity: str, body: Any = b"", *, properties: Any = None, **kwargs: Any) -> Any:
        st = _state
        if st is None or st.off():
            return orig(self, entity, body, properties=properties, **kwargs)
        attrs = st.attrs(self, "send", "send", entity)
        mid = body.message_id if isinstance(body, OutgoingMessage) else kwargs.get("message_id")
        if mid:
            attrs["messaging.message.id"] = mid
        t0 = time.monotonic()
        with st.tracer.start_as_current_span(
            "send " + attrs["messaging.destination.name"],
            kind=st.SpanKind.PRODUCER,
            attributes=attrs,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                if isinstance(body, OutgoingMessage):
                    r = orig(self, entity, _traced_copy(st, body), **kwargs)
                else:
                    r = orig(self, entity, body, properties=st.with_trace(properties), **kwargs)
            except BaseException as e:
                st.fail(span, e)
                st.timed("send", attrs, t0, type(e).__name__)
                raise
            st.timed("send", attrs, t0, None)
            st.sent.add(1, {k: v for k, v in attrs.items() if k != "messaging.message.id"})
            return r

    return send


def _wrap_send_batch(orig: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(orig)
    def send_batch(self: "Client", entity: str, messages: Any) -> Any:
        st = _state
        if st is None or st.off():
            return orig(self, entity, messages)
        attrs = st.attrs(self, "send", "send", entity)
        t0 = time.monotonic()
        with st.tracer.start_as_current_span(
            "send " + attrs["messaging.destination.name"],
            kind=st.SpanKind.PRODUCER,
            attributes=attrs,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            out = []
            if not isinstance(messages, (str, bytes, bytearray, OutgoingMessage)):
                for m in messages:
                    om = m if isinstance(m, OutgoingMessage) else OutgoingMessage(m)
                    out.append(_traced_copy(st, om))
                span.set_attribute("messaging.batch.message_count", len(out))
            try:
                n = orig(self, entity, out or messages)  # nothing to copy: the plain error
            except BaseException as e:
                st.fail(span, e)
                st.timed("send", attrs, t0, type(e).__name__)
                raise
            st.timed("send", attrs, t0, None)
            st.sent.add(n, attrs)
            return n

    return send_batch


def _wrap_receive(orig: Callable[..., Any], op: str) -> Callable[..., Any]:
    @functools.wraps(orig)
    def receive(self: "Client", entity: str, *args: Any, **kwargs: Any) -> Any:
        st = _state
        if st is None or st.off():
            return orig(self, entity, *args, **kwargs)
        attrs = st.attrs(self, op, "receive", entity)
        t0 = time.monotonic()
        span = st.tracer.start_span(
            "receive " + attrs["messaging.destination.name"], kind=st.SpanKind.CLIENT, attributes=attrs
        )
        try:
            msg = orig(self, entity, *args, **kwargs)
        except BaseException as e:
            st.fail(span, e)
            span.end()
            st.timed(op, attrs, t0, type(e).__name__)
            raise
        if msg is not None:
            span.set_attributes(st.message_attrs(msg))
            span.set_attribute("messaging.batch.message_count", 1)
            for link in st.links(msg):
                span.add_link(link.context)
            st.consumed.add(1, attrs)
        else:
            span.set_attribute("messaging.batch.message_count", 0)
        span.end()
        st.timed(op, attrs, t0, None)
        return msg

    return receive


def _wrap_settle(orig: Callable[..., Any], op: str) -> Callable[..., Any]:
    @functools.wraps(orig)
    def settle(self: "Message", *args: Any, **kwargs: Any) -> Any:
        st = _state
        if st is None or st.off():
            return orig(self, *args, **kwargs)
        attrs = st.attrs(self._client, op, "settle", self.entity)
        t0 = time.monotonic()
        with st.tracer.start_as_current_span(
            f"{op} " + attrs["messaging.destination.name"],
            kind=st.SpanKind.CLIENT,
            attributes=dict(attrs, **st.message_attrs(self)),
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                r = orig(self, *args, **kwargs)
            except BaseException as e:
                st.fail(span, e)
                st.timed(op, attrs, t0, type(e).__name__)
                raise
            st.timed(op, attrs, t0, None)
            return r

    return settle


def _wrap_finish(orig: Callable[..., Any]) -> Callable[..., Any]:
    """A block's exit settles through Message._finish: a complete or abandon
    span (and metric) when the lock is still held, so a settle goes out."""
    complete, abandon = _wrap_settle(orig, "complete"), _wrap_settle(orig, "abandon")

    @functools.wraps(orig)
    def finish(self: "Message", ok: bool) -> Any:
        if self.state != "held":
            return orig(self, ok)
        return (complete if ok else abandon)(self, ok)

    return finish


def _wrap_enter(orig: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(orig)
    def enter(self: "Message") -> Any:
        st = _state
        r = orig(self)
        if st is None or st.off():
            return r
        from opentelemetry import context

        attrs = dict(st.attrs(self._client, "process", "process", self.entity), **st.message_attrs(self))
        span = st.tracer.start_span(
            "process " + attrs["messaging.destination.name"],
            kind=st.SpanKind.CONSUMER,
            attributes=attrs,
            links=st.links(self),
        )
        token = None if detached() else context.attach(st.trace.set_span_in_context(span))
        _open[self] = (
            st,
            span,
            token,
            time.monotonic(),
            {
                k: v
                for k, v in attrs.items()
                if k.startswith(("messaging.system", "messaging.destination", "messaging.operation", "server."))
            },
        )
        st.by_seq[(id(self._client), self.entity, self.sequence_number)] = span
        return r

    return enter


def _wrap_exit(orig: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(orig)
    def exit_(self: "Message", exc_type: Any, exc: Any, tb: Any) -> Any:
        got = _open.pop(self, None)
        if got is None:
            return orig(self, exc_type, exc, tb)
        from opentelemetry import context

        st, span, token, t0, attrs = got
        error: Optional[BaseException] = exc
        try:
            return orig(self, exc_type, exc, tb)
        except BaseException as e:
            error = e
            raise
        finally:
            st.by_seq.pop((id(self._client), self.entity, self.sequence_number), None)
            if error is not None:
                st.fail(span, error)
            if error is not None:
                attrs["error.type"] = type(error).__name__
            st.process_duration.record(time.monotonic() - t0, attrs)
            if token is not None:
                context.detach(token)
            span.end()

    return exit_


def _wrap_on_event(orig: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(orig)
    def on_event(self: "Client", ev: Any) -> Any:
        r = orig(self, ev)
        st = _state
        if st is not None and not st.off():
            from . import _core

            kind = {
                _core.PL_EVENT_RENEWED: "renewed",
                _core.PL_EVENT_LOST: "lost",
                _core.PL_EVENT_CAP_REACHED: "cap_reached",
                _core.PL_EVENT_RENEW_FAILED: "renew_failed",
            }.get(_core.pl_event_type(ev))
            m = _core.pl_event_message(ev)
            if kind:
                st.on_event(
                    self,
                    kind,
                    _core.pl_message_entity(m),
                    _core.pl_message_sequence_number(m),
                    _core.pl_message_id(m),
                    ev,
                )
        return r

    return on_event


def _wrap_init(orig: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(orig)
    def init(self: "Client", *args: Any, **kwargs: Any) -> None:
        orig(self, *args, **kwargs)
        if _state is not None:
            _state.clients.add(self)

    return init


def instrument(tracer_provider: Any = None, meter_provider: Any = None) -> None:
    """Turns tracing and metrics on for every client (the global providers,
    or the ones given). Needs ``opentelemetry-api``. Idempotent."""
    global _state
    try:
        import opentelemetry.trace  # noqa: F401
    except ImportError:
        raise ImportError("peeklock.telemetry needs opentelemetry-api: pip install 'peeklock[telemetry]'") from None
    from .client import Client, Message

    with _lock:
        if _state is not None:
            return
        st = _Instrumentation(tracer_provider, meter_provider)
        plan = [
            (Client, "send", _wrap_send),
            (Client, "send_batch", _wrap_send_batch),
            (Client, "peek_lock", lambda f: _wrap_receive(f, "peek_lock")),
            (Client, "receive_and_delete", lambda f: _wrap_receive(f, "receive_and_delete")),
            (Message, "complete", lambda f: _wrap_settle(f, "complete")),
            (Message, "abandon", lambda f: _wrap_settle(f, "abandon")),
            (Message, "_finish", _wrap_finish),
            (Message, "__enter__", _wrap_enter),
            (Message, "__exit__", _wrap_exit),
            (Client, "_on_event", _wrap_on_event),
            (Client, "__init__", _wrap_init),
        ]
        for cls, name, wrap in plan:
            orig = cls.__dict__[name]
            if getattr(orig, "_peeklock_permanent", False):
                continue  # Message.__exit__ from an earlier instrument()
            wrapped = wrap(orig)
            if name == "__exit__":
                wrapped._peeklock_permanent = True  # type: ignore[attr-defined]
            else:
                st.saved.append((cls, name, orig))
            setattr(cls, name, wrapped)
        Message.unlock = Message.abandon
        _state = st


def uninstrument() -> None:
    """Restores the plain methods. A ``with msg:`` block still open ends its
    process span as it would: Message.__exit__ keeps a wrapper that does only
    that (and nothing when no span is open)."""
    global _state
    from .client import Message

    with _lock:
        st, _state = _state, None
        if st is None:
            return
        for cls, name, orig in reversed(st.saved):
            setattr(cls, name, orig)
        Message.unlock = Message.abandon
