"""The emulator's model: entities, messages and their settings, the errors the
service answers with, and the clock tests can move. The broker (broker.py)
changes them; the store (store.py) saves them and loads them back as records.
"""

from __future__ import annotations

import math
import os
import re
import time
from collections import OrderedDict
from typing import Any, Dict, List, Optional, Tuple

from .props import TTL_MAX
from .rules import Filter, default_rules

DEFAULT_LOCK_DURATION = 60.0
DEFAULT_MAX_DELIVERY_COUNT = 10
DEFAULT_MAX_MESSAGE_SIZE = 262144
DEFAULT_MAX_SIZE_MB = 1024
DEFAULT_COMPLETIONS_KEPT = 100000
MAX_LOCK_DURATION = 300.0

DLQ = "$deadletterqueue"
_NAME_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$")


class BrokerError(Exception):
    """An operation failed the way the service fails it: HTTP status + Detail."""

    def __init__(self, status: int, detail: str, headers: Optional[Dict[str, str]] = None, close: bool = False):
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = headers or {}
        self.close = close  # close the connection after the answer (a request body left unread)


class Clock:
    """Wall clock plus an offset that only moves forward."""

    def __init__(self, offset: float = 0.0):
        self.offset = offset

    def now(self) -> float:
        return time.time() + self.offset


DEFAULT_DUP_WINDOW = 600.0
# the emulator clock stays before 9000-01-01: dates up to 9999 (a lock, a TTL later) still print
MAX_CLOCK = 221845392000.0
MIN_AUTO_DELETE = 300.0


class Settings:
    """An entity's settings. Every one of them is either obeyed by the broker or, where the
    emulator cannot honour a value, refused when it is set (atom.parse_description)."""

    __slots__ = (
        "lock_duration",
        "max_delivery_count",
        "default_ttl",
        "dl_on_expiration",
        "max_message_size",
        "max_size_mb",
        "requires_session",
        "requires_duplicate_detection",
        "enable_batched_operations",
        "dup_window",
        "auto_delete_on_idle",
        "forward_to",
        "forward_dlq_to",
        "user_metadata",
        "dl_on_filter_exceptions",
        "enable_partitioning",
        "enable_express",
        "support_ordering",
        "status",
    )

    lock_duration: float
    max_delivery_count: int
    default_ttl: float
    dl_on_expiration: bool
    max_message_size: int
    max_size_mb: int
    requires_session: bool
    requires_duplicate_detection: bool
    enable_batched_operations: bool
    dup_window: float
    auto_delete_on_idle: float
    forward_to: Optional[str]
    forward_dlq_to: Optional[str]
    user_metadata: Optional[str]
    dl_on_filter_exceptions: bool
    enable_partitioning: bool
    enable_express: bool
    support_ordering: bool
    status: str

    _DEFAULTS: Dict[str, Any] = {
        "lock_duration": DEFAULT_LOCK_DURATION,
        "max_delivery_count": DEFAULT_MAX_DELIVERY_COUNT,
        "default_ttl": TTL_MAX,
        "dl_on_expiration": False,
        "max_message_size": DEFAULT_MAX_MESSAGE_SIZE,
        "max_size_mb": DEFAULT_MAX_SIZE_MB,
        "requires_session": False,
        "requires_duplicate_detection": False,
        "enable_batched_operations": True,
        "dup_window": DEFAULT_DUP_WINDOW,
        "auto_delete_on_idle": TTL_MAX,
        "forward_to": None,
        "forward_dlq_to": None,
        "user_metadata": None,
        "dl_on_filter_exceptions": True,
        "enable_partitioning": False,
        "enable_express": False,
        "support_ordering": True,
        "status": "Active",
    }
    # JSON names (state dump, /$admin/ PUT, the store) of the settings that are not plain
    _JSON_NAMES = {
        "default_ttl": "default_message_time_to_live",
        "dl_on_expiration": "dead_lettering_on_message_expiration",
        "max_size_mb": "max_size_in_megabytes",
        "dup_window": "duplicate_detection_history_time_window",
        "forward_dlq_to": "forward_dead_lettered_messages_to",
        "dl_on_filter_exceptions": "dead_lettering_on_filter_evaluation_exceptions",
    }

    def __init__(self, **kw: Any):
        for k, v in self._DEFAULTS.items():
            setattr(self, k, kw.pop(k, v))
        if kw:
            raise TypeError("unknown settings: %s" % ", ".join(sorted(kw)))
        self.lock_duration = float(self.lock_duration)
        self.max_delivery_count = int(self.max_delivery_count)
        self.default_ttl = float(self.default_ttl)
        self.max_message_size = int(self.max_message_size)
        self.max_size_mb = int(self.max_size_mb)

    def to_json(self) -> Dict[str, Any]:
        d = {}
        for k in self._DEFAULTS:
            v = getattr(self, k)
            if k in ("default_ttl", "auto_delete_on_idle") and v >= TTL_MAX:
                v = None
            d[self._JSON_NAMES.get(k, k)] = v
        return d

    @classmethod
    def from_json(cls, d: Dict[str, Any]) -> "Settings":
        kw = {}
        for k in cls._DEFAULTS:
            name = cls._JSON_NAMES.get(k, k)
            if name in d:
                v = d[name]
                if k in ("default_ttl", "auto_delete_on_idle") and v is None:
                    v = TTL_MAX
                kw[k] = v
        return cls(**kw)

    def copy(self) -> "Settings":
        return Settings.from_json(self.to_json())


