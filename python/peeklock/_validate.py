"""Argument checks shared by the Python modules (client, processor, tools):
host types and the few values the C core does not see in this form. Each
error names the argument."""
from __future__ import annotations

import datetime as _dt
import math
from typing import Any, Dict, Optional

_MAX_TIMEOUT = 300


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


_ENTITY_OK: Dict[str, bool] = {}


def _check_entity(entity: Any) -> str:
    if entity in _ENTITY_OK and type(entity) is str:   # fast path: seen before
        return entity
    e = _check_str("entity", entity)
    assert e is not None
    if not e.isprintable():
        raise ValueError("entity must not contain control characters")
    parts = e.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"entity has an empty, '.' or '..' path segment: {e!r}")
    if len(_ENTITY_OK) < 1024:
        _ENTITY_OK[e] = True
    return e


def _check_timeout(timeout: Any, name: str = "timeout") -> int:
    if type(timeout) is int and 0 <= timeout <= _MAX_TIMEOUT:
        return timeout
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, not {type(timeout).__name__}")
    if math.isnan(timeout) or timeout < 0 or timeout > _MAX_TIMEOUT:
        raise ValueError(f"{name} must be between 0 and {_MAX_TIMEOUT} seconds, got {timeout!r}")
    return int(math.ceil(timeout))


def _check_seconds(value: Any, name: str, *, optional: bool = False) -> Optional[float]:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, not {type(value).__name__}")
    if math.isnan(value) or value <= 0 or math.isinf(value):
        raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
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


def _unix(value: Any, name: str) -> int:
    if isinstance(value, _dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=_dt.timezone.utc)
        return int(value.timestamp())
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a datetime or Unix seconds, not {type(value).__name__}")
    return int(value)


def _check_datetime_property(name: str, value: _dt.datetime) -> None:
    """The service types a custom property DateTime only in RFC 1123 form, in whole
    seconds: a fraction of a second would be lost on the way, so it is refused."""
    if value.microsecond:
        raise ValueError(
            f"property {name!r}: {value.isoformat()} has a fraction of a second, which a "
            "DateTime property cannot carry (the service keeps whole seconds): round it "
            "(.replace(microsecond=0)) or send it as a string (.isoformat())")


def _from_unix(value: int) -> Optional[_dt.datetime]:
    if value is None or value < 0:
        return None
    return _dt.datetime.fromtimestamp(value, tz=_dt.timezone.utc)
