"""Operator tools on top of the client: dead-letter resubmission, purge, and
NDJSON export and import. The ``peeklock`` command line and the ``Client``
methods of the same names call these.

Every tool keeps the client's promise: a message is completed (removed) only
after what replaces it (a resubmitted copy) was sent, or after it was written
out; when a send's outcome is unknown, the report says so, so that each
possible duplicate is explained."""

from __future__ import annotations

import base64
import binascii
import datetime as _dt
import fnmatch
import json
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Tuple

from ._outgoing import _BROKER_FIELDS, OutgoingMessage
from .errors import Error, LockLostError, OutcomeUnknownError

if TYPE_CHECKING:
    from .client import Client, Message
    from .management import EntityInfo

__all__ = [
    "DEAD_LETTER_PROPERTIES",
    "ResubmitReport",
    "PurgeReport",
    "to_outgoing",
    "message_to_record",
    "record_to_outgoing",
    "matches",
    "parse_filters",
    "check_resubmit_limits",
    "resubmit_dead_letters",
    "purge",
]

#: Properties the service adds when it dead-letters a message; a resubmitted copy drops them.
DEAD_LETTER_PROPERTIES = ("DeadLetterReason", "DeadLetterErrorDescription", "DeadLetterDescription")

_DLQ = "/$deadletterqueue"


def dead_letter_path(entity: str) -> str:
    entity = entity.rstrip("/")
    return entity if entity.lower().endswith(_DLQ) else entity + "/$DeadLetterQueue"


def parent_of(dlq_path: str) -> str:
    return dlq_path[: -len(_DLQ)] if dlq_path.lower().endswith(_DLQ) else dlq_path


# --------------------------------------------------------------------------
# message copies and records
# --------------------------------------------------------------------------

# the broker fields a message carries over (the core's table, as send takes them), and its content type
_COPIED = (*_BROKER_FIELDS, "content_type")


def to_outgoing(
    msg: "Message", *, keep_message_id: bool = True, drop: Iterable[str] = DEAD_LETTER_PROPERTIES
) -> "OutgoingMessage":
    """An OutgoingMessage carrying ``msg``'s body, content type, settable broker
    properties and custom properties (less ``drop``), ready to send again."""
    dropped = set(drop)
    kw: Dict[str, Any] = {k: getattr(msg, k) for k in _COPIED if getattr(msg, k) is not None}
    if not keep_message_id:
        kw.pop("message_id", None)
    props = {k: v for k, v in msg.properties.items() if k not in dropped}
    return OutgoingMessage(msg.body, properties=props, **kw)


def _typed(value: Any) -> Dict[str, Any]:
    if isinstance(value, bool):
        return {"type": "bool", "value": value}
    if isinstance(value, int):
        return {"type": "int", "value": value}
    if isinstance(value, float):
        return {"type": "float", "value": value}
    if isinstance(value, _dt.datetime):
        return {"type": "datetime", "value": value.isoformat()}
    return {"type": "str", "value": str(value)}


def parse_typed(name: str, kind: str, value: Any) -> Any:
    """A property value from its type name and text (or JSON value). Raises ValueError."""
    try:
        if kind == "str":
            return str(value)
        if kind == "int":
            if isinstance(value, bool) or (isinstance(value, float)):
                raise ValueError
            v = int(value)
            if not -(2**63) <= v < 2**63:
                raise ValueError(f"property {name!r}: {value} does not fit a 64-bit integer")
            return v
        if kind == "float":
            return float(value)  # a finite number: the core's rule, checked when it is sent
        if kind == "bool":
            if isinstance(value, bool):
                return value
            if value in ("true", "false"):
                return value == "true"
            raise ValueError
        if kind == "datetime":
            text = str(value)
            d = _dt.datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
            return d if d.tzinfo else d.replace(tzinfo=_dt.timezone.utc)
    except ValueError as e:
        if str(e).startswith("property"):
            raise
        raise ValueError(f"property {name!r}: {value!r} is not a valid {kind}") from None
    raise ValueError(f"property {name!r}: unknown type {kind!r} (str, int, float, bool or datetime)")


def message_to_record(msg: "Message") -> Dict[str, Any]:
    """One NDJSON record: the body in base64, every broker field, and every
    custom property with its type, so that ``record_to_outgoing`` rebuilds the
    message exactly."""
    rec: Dict[str, Any] = {
        "entity": msg.entity,
        "sequence_number": msg.sequence_number,
        "enqueued_time": msg.enqueued_time.isoformat() if msg.enqueued_time else None,
        "delivery_count": msg.delivery_count,
    }
    for k in _COPIED:
        rec[k] = getattr(msg, k)
    rec["time_to_live"] = msg.time_to_live  # None: the service's "no time to live"
    rec["properties"] = {k: _typed(v) for k, v in msg.properties.items()}
    rec["body_base64"] = base64.b64encode(msg.body).decode("ascii")
    return rec


