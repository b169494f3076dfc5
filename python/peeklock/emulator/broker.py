"""The emulator's message broker: entities, messages, locks, TTL and dead-lettering.

Synchronous and single-threaded: the aiohttp server calls it from the event loop.
Time comes from :class:`Clock`, which tests can move forward. Every change is
reported to a store (``store.py``) so that ``--data-dir`` survives a restart.
"""

from __future__ import annotations

import heapq
import math
import time
from collections import Counter
from typing import Any, Dict, Iterable, List, Optional, Tuple

from .model import (
    _NAME_RE,
    DEFAULT_COMPLETIONS_KEPT,
    DLQ,
    MAX_CLOCK,
    BrokerError,
    Clock,
    Entity,
    Message,
    Settings,
    new_lock_token,
    new_message_id,
)
from .props import TTL_MAX, broker_properties_json, broker_property_entry, format_number, rfc1123
from .rules import Context, Filter, rule_to_json
from .store import NullStore as _NullStore
from .store import Snapshot

# BrokerProperties members built for each lock of a message (the rest are serialized once)
_BP_LOCK_SLOTS = {
    "DeliveryCount": '"DeliveryCount":%d',
    "LockToken": '"LockToken":"%s"',
    "LockedUntilUtc": '"LockedUntilUtc":"%s"',
    "TimeToLive": '"TimeToLive":%s',
}


_NULL = _NullStore()


