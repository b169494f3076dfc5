"""peeklock: Azure Service Bus REST message locks with background renewal.

    import peeklock
    client = peeklock.Client.from_connection_string(conn_str)
    with client.lock("orders", timeout=30) as msg:        # renewed while the block runs
        if msg is not None:                               # None: nothing arrived in time
            handle(msg)                                   # clean exit -> complete

The exceptions (``peeklock.Error`` and subclasses) import without the C
extension, and so does the emulator subpackage (``peeklock.emulator``), which
runs from a source tree with no build. Everything else is loaded from the
compiled core (``peeklock._core``) on first use.
"""

from __future__ import annotations

import logging as _logging
from typing import Any

from .errors import (
    AuthError,
    BadRequestError,
    ClosedError,
    ConflictError,
    ConnectionError,
    EntityNotFoundError,
    Error,
    HTTPError,
    InternalError,
    InvalidArgument,
    LockLostError,
    MessageTooLargeError,
    OutcomeUnknownError,
    ProtocolError,
    ServerError,
    StateError,
    ThrottledError,
    TimeoutError,
)

__version__ = "0.1.0"

_logging.getLogger("peeklock").addHandler(_logging.NullHandler())

_LAZY = {
    "Client": "client",
    "Message": "client",
    "OutgoingMessage": "client",
    "MessageList": "client",
    "ConnectionString": "client",
    "sas_token": "client",
    "parse_connection_string": "client",
    "version": "client",
    "ProcessSummary": "processor",
    "Processor": "processor",
}

__all__ = [
    "Client",
    "Message",
    "OutgoingMessage",
    "MessageList",
    "ConnectionString",
    "sas_token",
    "parse_connection_string",
    "version",
    "ProcessSummary",
    "Processor",
    "Error",
    "InvalidArgument",
    "AuthError",
    "EntityNotFoundError",
    "LockLostError",
    "MessageTooLargeError",
    "ThrottledError",
    "ServerError",
    "TimeoutError",
    "ConnectionError",
    "ProtocolError",
    "OutcomeUnknownError",
    "BadRequestError",
    "ConflictError",
    "StateError",
    "ClosedError",
    "HTTPError",
    "InternalError",
]


def __getattr__(name: str) -> Any:
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'peeklock' has no attribute {name!r}")
    import importlib

    try:
        m = importlib.import_module(f".{mod}", __name__)
    except ImportError as e:
        if "_core" in str(e):
            raise ImportError(
                f"peeklock.{name} needs the compiled extension peeklock._core, which is not "
                "built here: install the package with `pip install .` (the emulator, "
                "peeklock.emulator, works without it)"
            ) from e
        raise
    value = getattr(m, name)
    globals()[name] = value
    return value


def __dir__() -> "list[str]":
    return sorted(set(globals()) | set(_LAZY))