def record_to_outgoing(rec: Mapping[str, Any]) -> "OutgoingMessage":
    """The OutgoingMessage an NDJSON record describes. Raises ValueError."""
    if not isinstance(rec, Mapping):
        raise ValueError("each line must be a JSON object")
    if "body_base64" in rec:
        try:
            body = base64.b64decode(str(rec["body_base64"]), validate=True)
        except binascii.Error:
            raise ValueError("body_base64 is not valid base64") from None
    elif "body" in rec:
        body = str(rec["body"]).encode("utf-8")
    else:
        raise ValueError("a record needs body_base64 (or body)")
    props: Dict[str, Any] = {}
    for name, v in (rec.get("properties") or {}).items():
        if isinstance(v, Mapping):
            props[name] = parse_typed(name, str(v.get("type", "str")), v.get("value"))
        elif isinstance(v, (str, bool, int, float)):
            props[name] = v
        else:
            raise ValueError(f"property {name!r}: expected a value or {{type, value}}")
    kw = {k: rec[k] for k in _COPIED if rec.get(k) is not None}
    if rec.get("time_to_live") is not None:
        kw["time_to_live"] = float(rec["time_to_live"])
    return OutgoingMessage(body, properties=props, **kw)


def read_records(lines: Iterable[str]) -> Iterator[Tuple[int, "OutgoingMessage"]]:
    """(line number, message) for each non-blank NDJSON line. Raises ValueError
    naming the line."""
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            yield n, record_to_outgoing(json.loads(line))
        except (ValueError, TypeError) as e:
            raise ValueError(f"line {n}: {e}") from None


# --------------------------------------------------------------------------
# filters
# --------------------------------------------------------------------------

_FILTER_FIELDS = {"reason": "DeadLetterReason", "description": "DeadLetterErrorDescription"}


def parse_filters(items: Iterable[str]) -> List[Tuple[str, str]]:
    """``NAME=GLOB`` items: ``reason``, ``description``, ``label``, ``message_id``,
    ``content_type`` or a custom property name. Raises ValueError."""
    out = []
    for item in items:
        name, sep, pattern = item.partition("=")
        if not sep or not name:
            raise ValueError(f"a filter must look like NAME=PATTERN, got {item!r}")
        out.append((name, pattern))
    return out


def matches(msg: "Message", filters: List[Tuple[str, str]]) -> bool:
    """True when every filter's glob matches the message's field or property."""
    props = msg.properties
    for name, pattern in filters:
        if name in _FILTER_FIELDS:
            value: Any = props.get(_FILTER_FIELDS[name])
        elif name in ("label", "message_id", "content_type", "correlation_id"):
            value = getattr(msg, name)
        else:
            value = props.get(name)
        if value is None or not fnmatch.fnmatchcase(str(value), pattern):
            return False
    return True


# --------------------------------------------------------------------------
# dead-letter resubmission
# --------------------------------------------------------------------------


@dataclass
class ResubmitReport:
    """What a resubmission did. ``unknown`` lists sends whose outcome could not
    be known (the copy may or may not exist; the dead letter was kept, so a
    later run may send it again); ``duplicates_possible`` lists copies that were
    sent but whose dead letter could not be removed (it comes back, and a later
    run sends it again)."""

    moved: List[Dict[str, Any]] = field(default_factory=list)
    skipped: int = 0
    failed: List[Dict[str, Any]] = field(default_factory=list)
    unknown: List[Dict[str, Any]] = field(default_factory=list)
    duplicates_possible: List[Dict[str, Any]] = field(default_factory=list)
    dry_run: bool = False

    def as_dict(self) -> Dict[str, Any]:
        return {
            "moved": len(self.moved),
            "skipped": self.skipped,
            "failed": self.failed,
            "unknown": self.unknown,
            "duplicates_possible": self.duplicates_possible,
            "dry_run": self.dry_run,
            "messages": self.moved,
        }


def _summary(msg: "Message") -> Dict[str, Any]:
    props = msg.properties
    return {
        "sequence_number": msg.sequence_number,
        "message_id": msg.message_id,
        "reason": props.get("DeadLetterReason"),
        "description": props.get("DeadLetterErrorDescription"),
    }