class Broker:
    def __init__(
        self,
        store=None,
        clock: Optional[Clock] = None,
        namespace: str = "peeklock",
        completions_kept: int = DEFAULT_COMPLETIONS_KEPT,
    ):
        self.store = store or _NullStore()
        self.completions_kept = completions_kept  # per entity, see Entity.completed
        self.clock = clock or Clock()
        self.namespace = namespace
        self.entities: Dict[str, Entity] = {}  # key (lower case path) -> Entity, dlqs included
        self.counters: Counter[str] = Counter()
        self.wakeup = None  # callable(entity) set by the server

    # ----- entities --------------------------------------------------------------------------

    def get(self, key: str) -> Optional[Entity]:
        return self.entities.get(key)

    def create_entity(
        self, name: str, kind: str, settings: Optional[Settings] = None, replace: bool = False, persist: bool = True
    ) -> Tuple[Entity, bool]:
        """Create (returns (entity, True)) or, with replace, update settings ((entity, False))."""
        name = name.strip("/")
        key = name.lower()
        settings = settings or Settings()
        existing = self.entities.get(key)
        if existing is not None:
            if not replace:
                raise BrokerError(409, "SubCode=40900. Conflict. The messaging entity '%s' already exists." % name)
            if existing.kind != kind:
                raise BrokerError(409, "SubCode=40900. Conflict. '%s' is a %s." % (name, existing.kind))
            existing.settings = settings
            existing.updated = existing.accessed = self.clock.now()
            if existing.dlq is not None:
                existing.dlq.settings = settings
            if persist:
                self.store.save_entity(existing)
            return existing, False
        if kind == "subscription":
            parts = name.split("/")
            if len(parts) != 3 or parts[1].lower() != "subscriptions":
                raise BrokerError(400, "A subscription path is 'topic/subscriptions/name'.")
            topic = self.entities.get(parts[0].lower())
            if topic is None or topic.kind != "topic":
                raise BrokerError(404, "The messaging entity '%s' could not be found." % parts[0])
            name = "%s/subscriptions/%s" % (topic.name, parts[2])
            key = name.lower()
            if not _NAME_RE.match(parts[2]) or len(parts[2]) > 50:
                raise BrokerError(
                    400,
                    "The subscription name '%s' is invalid: use letters, digits, '.', '-' "
                    "and '_' (at most 50)." % parts[2][:60],
                )
        else:
            if not name or "/" in name and kind == "topic" or len(name) > 260:
                raise BrokerError(400, "The entity path '%s' is invalid." % name[:100])
            for seg in key.split("/"):
                if (
                    seg in ("messages", "subscriptions", "rules", DLQ, "$admin", "$resources")
                    or not seg
                    or not _NAME_RE.match(seg)
                ):
                    raise BrokerError(
                        400,
                        "The entity path '%s' is invalid: use letters, digits, '.', '-', '_' "
                        "and '/' between segments." % name[:100],
                    )
        now = self.clock.now()
        ent = Entity(name, kind, settings, now)
        if kind in ("queue", "subscription"):
            dlq = Entity(name + "/$DeadLetterQueue", "deadletter", settings, now)
            dlq.parent = ent
            ent.dlq = dlq
            self.entities[dlq.key] = dlq
        if kind == "subscription":
            topic = self.entities[key.split("/")[0]]
            ent.parent = topic
            topic.subscriptions[key] = ent
        self.entities[key] = ent
        if persist:
            self.store.save_entity(ent)
        return ent, True

    def set_rule(self, sub: Entity, name: str, flt: Filter, replace: bool = False) -> bool:
        """Add (True) or, with replace, update (False) a rule of a subscription."""
        if sub.kind != "subscription":
            raise BrokerError(400, "Rules belong to subscriptions.")
        if not name or len(name) > 50 or "/" in name:
            raise BrokerError(400, "The rule name '%s' is invalid." % name[:60])
        exists = name in sub.rules
        if exists and not replace:
            raise BrokerError(409, "SubCode=40900. Conflict. The rule '%s' already exists." % name)
        sub.rules[name] = flt
        self.store.save_rules(sub)
        return not exists

    def delete_rule(self, sub: Entity, name: str) -> None:
        if name not in sub.rules:
            raise BrokerError(404, "The rule '%s' could not be found." % name)
        del sub.rules[name]
        self.store.save_rules(sub)

    def delete_entity(self, name: str) -> Entity:
        key = name.strip("/").lower()
        ent = self.entities.get(key)
        if ent is None or ent.kind == "deadletter":
            raise BrokerError(404, "No service is hosted at the specified address.")
        for sub in list(ent.subscriptions.values()):
            self._drop(sub)
        self._drop(ent)
        if ent.parent is not None and ent.kind == "subscription":
            ent.parent.subscriptions.pop(ent.key, None)
        return ent

    def _drop(self, ent: Entity) -> None:
        self.entities.pop(ent.key, None)
        if ent.dlq is not None:
            self.entities.pop(ent.dlq.key, None)
            self._wake_all(ent.dlq)
        self._wake_all(ent)
        self.store.delete_entity(ent)

    def _wake_all(self, ent: Entity) -> None:
        for fut in ent.waiters:
            if not fut.done():
                fut.set_result(None)

    def _wake_one(self, ent: Entity) -> None:
        for fut in ent.waiters:
            if not fut.done():
                fut.set_result(None)
                return

    def wake_everything(self) -> None:
        for ent in self.entities.values():
            self._wake_all(ent)

    # ----- clock -----------------------------------------------------------------------------

    def clock_offset_ok(self, offset: float) -> bool:
        """Whether the clock with this offset stays a date every answer can print (and a lock,
        a TTL or a year of idling later still is one)."""
        return math.isfinite(offset) and time.time() + offset <= MAX_CLOCK

    def advance(self, seconds: float) -> float:
        if (
            not (isinstance(seconds, (int, float)) and not isinstance(seconds, bool))
            or not math.isfinite(seconds)
            or seconds < 0
        ):
            raise BrokerError(400, "'seconds' must be a finite number >= 0.")
        if not self.clock_offset_ok(self.clock.offset + float(seconds)):
            raise BrokerError(
                400,
                "'seconds' would move the clock past %s, the last date the emulator "
                "can represent; the clock is unchanged." % rfc1123(MAX_CLOCK),
            )
        self.clock.offset += float(seconds)
        self.store.save_meta("clock_offset", self.clock.offset)
        now = self.clock.now()
        self.reap_idle(now)
        for ent in list(self.entities.values()):
            self.sweep(ent, now)
        self.wake_everything()
        return now

    def reap_idle(self, now: float) -> None:
        """Delete the entities idle for their AutoDeleteOnIdle (no send, receive or update)."""
        for ent in list(self.entities.values()):
            if (
                ent.kind in ("queue", "topic", "subscription")
                and ent.key in self.entities
                and ent.settings.auto_delete_on_idle < TTL_MAX
                and now - self.last_access(ent) >= ent.settings.auto_delete_on_idle
            ):
                self.delete_entity(ent.key)

    @staticmethod
    def last_access(ent: Entity) -> float:
        """A topic is in use while any of its subscriptions is."""
        t = ent.accessed
        for sub in ent.subscriptions.values():
            t = max(t, sub.accessed)
        return t

    # ----- send ------------------------------------------------------------------------------

    @staticmethod
    def too_large(ent: Entity, size: object, what: str = "message", close: bool = False) -> BrokerError:
        """The 403 of a message (or batch) over the entity's limit; `size` in bytes, or a text
        such as "more than N" when a streamed body was cut short."""
        return BrokerError(
            403,
            "SubCode=40300. The size of the %s (%s bytes) exceeds the maximum message size "
            "limit of %d bytes for '%s'." % (what, size, ent.settings.max_message_size, ent.name),
            close=close,
        )

    def check_size(self, ent: Entity, size: int, what: str = "message") -> None:
        if size > ent.settings.max_message_size:
            raise self.too_large(ent, size, what)
        if ent.kind == "topic":
            targets = list(ent.subscriptions.values())
        else:
            targets = [ent]
        for t in targets:
            if t.size_bytes + size > t.settings.max_size_mb * 1024 * 1024:
                raise BrokerError(
                    403,
                    "SubCode=40301. Quota exceeded: the entity '%s' has reached its maximum "
                    "size of %d MB." % (t.name, t.settings.max_size_mb),
                )

    def send(
        self,
        ent: Entity,
        body: bytes,
        content_type: Optional[str],
        props: Dict[str, Any],
        custom: List[Tuple[str, str]],
    ) -> None:
        """Enqueue one message (already validated) into a queue or a topic's subscriptions."""
        if ent.kind not in ("queue", "topic"):
            raise BrokerError(400, "Cannot send to '%s': send to a queue or a topic." % ent.name)
        if ent.settings.requires_session and "SessionId" not in props:
            raise BrokerError(400, "The SessionId was not set on a message, and it cannot be sent to the entity.")
        now = self.clock.now()
        ent.accessed = now
        props = dict(props)
        message_id = props.pop("MessageId", None) or new_message_id()
        ttl = props.pop("TimeToLive", None)
        sched = props.pop("ScheduledEnqueueTimeUtc", None)
        if ent.settings.requires_duplicate_detection and self._duplicate(ent, message_id, now):
            self.counters["duplicates_dropped"] += 1
            return
        size = len(body) + sum(len(k) + len(v) for k, v in custom) + sum(len(k) + len(str(v)) for k, v in props.items())
        msg = Message(
            seq=0,
            message_id=message_id,
            body=body,
            content_type=content_type,
            props=props or None,
            custom=custom or None,
            ttl=ttl,
            enqueued_at=now,
            expires_at=0.0,
            scheduled_at=sched,
            enq_seq=0,
            size=size,
        )
        if ent.kind == "topic":
            if sched is not None and sched > now:
                self._enqueue(ent, msg, now)  # held by the topic until due (sweep publishes it)
            else:
                self._publish(ent, msg, now)
        else:
            self._deliver(ent, msg, now)

    def _duplicate(self, ent: Entity, message_id: str, now: float) -> bool:
        seen = ent.seen_ids
        window = ent.settings.dup_window
        while seen:
            first = next(iter(seen.values()))
            if now - first < window:
                break
            mid, _ = seen.popitem(last=False)
            self.store.forget_seen(ent, mid)
        t = seen.get(message_id)
        if t is not None and now - t < window:
            return True
        seen[message_id] = now
        self.store.save_seen(ent, message_id, now)
        return False

    def _publish(self, topic: Entity, msg: Message, now: float, hops: int = 0) -> None:
        """A topic's message to every subscription whose rules take it (one copy per matching rule
        with an action, plus one for the matching rules without)."""
        enq_seq = msg.seq
        if not enq_seq:
            enq_seq = topic.next_seq
            topic.next_seq += 1
            self.store.save_entity(topic)
        enqueued = msg.enqueued_at if msg.scheduled_at is None else max(msg.enqueued_at, msg.scheduled_at)
        ctx = Context(msg.props, msg.message_id, msg.content_type, msg.custom)
        ctx.system.pop("TimeToLive", None)
        for sub in list(topic.subscriptions.values()):
            plain = False
            variants = []
            for f in sub.rules.values():
                if f.matches(ctx):
                    if f.action is None:
                        plain = True
                    else:
                        variants.append(f.action.apply(msg.props, msg.custom, msg.message_id, msg.content_type))
            if plain:
                variants.insert(0, (msg.props, msg.custom))
            for props, custom in variants:
                self._deliver(
                    sub,
                    Message(
                        seq=0,
                        message_id=msg.message_id,
                        body=msg.body,
                        content_type=msg.content_type,
                        props=props,
                        custom=custom,
                        ttl=msg.ttl,
                        enqueued_at=enqueued,
                        expires_at=0.0,
                        scheduled_at=msg.scheduled_at,
                        enq_seq=enq_seq,
                        size=msg.size,
                    ),
                    now,
                    hops,
                )

    def _deliver(self, ent: Entity, msg: Message, now: float, hops: int = 0) -> None:
        """Into ent, or on to its ForwardTo entity (at most 4 hops, as the service allows)."""
        target = self._forward_target(ent, ent.settings.forward_to, hops)
        if target is None:
            self._enqueue(ent, msg, now)
        elif target.kind == "topic":
            target.accessed = now
            msg.seq = 0
            self._publish(target, msg, now, hops + 1)
        else:
            target.accessed = now
            self._deliver(target, msg, now, hops + 1)

    def _forward_target(self, ent: Entity, path: Optional[str], hops: int) -> Optional[Entity]:
        if not path or hops >= 4:
            return None
        target = self.entities.get(path.lower())
        if target is None or target is ent or target.kind not in ("queue", "topic"):
            return None
        return target

    def _enqueue(self, ent: Entity, msg: Message, now: float, new_seq: bool = True) -> None:
        if new_seq:
            msg.seq = ent.next_seq
            ent.next_seq += 1
        ttl = msg.ttl if msg.ttl is not None else TTL_MAX
        eff = min(ttl, ent.settings.default_ttl) if ent.kind not in ("deadletter", "topic") else TTL_MAX
        msg.expires_at = math.inf if eff >= TTL_MAX else msg.enqueued_at + eff
        ent.messages[msg.seq] = msg
        ent.by_id[msg.message_id] = msg.seq
        ent.size_bytes += msg.size
        if msg.scheduled_at is not None and msg.scheduled_at > now and msg.state != "locked":
            msg.state = "scheduled"
            heapq.heappush(ent.sched_heap, (msg.scheduled_at, msg.seq))
        elif msg.state == "available":
            heapq.heappush(ent.avail, msg.seq)
        if not math.isinf(msg.expires_at):
            heapq.heappush(ent.exp_heap, (msg.expires_at, msg.seq))
        if msg.state == "locked":
            heapq.heappush(ent.lock_heap, (msg.locked_until, msg.seq, msg.lock_token))
            ent.locks[msg.lock_token] = msg.seq
        self.store.save_entity(ent)
        self.store.insert_message(ent, msg)
        if msg.state == "available":
            self._wake_one(ent)

    def restore(self, snap: Snapshot) -> None:
        """Rebuilds the in-memory state from what a store loaded (``--data-dir``)."""
        off = snap.clock_offset
        # an offset that leaves the range of dates (saved before advance() refused such
        # offsets) is dropped rather than making every answer fail
        if off is not None and self.clock_offset_ok(off):
            self.clock.offset = max(self.clock.offset, off)
        for r in snap.entities:  # queues, topics, then subscriptions
            made, _ = self.create_entity(r.name, r.kind, r.settings, replace=True, persist=False)
            made.next_seq = r.next_seq
            made.created = r.created
            made.updated = r.updated
            made.accessed = max(made.accessed, r.updated)
        for key, rules in snap.rules.items():
            ent = self.entities.get(key)
            if ent is not None:
                ent.rules = rules
        now = self.clock.now()
        for key, msg in snap.messages:
            ent = self.entities.get(key)
            if ent is not None:
                self.restore_message(ent, msg, now)
        for key, mid, n in snap.completed:
            ent = self.entities.get(key)
            if ent is not None:
                ent.completed[mid] = n
        for key, mid, t in snap.seen:
            ent = self.entities.get(key)
            if ent is not None:
                ent.seen_ids[mid] = t
        for key, n in snap.forgotten:
            ent = self.entities.get(key)
            if ent is not None:
                ent.completed_forgotten = n
        for ent in self.entities.values():
            self.forget_completions(ent)  # a smaller --completions-kept than last time

    def restore_message(self, ent: Entity, msg: Message, now: float) -> None:
        """Put back a message loaded from the store (no store writes)."""
        store, self.store = self.store, _NULL
        try:
            if msg.state == "locked" and msg.lock_token is None:
                msg.state = "available"
            if msg.state == "scheduled":
                msg.state = "available"  # _enqueue decides again from scheduled_at
            if ent.kind == "topic":  # held until published: the next sweep publishes it if due
                msg.state = "scheduled"
                ent.messages[msg.seq] = msg
                ent.size_bytes += msg.size
                heapq.heappush(ent.sched_heap, (msg.scheduled_at or now, msg.seq))
                return
            self._enqueue(ent, msg, now, new_seq=False)
        finally:
            self.store = store

    def _remove(self, ent: Entity, msg: Message) -> None:
        ent.messages.pop(msg.seq, None)
        if ent.by_id.get(msg.message_id) == msg.seq:
            del ent.by_id[msg.message_id]
        if msg.lock_token is not None:
            ent.locks.pop(msg.lock_token, None)
        ent.size_bytes -= msg.size
        self.store.delete_message(ent, msg.seq)

    def dead_letter(self, ent: Entity, msg: Message, reason: str, description: str) -> None:
        self._remove(ent, msg)
        if ent.dlq is None:
            return
        now = self.clock.now()
        custom = [c for c in (msg.custom or []) if c[0] not in ("DeadLetterReason", "DeadLetterErrorDescription")]
        custom.append(("DeadLetterReason", '"%s"' % reason))
        custom.append(("DeadLetterErrorDescription", '"%s"' % description))
        moved = Message(
            seq=msg.seq,
            message_id=msg.message_id,
            body=msg.body,
            content_type=msg.content_type,
            props=msg.props,
            custom=custom,
            ttl=msg.ttl,
            enqueued_at=msg.enqueued_at,
            expires_at=0.0,
            scheduled_at=None,
            enq_seq=msg.enq_seq,
            dc=msg.dc,
            size=msg.size,
        )
        self.counters["dead_lettered"] += 1
        target = self._forward_target(ent, ent.settings.forward_dlq_to, 0)
        if target is not None:  # ForwardDeadLetteredMessagesTo: a new message there
            moved.seq = 0
            moved.enqueued_at = now
            moved.dc = 0
            target.accessed = now
            if target.kind == "topic":
                self._publish(target, moved, now, 1)
            else:
                self._deliver(target, moved, now, 1)
            return
        self._enqueue(ent.dlq, moved, now, new_seq=False)

    # ----- time-driven changes ---------------------------------------------------------------

    def sweep(self, ent: Entity, now: float) -> None:
        """Apply everything that is due at `now`: lock expiry, scheduled messages, TTL."""
        lh = ent.lock_heap
        while lh and lh[0][0] <= now:
            _, seq, token = heapq.heappop(lh)
            msg = ent.messages.get(seq)
            if msg is not None and msg.state == "locked" and msg.lock_token == token and msg.locked_until <= now:
                self.counters["locks_expired"] += 1
                self._release(ent, msg, now)
        sh = ent.sched_heap
        while sh and sh[0][0] <= now:
            _, seq = heapq.heappop(sh)
            msg = ent.messages.get(seq)
            if msg is not None and msg.state == "scheduled" and ent.kind == "topic":
                self._remove(ent, msg)
                self._publish(ent, msg, now)
            elif msg is not None and msg.state == "scheduled":
                msg.state = "available"
                heapq.heappush(ent.avail, seq)
                self.store.update_message(ent, msg)
                self._wake_one(ent)
        eh = ent.exp_heap
        while eh and eh[0][0] <= now:
            _, seq = heapq.heappop(eh)
            msg = ent.messages.get(seq)
            if msg is not None and msg.state != "locked" and msg.expires_at <= now:
                self._expire(ent, msg)

    def _expire(self, ent: Entity, msg: Message) -> None:
        self.counters["expired"] += 1
        if ent.settings.dl_on_expiration and ent.dlq is not None:
            self.dead_letter(ent, msg, "TTLExpiredException", "The message expired and was dead lettered.")
        else:
            self._remove(ent, msg)

    def _release(self, ent: Entity, msg: Message, now: float) -> None:
        """A lock ended without completion (unlock or expiry)."""
        if msg.lock_token is not None:
            ent.locks.pop(msg.lock_token, None)
        msg.lock_token = None
        msg.locked_until = 0.0
        msg.state = "available"
        if ent.kind != "deadletter" and msg.dc >= ent.settings.max_delivery_count:
            self.dead_letter(
                ent,
                msg,
                "MaxDeliveryCountExceeded",
                "Message could not be consumed after %d delivery attempts." % ent.settings.max_delivery_count,
            )
            return
        if msg.expires_at <= now:
            self._expire(ent, msg)
            return
        heapq.heappush(ent.avail, msg.seq)
        self.store.update_message(ent, msg)
        self._wake_one(ent)

    def next_event(self, ent: Entity) -> float:
        """Emulator time of the next lock expiry or scheduled arrival in `ent` (inf if none)."""
        t = math.inf
        if ent.lock_heap:
            t = ent.lock_heap[0][0]
        if ent.sched_heap and ent.sched_heap[0][0] < t:
            t = ent.sched_heap[0][0]
        if (
            ent.kind == "subscription"
            and ent.parent is not None
            and ent.parent.sched_heap
            and ent.parent.sched_heap[0][0] < t
        ):
            t = ent.parent.sched_heap[0][0]
        return t

    def counts(self, ent: Entity) -> Dict[str, int]:
        """Active, dead-letter and scheduled message counts, as CountDetails reports them."""
        if ent.kind == "topic":
            return {"active": 0, "dead_letter": 0, "scheduled": len(ent.messages)}
        scheduled = sum(1 for m in ent.messages.values() if m.state == "scheduled")
        return {
            "active": len(ent.messages) - scheduled,
            "scheduled": scheduled,
            "dead_letter": len(ent.dlq.messages) if ent.dlq is not None else 0,
        }

    # ----- receive ---------------------------------------------------------------------------

    def try_receive(self, ent: Entity, peek_lock: bool) -> Optional[Message]:
        now = self.clock.now()
        if ent.kind == "subscription" and ent.parent is not None and ent.parent.sched_heap:
            self.sweep(ent.parent, now)
        self.sweep(ent, now)
        ent.accessed = now
        av = ent.avail
        while av:
            seq = heapq.heappop(av)
            msg = ent.messages.get(seq)
            if msg is None or msg.state != "available":
                continue
            if msg.expires_at <= now:
                self._expire(ent, msg)
                continue
            msg.dc += 1
            if peek_lock:
                msg.state = "locked"
                msg.lock_token = new_lock_token()
                msg.locked_until = now + ent.settings.lock_duration
                ent.locks[msg.lock_token] = seq
                heapq.heappush(ent.lock_heap, (msg.locked_until, seq, msg.lock_token))
                self.store.update_message(ent, msg)
            else:
                self._remove(ent, msg)
            return msg
        return None

    def _locked(self, ent: Entity, ident: str, token: str) -> Message:
        now = self.clock.now()
        self.sweep(ent, now)
        seq = ent.locks.get(token.lower())
        msg = ent.messages.get(seq) if seq is not None else None
        if (
            msg is None
            or msg.state != "locked"
            or msg.locked_until <= now
            or (ident != str(msg.seq) and ident != msg.message_id)
        ):
            raise BrokerError(
                404,
                "The lock supplied is invalid. Either the lock expired, or the message "
                "has already been removed from the queue, or was received by a different receiver instance.",
            )
        return msg

    def complete(self, ent: Entity, ident: str, token: str) -> Message:
        msg = self._locked(ent, ident, token)
        self._remove(ent, msg)
        mid = msg.message_id
        if self.completions_kept == 0:  # nothing is kept: forgotten at once, only counted
            ent.completed_forgotten += 1
            self.store.forget_completed(ent, mid, ent.completed_forgotten)
        else:
            n = ent.completed.pop(mid, 0) + 1
            ent.completed[mid] = n  # the newest end; older ids beyond the bound go
            self.forget_completions(ent)
            self.store.save_completed(ent, mid, n)
        self.counters["completed"] += 1
        return msg

    def forget_completions(self, ent: Entity) -> None:
        """Drop the least recently completed ids beyond ``completions_kept``, counting them."""
        done = ent.completed
        while len(done) > self.completions_kept:
            mid, _ = done.popitem(last=False)
            ent.completed_forgotten += 1
            self.store.forget_completed(ent, mid, ent.completed_forgotten)

    def unlock(self, ent: Entity, ident: str, token: str) -> Message:
        msg = self._locked(ent, ident, token)
        self._release(ent, msg, self.clock.now())
        return msg

    def renew(self, ent: Entity, ident: str, token: str) -> Message:
        msg = self._locked(ent, ident, token)
        msg.locked_until = self.clock.now() + ent.settings.lock_duration
        heapq.heappush(ent.lock_heap, (msg.locked_until, msg.seq, msg.lock_token))
        self.store.update_message(ent, msg)
        return msg

    # ----- views -----------------------------------------------------------------------------

    def broker_properties(self, ent: Entity, msg: Message, locked: bool) -> str:
        """``broker_properties_json(broker_fields(...))``, with the members that cannot change
        for this message (sender properties, sequence numbers, enqueue time, id, state)
        serialized once and only the delivery count, lock and TimeToLive built per answer."""
        if not locked:
            return broker_properties_json(self.broker_fields(ent, msg, locked))
        template = msg.bp_static
        if template is None:
            # Every member in key order, the four that change per lock (_BP_LOCK_SLOTS) as
            # %-slots: one format fills in an answer.
            f = self.broker_fields(ent, msg, True)
            members = []
            for k in sorted(f):
                slot = _BP_LOCK_SLOTS.get(k)
                members.append(slot or broker_property_entry(k, f[k]).replace("%", "%%"))
            template = msg.bp_static = "{" + ",".join(members) + "}"
        return template % (
            msg.dc,
            msg.lock_token,
            rfc1123(msg.locked_until),
            format_number(self.time_to_live(ent, msg)),
        )

    @staticmethod
    def time_to_live(ent: Entity, msg: Message) -> float:
        """The message's own TimeToLive, else its entity's default (a dead-letter queue's parent's)."""
        if msg.ttl is not None:
            return float(msg.ttl)
        src = ent.parent.settings if ent.kind == "deadletter" and ent.parent else ent.settings
        return float(min(src.default_ttl, TTL_MAX))

    def broker_fields(self, ent: Entity, msg: Message, locked: bool) -> Dict[str, Any]:
        f: Dict[str, Any] = {}
        if msg.props:
            f.update(msg.props)
        f["DeliveryCount"] = msg.dc
        f["EnqueuedSequenceNumber"] = msg.enq_seq
        f["EnqueuedTimeUtc"] = rfc1123(msg.enqueued_at)
        f["MessageId"] = msg.message_id
        f["SequenceNumber"] = msg.seq
        f["State"] = "Active"
        f["TimeToLive"] = self.time_to_live(ent, msg)
        if msg.scheduled_at is not None:
            f["ScheduledEnqueueTimeUtc"] = rfc1123(msg.scheduled_at)
        if locked:
            f["LockToken"] = msg.lock_token
            f["LockedUntilUtc"] = rfc1123(msg.locked_until)
        return f

    def reset(self) -> None:
        now = self.clock.now()
        for ent in self.entities.values():
            for msg in list(ent.messages.values()):
                self._remove(ent, msg)
            ent.messages.clear()
            ent.avail.clear()
            ent.lock_heap.clear()
            ent.exp_heap.clear()
            ent.sched_heap.clear()
            ent.locks.clear()
            ent.by_id.clear()
            ent.completed.clear()
            ent.completed_forgotten = 0
            ent.seen_ids.clear()
            ent.size_bytes = 0
            ent.next_seq = 1
            ent.updated = now
            self.store.save_entity(ent)
            self._wake_all(ent)
        self.store.clear_completed()
        self.store.clear_seen()
        self.counters.clear()

    def entity_state(self, ent: Entity) -> Dict[str, Any]:
        d: Dict[str, Any] = {
            "kind": ent.kind,
            "path": ent.name,
            "next_sequence_number": ent.next_seq,
            "message_count": len(ent.messages),
            "messages": [m.summary() for _, m in sorted(ent.messages.items())],
            "completed": dict(ent.completed),
            "completed_forgotten": ent.completed_forgotten,
        }
        d.update(ent.settings.to_json())
        if ent.dlq is not None:
            d["dead_letter"] = [m.summary() for _, m in sorted(ent.dlq.messages.items())]
            d["dead_letter_path"] = ent.dlq.name
        if ent.kind == "topic":
            d["subscriptions"] = sorted(s.name for s in ent.subscriptions.values())
        if ent.kind == "subscription":
            d["rules"] = {name: rule_to_json(f) for name, f in ent.rules.items()}
        return d

    def state(self) -> Dict[str, Any]:
        now = self.clock.now()
        for ent in list(self.entities.values()):
            self.sweep(ent, now)
        return {
            "now": now,
            "offset": self.clock.offset,
            "entities": {e.name: self.entity_state(e) for e in self.entities.values()},
            "counters": dict(self.counters),
        }

    def iter_entities(self, kind: str) -> Iterable[Entity]:
        return (e for e in self.entities.values() if e.kind == kind)
