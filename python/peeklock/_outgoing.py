"""Messages to send: ``OutgoingMessage`` (a plain value) and how it, a body with
properties, or a batch becomes the core's ``pl_outgoing`` / ``pl_batch``. Used by
the client, the asyncio client and the operator tools; imports none of them."""

from __future__ import annotations

import datetime as _dt
import inspect
import sys
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Dict,
    ForwardRef,
    Iterable,
    Mapping,
    Optional,
    Tuple,
    TypedDict,
    TypeVar,
    Union,
)

if TYPE_CHECKING:  # (only in annotations, which are not evaluated: no runtime dependency)
    if sys.version_info >= (3, 11):
        from typing import Unpack as Unpack
    else:
        from typing_extensions import Unpack as Unpack

from . import _core
from ._validate import _body_bytes, _check_datetime_property, _check_str, _number, _unix_time

PropertyValue = Union[str, int, float, bool, _dt.datetime]
Body = Union[bytes, bytearray, memoryview, str]


# the settable BrokerProperties string fields, keyword -> wire name: the core's one
# table (pl_broker_field_name/_arg, csrc/message.c); OutgoingMessage spells each keyword out
def _core_broker_fields() -> Dict[str, str]:
    fields: Dict[str, str] = {}
    for i in range(_core.pl_broker_field_count()):
        arg, name = _core.pl_broker_field_arg(i), _core.pl_broker_field_name(i)
        if arg is None or name is None:  # (not for 0 <= i < count)
            raise ImportError(f"peeklock: the core has no broker field {i}")
        fields[arg] = name
    return fields


_BROKER_FIELDS = _core_broker_fields()


class SendOptions(TypedDict, total=False):
    """The keyword arguments of ``Client.send`` (sync and asyncio) and of
    ``OutgoingMessage``: each may be left out or None (not set)."""

    properties: Optional[Mapping[str, PropertyValue]]
    message_id: Optional[str]
    label: Optional[str]
    content_type: Optional[str]
    time_to_live: Optional[float]
    correlation_id: Optional[str]
    session_id: Optional[str]
    partition_key: Optional[str]
    reply_to: Optional[str]
    reply_to_session_id: Optional[str]
    to: Optional[str]
    scheduled_enqueue_time: Union[int, float, _dt.datetime, None]
    via_partition_key: Optional[str]
    force_persistence: Optional[bool]


_SEND_OPTIONS = frozenset(SendOptions.__annotations__)
_F = TypeVar("_F", bound=Callable[..., Any])


def _check_options(options: Mapping[str, Any], where: str) -> None:
    """A TypeError, as Python words it, for a keyword SendOptions does not have."""
    for k in options:
        if k not in _SEND_OPTIONS:
            raise TypeError(f"{where}() got an unexpected keyword argument {k!r}")


def _send_signature(func: _F) -> _F:
    """func, whose ``**options`` are SendOptions, with a signature (inspect.signature,
    help()) that spells those keywords out, before its own keyword-only ones."""
    sig = inspect.signature(func)
    params = [p for p in sig.parameters.values() if p.kind is not p.VAR_KEYWORD]
    at = next((i for i, p in enumerate(params) if p.kind is p.KEYWORD_ONLY), len(params))
    options = [
        inspect.Parameter(
            name,
            inspect.Parameter.KEYWORD_ONLY,
            default=None,
            annotation=t.__forward_arg__ if isinstance(t, ForwardRef) else t,
        )
        for name, t in SendOptions.__annotations__.items()
    ]
    func.__signature__ = sig.replace(parameters=params[:at] + options + params[at:])  # type: ignore[attr-defined]
    return func