def release_held(held: List["Message"], warn: Callable[[str], None]) -> int:
    """Abandons each message still held (a lock that expired meanwhile needs
    nothing: its message is back already). Returns how many releases failed."""
    failed = 0
    for m in held:
        if m.state != "held":
            continue
        try:
            m.abandon()
        except LockLostError:
            pass  # expired on the server: available again already
        except Error as e:
            failed += 1
            warn(
                f"could not release message #{m.sequence_number}: {type(e).__name__}: {e}; its lock expires on its own"
            )
    return failed


def check_resubmit_limits(max_messages: Any, rate: Any, names: Tuple[str, str] = ("max_messages", "rate")) -> None:
    """A resubmission's limits: ``max_messages`` a positive int, ``rate`` a positive
    number of messages per second, each None for no limit; ValueError under the
    caller's ``names`` for them (the command line's are --max and --rate)."""
    if max_messages is not None and (
        isinstance(max_messages, bool) or not isinstance(max_messages, int) or max_messages < 1
    ):
        raise ValueError(f"{names[0]} must be a whole number, at least 1, or None, got {max_messages!r}")
    if rate is not None and (isinstance(rate, bool) or not isinstance(rate, (int, float)) or not rate > 0):
        raise ValueError(f"{names[1]} must be a positive number of messages per second, got {rate!r}")


def resubmit_dead_letters(
    client: "Client",
    entity: str,
    *,
    to: Optional[str] = None,
    filters: Optional[List[Tuple[str, str]]] = None,
    max_messages: Optional[int] = None,
    rate: Optional[float] = None,
    keep_message_id: bool = True,
    dry_run: bool = False,
    timeout: int = 5,
    stop: Optional[threading.Event] = None,
    on_message: Optional[Callable[[str, Dict[str, Any]], None]] = None,
    warn: Callable[[str], None] = lambda s: None,
    target_info: Optional["EntityInfo"] = None,
) -> ResubmitReport:
    """Moves dead-lettered messages of ``entity`` back to it (or to ``to``).

    For each dead letter that matches ``filters``: send a copy without the
    dead-letter properties, then complete the dead letter. Stopping at any
    point loses nothing: a dead letter is removed only after its copy was
    sent. Messages that do not match are held while the run lasts (so they
    are not seen twice) and released at the end. ``target_info`` (the target's
    management description) lets the run refuse to keep MessageIds on a
    target with duplicate detection, where the service would drop the copy.
    An interruption (KeyboardInterrupt) between a send and the removal of
    its dead letter lists that message as unknown before it propagates."""
    check_resubmit_limits(max_messages, rate)
    dlq = dead_letter_path(entity)
    source = parent_of(dlq)
    if to is None and source.lower().split("/")[1:2] == ["subscriptions"]:
        raise ValueError(
            f"{source} is a subscription, which cannot be sent to: name the "
            "target (to=, or --to on the command line; its topic would send a "
            "copy to every subscription)"
        )
    target = to or source
    if keep_message_id and not dry_run and target_info is not None and target_info.requires_duplicate_detection:
        raise ValueError(
            f"{target} has duplicate detection: the service would drop a copy whose MessageId "
            "it saw within the last "
            f"{target_info.duplicate_detection_window or 600:g} s, the original's included; "
            "give the copies new MessageIds"
        )
    report = ResubmitReport(dry_run=dry_run)
    held: List["Message"] = []
    seen = set()
    interval = 1.0 / rate if rate else 0.0
    next_at = time.monotonic()
    try:
        while max_messages is None or len(report.moved) < max_messages:
            if stop is not None and stop.is_set():
                break
            msg = client.peek_lock(dlq, timeout=timeout)
            if msg is None:
                break
            msg._start_renewing()
            if msg.sequence_number in seen:  # its earlier lock expired meanwhile
                held.append(msg)
                continue
            seen.add(msg.sequence_number)
            info = _summary(msg)
            if filters and not matches(msg, filters):
                held.append(msg)
                report.skipped += 1
                continue
            if dry_run:
                held.append(msg)
                report.moved.append(info)
                if on_message:
                    on_message("would move", info)
                continue
            if interval:
                now = time.monotonic()
                if next_at > now:
                    time.sleep(next_at - now)
                next_at = max(now, next_at) + interval
            copy = to_outgoing(msg, keep_message_id=keep_message_id)
            try:
                client.send(target, copy)
            except BaseException as e:
                if isinstance(e, Error) and not isinstance(e, OutcomeUnknownError):
                    info["error"] = f"{type(e).__name__}: {e}"
                    report.failed.append(info)
                    held.append(msg)
                    if on_message:
                        on_message("failed", info)
                    continue
                # the copy may exist: listed, the dead letter kept (a later run sends it again)
                info["error"] = str(e) or type(e).__name__
                report.unknown.append(info)
                held.append(msg)
                if on_message:
                    on_message("outcome unknown", info)
                if isinstance(e, OutcomeUnknownError):
                    continue
                raise
            try:
                msg.complete()
            except BaseException as e:
                info["error"] = f"{type(e).__name__}: {e}"
                report.duplicates_possible.append(info)
                held.append(msg)  # released at the end, if still held
                if on_message:
                    on_message("sent, dead letter kept", info)
                if isinstance(e, Error):
                    continue
                raise
            report.moved.append(info)
            if on_message:
                on_message("moved", info)
    finally:
        release_held(held, warn)
    return report


