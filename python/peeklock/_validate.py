"""Argument checks shared by the Python modules (client, processor, tools):
host types, and the few values the C core does not see in this form (a NUL
that would cut a string short, seconds that become milliseconds). Each error
names the argument. The rules on values the core takes are the core's
(docs/c-api.md, "Argument values"): it refuses them with PL_EINVAL, raised as
InvalidArgument (a ValueError) with the core's message."""

from __future__ import annotations

import datetime as _dt
import math
from typing import Any, Dict, Literal, Optional, overload

from . import _core
from .errors import PL_EINVAL, InvalidArgument, from_code

_INT_MAX = 2**31 - 1

# The core's default waits (peeklock.h), in seconds: the defaults of a receive's
# timeout, a processor's poll_timeout and a batch's max_wait.
_DEFAULT_TIMEOUT: int = _core.PL_DEFAULT_RECEIVE_TIMEOUT_S
_DEFAULT_POLL_TIMEOUT: int = _core.PL_DEFAULT_POLL_TIMEOUT_S
# how long a blocking processor's drain lets running handlers finish (Python's processor only)
_DEFAULT_DRAIN_TIMEOUT: float = 30
_DEFAULT_MAX_WAIT = float(_core.PL_DEFAULT_MAX_WAIT_S)
_DEFAULT_MAX_RENEW = _core.PL_DEFAULT_MAX_RENEW_MS / 1000.0  # the core's default renewal cap, in seconds


# Python's processors' own defaults (Client.process, processor.Processor, aio's process).
_DEFAULT_CONCURRENCY = 4
_DEFAULT_PROGRESS_INTERVAL = 0.5
_DEFAULT_ON_DRAIN_TIMEOUT = "expire"
_ON_DRAIN_TIMEOUT = ("expire", "abandon")


class _DefaultRetry:
    """retry_delay's default, made by processor._check_retry_delay: a fresh
    exponential_backoff() per run."""

    def __repr__(self) -> str:
        return "exponential_backoff()"


_DEFAULT_RETRY: Any = _DefaultRetry()


def _check_str(name: str, value: Any, *, optional: bool = False, empty: bool = False) -> Optional[str]:
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, not {type(value).__name__}")
    if not empty and not value:
        raise ValueError(f"{name} must not be empty")
    if "\x00" in value:
        raise ValueError(f"{name} must not contain NUL characters")
    return value


def _check_int(name: str, value: Any) -> int:
    """An int option the core takes as a C int: its type, and a size that fits
    (its range is the core's)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if not -_INT_MAX - 1 <= value <= _INT_MAX:
        raise InvalidArgument(f"{name}: {value} does not fit a C int", code=PL_EINVAL)
    return value


_ENTITY_OK: Dict[str, bool] = {}


def _check_entity(entity: Any) -> str:
    if entity in _ENTITY_OK and type(entity) is str:  # fast path: seen before
        return entity
    e = _check_str("entity", entity, empty=True)
    assert e is not None
    _core.pl_check_entity(e)  # the core's rules
    if len(_ENTITY_OK) < 1024:
        _ENTITY_OK[e] = True
    return e


def _check_timeout(timeout: Any, name: str = "timeout") -> int:
    """A receive timeout's whole seconds: its type here; its range and rounding
    (a fraction up) are the core's (pl_timeout_seconds), refused under the
    caller's name for it."""
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, not {type(timeout).__name__}")
    try:
        f = float(timeout)
    except OverflowError:  # an int beyond a double: out of range all the same
        f = math.inf
    t = _core.pl_timeout_seconds(f)
    if t < 0:
        e = from_code(*_core.pl_py_error_last())
        if name != "timeout":
            raise InvalidArgument(str(e).replace("timeout", name, 1), code=e.code) from None
        raise e
    return t


def _number(value: Any, name: str, *, optional: bool = False) -> Optional[float]:
    """A number of seconds the core checks (as a double): its type only."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, not {type(value).__name__}")
    return value


def _max_renew_ms(seconds: float) -> int:
    """The core's whole milliseconds for a max_renew in seconds; the rule (a
    positive, finite number of seconds, at most 10**9) and the rounding are the
    core's (pl_max_renew_ms), refused with its message."""
    try:
        f = float(seconds)
    except OverflowError:  # an int beyond a double: out of range all the same
        f = math.inf
    ms = int(_core.pl_max_renew_ms(f))
    if ms < 0:
        raise from_code(*_core.pl_py_error_last())
    return ms


def _check_max_renew(value: Any, *, optional: bool = False) -> Optional[float]:
    """max_renew, taken now and handed to the renewer later: its type here, its
    value checked by the core now (_max_renew_ms)."""
    if _number(value, "max_renew", optional=optional) is None:
        return None
    _max_renew_ms(value)
    return float(value)


@overload
def _check_seconds(value: Any, name: str, *, optional: Literal[False] = False, zero: bool = False) -> float: ...
@overload
def _check_seconds(value: Any, name: str, *, optional: bool, zero: bool = False) -> Optional[float]: ...
def _check_seconds(value: Any, name: str, *, optional: bool = False, zero: bool = False) -> Optional[float]:
    """A positive duration the core takes in whole milliseconds (_ms), where 0
    would mean its default, or one the core never sees (a processor's
    drain_timeout; with ``zero``, progress_interval): checked here."""
    if _number(value, name, optional=optional) is None:
        return None
    if math.isnan(value) or value < 0 or (value == 0 and not zero) or math.isinf(value):
        words = "non-negative" if zero else "positive"
        raise ValueError(f"{name} must be a {words} number of seconds, got {value!r}")
    return float(value)


def _ms(seconds: float) -> int:
    """Whole milliseconds for the C layer, rounded up: a positive duration under
    1 ms becomes 1 ms, never 0 (which the C layer reads as "use the default")."""
    return max(1, math.ceil(round(seconds * 1000.0, 6)))


def _body_bytes(body: Any) -> bytes:
    if isinstance(body, str):
        return body.encode("utf-8")
    if isinstance(body, (bytes, bytearray, memoryview)):
        return bytes(body)
    raise TypeError(f"body must be bytes or str, not {type(body).__name__}")


def _timestamp(value: _dt.datetime) -> float:
    """Unix seconds of a datetime, a naive one taken as UTC."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=_dt.timezone.utc)
    return value.timestamp()


def _unix_time(value: Any, name: str) -> float:
    """Unix seconds of a datetime or a number, as given: its type only; the range and
    the rounding are the core's (pl_outgoing_set_scheduled_enqueue_time)."""
    if isinstance(value, _dt.datetime):
        return _timestamp(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a datetime or Unix seconds, not {type(value).__name__}")
    try:
        return float(value)
    except OverflowError:  # an int beyond any double: out of every range
        return math.inf if value > 0 else -math.inf


def _unix(value: Any, name: str) -> int:
    t = _unix_time(value, name)
    return value if isinstance(value, int) else int(t)


def _check_datetime_property(name: str, value: _dt.datetime) -> float:
    """A DateTime property's Unix seconds; the rule (whole seconds, as the service
    keeps them, of the years 1970..9999) is the core's (pl_check_datetime), refused
    with its message."""
    t = _timestamp(value)
    if _core.pl_check_datetime(name, t) < 0:
        raise from_code(*_core.pl_py_error_last())
    return t


def _from_unix(value: int) -> Optional[_dt.datetime]:
    if value is None or value < 0:
        return None
    return _dt.datetime.fromtimestamp(value, tz=_dt.timezone.utc)