class Message:
    """One message in one entity. Bodies are shared between subscription copies."""

    __slots__ = (
        "seq",
        "message_id",
        "body",
        "content_type",
        "props",
        "custom",
        "ttl",
        "enqueued_at",
        "expires_at",
        "scheduled_at",
        "enq_seq",
        "dc",
        "lock_token",
        "locked_until",
        "state",
        "size",
        "bp_static",
    )

    def __init__(
        self,
        seq,
        message_id,
        body,
        content_type,
        props,
        custom,
        ttl,
        enqueued_at,
        expires_at,
        scheduled_at,
        enq_seq,
        dc=0,
        lock_token=None,
        locked_until=0.0,
        state="available",
        size=0,
    ):
        self.seq = seq
        self.message_id = message_id
        self.body = body
        self.content_type = content_type
        self.props = props  # dict of sender-set BrokerProperties, or None
        self.custom = custom  # list of (name, raw header value), or None
        self.ttl = ttl  # sender TimeToLive (seconds) or None
        self.enqueued_at = enqueued_at
        self.expires_at = expires_at
        self.scheduled_at = scheduled_at
        self.enq_seq = enq_seq
        self.dc = dc  # deliveries so far
        self.lock_token = lock_token
        self.locked_until = locked_until
        self.state = state  # available | locked | scheduled
        self.size = size
        # the BrokerProperties JSON of a lock of this message object, with %-slots for the
        # members that change per lock; built by Broker.broker_properties on first lock
        self.bp_static = None

    def summary(self) -> Dict[str, Any]:
        d = {
            "sequence_number": self.seq,
            "message_id": self.message_id,
            "delivery_count": self.dc,
            "locked": self.state == "locked",
            "locked_until": self.locked_until if self.state == "locked" else None,
            "state": self.state,
            "enqueued_time": self.enqueued_at,
            "expires_at": None if math.isinf(self.expires_at) else self.expires_at,
            "size": self.size,
        }
        if self.custom:
            for name, value in self.custom:
                if name == "DeadLetterReason":
                    d["dead_letter_reason"] = value.strip('"')
        return d


class Entity:
    """A queue, topic, subscription or dead-letter sub-queue."""

    def __init__(self, name: str, kind: str, settings: Settings, created: float):
        self.name = name  # display path as created, e.g. "t/subscriptions/Sub"
        self.key = name.lower()
        self.kind = kind  # queue | topic | subscription | deadletter
        self.settings = settings
        self.created = created
        self.updated = created
        self.next_seq = 1
        self.messages: Dict[int, Message] = {}
        self.avail: List[int] = []  # heap of sequence numbers
        self.lock_heap: List[Tuple[float, int, str]] = []
        self.exp_heap: List[Tuple[float, int]] = []
        self.sched_heap: List[Tuple[float, int]] = []
        self.locks: Dict[str, int] = {}
        self.by_id: Dict[str, int] = {}  # message id -> seq (last wins)
        self.waiters: List[Any] = []  # futures of long polls
        # message id -> times completed, the least recently completed first; bounded by
        # Broker.completions_kept, the ids dropped from the front counted in completed_forgotten
        self.completed: "OrderedDict[str, int]" = OrderedDict()
        self.completed_forgotten = 0
        self.dlq: Optional[Entity] = None
        self.parent: Optional[Entity] = None  # topic of a subscription; owner of a dlq
        self.subscriptions: Dict[str, Entity] = {}
        self.rules: Dict[str, Filter] = default_rules() if kind == "subscription" else {}
        for f in self.rules.values():
            f.created = created
        self.size_bytes = 0
        self.accessed = created  # last send, receive or update
        # duplicate detection: message id -> time first seen, oldest first
        self.seen_ids: "OrderedDict[str, float]" = OrderedDict()

    @property
    def display_path(self) -> str:
        """The path as the service spells it in Atom ids: ``t/Subscriptions/s``."""
        if self.kind == "subscription":
            topic, _, sub = self.name.split("/", 2)
            return "%s/Subscriptions/%s" % (topic, sub)
        return self.name

    def has_messages(self) -> bool:
        return self.kind != "topic"


_RANDOM_POOL = bytearray()


def _random16() -> bytearray:
    """16 bytes from os.urandom, fetched 4 KB at a time (one system call per 256 tokens)."""
    global _RANDOM_POOL
    if len(_RANDOM_POOL) < 16:
        _RANDOM_POOL = bytearray(os.urandom(4096))
    h = _RANDOM_POOL[-16:]
    del _RANDOM_POOL[-16:]
    return h


def new_lock_token() -> str:
    """A random (version 4) GUID in lowercase dashed form."""
    h = _random16()
    h[6] = (h[6] & 0x0F) | 0x40
    h[8] = (h[8] & 0x3F) | 0x80
    x = h.hex()
    return "%s-%s-%s-%s-%s" % (x[:8], x[8:12], x[12:16], x[16:20], x[20:])


def new_message_id() -> str:
    """A generated MessageId: a GUID in "N" form, 32 lowercase hex digits."""
    h = bytearray(os.urandom(16))
    h[6] = (h[6] & 0x0F) | 0x40
    h[8] = (h[8] & 0x3F) | 0x80
    return h.hex()