# --------------------------------------------------------------------------
# purge
# --------------------------------------------------------------------------


@dataclass
class PurgeReport:
    deleted: int = 0
    kept: int = 0
    unknown: int = 0  # receive-and-delete whose answer was lost: one may be gone
    # kept messages that were on their last delivery: releasing them dead-lettered them
    dead_lettered: List[int] = field(default_factory=list)


def check_purge_concurrency(concurrency: Any, name: str = "concurrency") -> None:
    """A purge's threads: a whole number, at least 1; ValueError under the caller's
    ``name`` for it (the command line's is --concurrency)."""
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise ValueError(f"{name} must be a whole number, at least 1, got {concurrency!r}")


def purge(
    client: "Client",
    entity: str,
    *,
    enqueued_before: Optional[_dt.datetime] = None,
    concurrency: int = 4,
    timeout: int = 1,
    stop: Optional[threading.Event] = None,
    warn: Callable[[str], None] = lambda s: None,
    max_deliveries: Optional[int] = None,
    report: Optional[PurgeReport] = None,
) -> PurgeReport:
    """Deletes every message of ``entity`` (receive-and-delete from
    ``concurrency`` threads), or, with ``enqueued_before``, only those enqueued
    before that time (peek-lock, complete the old ones, release the rest at the
    end: each kept message's delivery count goes up by one, and one on its last
    delivery of ``max_deliveries`` is dead-lettered by the release, which the
    report lists). Stops when a receive waits ``timeout`` seconds for nothing.
    Pass ``report`` to keep the counts of a run that ends in an exception."""
    check_purge_concurrency(concurrency)
    report = report if report is not None else PurgeReport()
    lock = threading.Lock()
    stop = stop or threading.Event()
    if enqueued_before is not None:
        if enqueued_before.tzinfo is None:
            enqueued_before = enqueued_before.replace(tzinfo=_dt.timezone.utc)
        held: List["Message"] = []
        seen = set()
        try:
            while not stop.is_set():
                msg = client.peek_lock(entity, timeout=timeout)
                if msg is None:
                    break
                t = msg.enqueued_time
                if msg.sequence_number in seen or t is None or t >= enqueued_before:
                    msg._start_renewing()
                    held.append(msg)
                    if msg.sequence_number not in seen:
                        report.kept += 1
                    if (
                        max_deliveries is not None
                        and msg.delivery_count >= max_deliveries
                        and msg.sequence_number not in report.dead_lettered
                    ):
                        report.dead_lettered.append(msg.sequence_number)
                        warn(
                            f"message #{msg.sequence_number} is on its last delivery "
                            f"({msg.delivery_count} of {max_deliveries}): releasing it moves "
                            "it to the dead-letter queue"
                        )
                    seen.add(msg.sequence_number)
                    continue
                try:
                    msg.complete()
                    report.deleted += 1
                except OutcomeUnknownError:
                    report.unknown += 1
        finally:
            release_held(held, warn)
        return report

    errors: List[BaseException] = []

    def worker() -> None:
        while not stop.is_set():
            try:
                msg = client.receive_and_delete(entity, timeout=timeout)
            except OutcomeUnknownError:
                with lock:
                    report.unknown += 1
                continue
            except BaseException as e:  # handed to the caller
                with lock:
                    errors.append(e)
                stop.set()
                return
            if msg is None:
                return
            with lock:
                report.deleted += 1

    threads = [threading.Thread(target=worker, name=f"peeklock-purge-{i}", daemon=True) for i in range(concurrency)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    if errors:
        raise errors[0]
    return report