class OutgoingMessage:
    """A message to send: body plus optional broker and custom properties."""

    __slots__ = (
        "body",
        "properties",
        "content_type",
        "time_to_live",
        "scheduled_enqueue_time",
        "message_id",
        "label",
        "correlation_id",
        "session_id",
        "partition_key",
        "reply_to",
        "reply_to_session_id",
        "to",
        "via_partition_key",
        "force_persistence",
        "resend",
    )

    @_send_signature
    def __init__(self, body: Body = b"", *, resend: bool = False, **options: Unpack[SendOptions]) -> None:
        _check_options(options, "OutgoingMessage.__init__")
        get = options.get
        self.body = _body_bytes(body)
        # Opt-in: a send whose answer is lost is sent again instead of raising
        # OutcomeUnknownError. Needs message_id and an entity with duplicate detection.
        self.resend = bool(resend)
        properties = get("properties")
        if properties is not None and not isinstance(properties, Mapping):
            raise TypeError(f"properties must be a mapping, not {type(properties).__name__}")
        self.properties: Dict[str, PropertyValue] = dict(properties or {})
        for k, v in self.properties.items():
            _property_adder(k, v)  # (refused now, with the words a send would use)
        self.content_type = _check_str("content_type", get("content_type"), optional=True, empty=True)
        ttl = _number(get("time_to_live"), "time_to_live", optional=True)
        self.time_to_live = None if ttl is None else float(ttl)
        when = get("scheduled_enqueue_time")
        self.scheduled_enqueue_time = None if when is None else _unix_time(when, "scheduled_enqueue_time")
        self.message_id = _check_str("message_id", get("message_id"), optional=True, empty=True)
        self.label = _check_str("label", get("label"), optional=True, empty=True)
        self.correlation_id = _check_str("correlation_id", get("correlation_id"), optional=True, empty=True)
        self.session_id = _check_str("session_id", get("session_id"), optional=True, empty=True)
        self.partition_key = _check_str("partition_key", get("partition_key"), optional=True, empty=True)
        self.reply_to = _check_str("reply_to", get("reply_to"), optional=True, empty=True)
        self.reply_to_session_id = _check_str(
            "reply_to_session_id", get("reply_to_session_id"), optional=True, empty=True
        )
        self.to = _check_str("to", get("to"), optional=True, empty=True)
        self.via_partition_key = _check_str("via_partition_key", get("via_partition_key"), optional=True, empty=True)
        force_persistence = get("force_persistence")
        if force_persistence is not None and not isinstance(force_persistence, bool):
            raise TypeError(f"force_persistence must be a bool, not {type(force_persistence).__name__}")
        self.force_persistence = force_persistence

    def __repr__(self) -> str:
        return (
            f"OutgoingMessage({len(self.body)} bytes, message_id={self.message_id!r}, "
            f"label={self.label!r}, properties={sorted(self.properties)!r})"
        )

    def _build(self) -> Any:
        h = _core.pl_outgoing_new(self.body)
        if self.content_type is not None:
            _core.pl_outgoing_set_content_type(h, self.content_type)
        for attr, field in _BROKER_FIELDS.items():
            v = getattr(self, attr)
            if v is not None:
                _core.pl_outgoing_set_broker(h, field, v)
        if self.time_to_live is not None:
            _core.pl_outgoing_set_time_to_live(h, self.time_to_live)
        if self.scheduled_enqueue_time is not None:
            _core.pl_outgoing_set_scheduled_enqueue_time(h, self.scheduled_enqueue_time)
        if self.force_persistence is not None:
            _core.pl_outgoing_set_force_persistence(h, 1 if self.force_persistence else 0)
        _add_properties(h, self.properties)
        if self.resend:
            _core.pl_outgoing_set_resend(h, 1)
        return h


def _build_batch(messages: Iterable[Union["OutgoingMessage", Body]]) -> Tuple[Any, int]:
    """The C batch of messages and how many it holds (the sync and async send_batch)."""
    if isinstance(messages, (str, bytes, bytearray, OutgoingMessage)):
        raise TypeError("messages must be an iterable of OutgoingMessage or bytes")
    b = _core.pl_batch_new()
    n = 0
    for m in messages:
        om = m if isinstance(m, OutgoingMessage) else OutgoingMessage(m)
        _core.pl_batch_add(b, om._build())
        n += 1
    return b, n


def _property_adder(k: Any, v: Any) -> Tuple[Callable[[Any, str, Any], Any], Any]:
    """How the core takes custom property ``k = v``: its adder and the value to give it,
    or the TypeError / ValueError that refuses it. The one statement of the package's
    property typing: OutgoingMessage checks its properties with it when made, and
    every send adds them through it. Exact types first (the common case), then
    subclasses, sent as their base type (a str subclass as its text, an IntEnum as its
    number); a datetime as Unix seconds, by the core's rule. (The C layer takes
    NUL-terminated strings: a NUL would cut a name or value short.)"""
    if type(k) is not str:
        raise TypeError(f"property names must be str, not {type(k).__name__}")
    if "\x00" in k:
        raise ValueError(f"property name {k!r} must not contain NUL characters")
    t = type(v)
    if t is bool:
        return _core.pl_outgoing_add_bool, 1 if v else 0
    if t is int:
        return _core.pl_outgoing_add_int, v
    if t is float:
        return _core.pl_outgoing_add_double, v
    if isinstance(v, str):
        if "\x00" in v:
            raise ValueError(f"property {k!r} must not contain NUL characters")
        return _core.pl_outgoing_add_string, v if t is str else str(v)
    if isinstance(v, _dt.datetime):
        return _core.pl_outgoing_add_datetime, _check_datetime_property(k, v)
    if isinstance(v, int):
        return _core.pl_outgoing_add_int, int(v)
    if isinstance(v, float):
        return _core.pl_outgoing_add_double, float(v)
    raise TypeError(f"property {k!r} must be str, int, float, bool or datetime, not {type(v).__name__}")


def _add_properties(h: Any, properties: Mapping[str, Any]) -> None:
    for k, v in properties.items():
        add, value = _property_adder(k, v)
        add(h, k, value)


def _outgoing_handle(body: Union[Body, OutgoingMessage], options: SendOptions, where: str) -> Any:
    """The core's outgoing message for a send (``where``, named by a TypeError): body
    and send()'s keywords, or an OutgoingMessage alone."""
    properties = options.get("properties")
    given = len(options) - ("properties" in options)  # how many broker keywords
    if given:
        _check_options(options, where)
        given = sum(v is not None for k, v in options.items() if k != "properties")
    if type(body) is bytes and not given:
        # fast path: no broker properties to validate
        if properties is not None and not isinstance(properties, Mapping):
            raise TypeError(f"properties must be a mapping, not {type(properties).__name__}")
        h = _core.pl_outgoing_new(body)
        if properties:
            _add_properties(h, properties)
        return h
    if isinstance(body, OutgoingMessage):
        if properties is not None or given:
            raise TypeError("pass either an OutgoingMessage or keyword properties, not both")
        return body._build()
    return OutgoingMessage(body, **options)._build()
