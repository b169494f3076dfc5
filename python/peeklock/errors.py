"""The peeklock exception hierarchy. Failures of the service, the transport and
the client (a lost lock, a closed client, an unknown outcome, …) derive from
:class:`peeklock.Error` and carry ``.status`` (the HTTP status, 0 when no
response was received), ``.code`` (the C core's ``PL_E*`` code, negative; the
``PL_*`` names below) and ``.retryable``. A wrong argument does not: it raises
plain ``TypeError`` or ``ValueError`` naming the argument, except a value only the
C core refuses, which raises ``InvalidArgument`` (both a ``peeklock.Error`` and a
``ValueError``), so ``except ValueError`` catches every bad value. Messages never
contain a key, signature or lock token.
"""

from __future__ import annotations

import builtins
from typing import TYPE_CHECKING, Any, Dict, Optional, Type

__all__ = [
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
    "CODE_NAMES",
    "PL_OK",
    "PL_EMPTY",
    "PL_EINVAL",
    "PL_ENOMEM",
    "PL_EAUTH",
    "PL_ENOTFOUND",
    "PL_ELOCKLOST",
    "PL_ETOOLARGE",
    "PL_ETHROTTLED",
    "PL_ESERVER",
    "PL_ETIMEOUT",
    "PL_ECONNECT",
    "PL_EPROTOCOL",
    "PL_EUNKNOWN",
    "PL_EBADREQUEST",
    "PL_ECONFLICT",
    "PL_ESTATE",
    "PL_ECLOSED",
    "PL_EHTTP",
    "PL_EINTERNAL",
    "PL_ECANCELED",
]

# Result codes: the names of csrc/include/peeklock.h, typed here; their numbers
# are read from the core's one list of codes (pl_code_count, pl_code_at,
# pl_code_name) the first time one is used, so this module imports without the
# extension (a source tree with no build) and states no number of its own. The
# Python modules use them by name, never by number.
PL_OK: int
PL_EMPTY: int
PL_EINVAL: int
PL_ENOMEM: int
PL_EAUTH: int
PL_ENOTFOUND: int
PL_ELOCKLOST: int
PL_ETOOLARGE: int
PL_ETHROTTLED: int
PL_ESERVER: int
PL_ETIMEOUT: int
PL_ECONNECT: int
PL_EPROTOCOL: int
PL_EUNKNOWN: int
PL_EBADREQUEST: int
PL_ECONFLICT: int
PL_ESTATE: int
PL_ECLOSED: int
PL_EHTTP: int
PL_EINTERNAL: int
PL_ECANCELED: int
CODE_NAMES: Dict[int, str]  # every code of the core -> its name ("PL_ELOCKLOST")


def _code_names() -> Dict[int, str]:
    """The core's codes by number, loaded into this module's globals once."""
    names: Optional[Dict[int, str]] = globals().get("CODE_NAMES")
    if names is None:
        try:
            from . import _core
        except ImportError as e:
            raise ImportError(
                "peeklock's error codes come from the compiled extension peeklock._core, which "
                "is not built here: install the package with `pip install .`"
            ) from e
        names = {}
        for i in range(_core.pl_code_count()):
            code = _core.pl_code_at(i)
            names[code] = _core.pl_code_name(code) or str(code)
        globals().update({name: code for code, name in names.items()})
        globals()["CODE_NAMES"] = names  # last: a reader that sees it sees every name
    return names


if not TYPE_CHECKING:  # (hidden from mypy, which would accept any name through it)

    def __getattr__(name: str) -> Any:
        if name == "CODE_NAMES" or name.startswith("PL_"):
            _code_names()
            if name in globals():
                return globals()[name]
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def scrub(text: str) -> str:
    """Removes anything resembling a key, signature or lock token from text.

    Defence in depth: the C core never puts secrets in messages; this scrubs
    anything that looks like one should a message ever carry it, by the core's
    one list of secret forms (``pl_redact``). Without it (a source tree without
    the compiled core) the text is withheld whole: nothing unscrubbed is shown."""
    try:
        from . import _core

        redact = _core.pl_redact
    except (ImportError, AttributeError):
        return "(message withheld: redaction unavailable)"
    if "\0" in text:  # C text ends at a NUL: each part on its own
        return "\0".join(scrub(part) for part in text.split("\0"))
    # (a lone surrogate cannot cross to C as UTF-8: it is escaped first)
    red: Optional[str] = redact(text.encode("utf-8", "backslashreplace").decode("utf-8"))
    return "(message withheld: redaction failed)" if red is None else red


class Error(Exception):
    """Base class of every peeklock error."""

    status: int
    code: int
    retryable: bool

    def __init__(
        self, message: str = "", *, status: int = 0, code: Optional[int] = None, retryable: bool = False
    ) -> None:
        message = scrub(str(message))
        super().__init__(message)
        self.message = message
        self.status = int(status)
        self.code = int(code) if code is not None else _code_of("PL_EUNKNOWN")
        self.retryable = bool(retryable)

    @property
    def code_name(self) -> str:
        try:
            return _code_names().get(self.code, str(self.code))
        except ImportError:  # no extension: the number alone
            return str(self.code)

    def __str__(self) -> str:
        if self.status and f"HTTP {self.status}" not in self.message:  # (the core's text often says it)
            return f"{self.message} (HTTP {self.status})"
        return self.message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, status={self.status}, code={self.code_name})"

    def __reduce__(self) -> Any:  # picklable across processes
        return (_rebuild, (type(self), self.message, self.status, self.code, self.retryable))


def _rebuild(cls: Type[Error], message: str, status: int, code: int, retryable: bool) -> Error:
    return cls(message, status=status, code=code, retryable=retryable)


class InvalidArgument(Error, ValueError):
    """A bad argument (the message names it)."""


class AuthError(Error):
    """401, or 403 that is not a size limit: wrong key, expired or bad token."""


class EntityNotFoundError(Error):
    """The queue, topic or subscription does not exist."""


class LockLostError(Error):
    """The message's lock expired or was lost; it was not completed."""


class MessageTooLargeError(Error):
    """The message exceeds the entity's size limit."""


class ThrottledError(Error):
    """The service stayed busy (503/429) after the retry policy."""


class ServerError(Error):
    """A 5xx from the service after the retry policy."""


class TimeoutError(Error, builtins.TimeoutError):
    """The transport timed out."""


class ConnectionError(Error, builtins.ConnectionError):
    """Could not connect, connection reset, or TLS failure."""


class ProtocolError(Error):
    """A malformed or unexpected response."""


class OutcomeUnknownError(Error):
    """The call may or may not have been carried out (C code ``PL_EUNKNOWN``): a send
    whose answer was lost may have stored the message, a receive_and_delete may
    have removed one, a complete or abandon may have settled it. Remembered on a
    message: settling it again raises this again. See "Outcomes" in the docs."""


class BadRequestError(Error):
    """400 from the service."""


class ConflictError(Error):
    """409 from the service."""


class StateError(Error):
    """The message is in the wrong state (already settled, or not peek-locked)."""


class ClosedError(Error):
    """The client or its renewer was closed."""


class HTTPError(Error):
    """Any other unexpected HTTP status."""


class InternalError(Error):
    """A bug in peeklock."""


# The class of each failure code (by the core's name); any other code raises Error.
_BY_NAME: Dict[str, Type[Error]] = {
    "PL_EINVAL": InvalidArgument,
    "PL_ENOMEM": Error,
    "PL_EAUTH": AuthError,
    "PL_ENOTFOUND": EntityNotFoundError,
    "PL_ELOCKLOST": LockLostError,
    "PL_ETOOLARGE": MessageTooLargeError,
    "PL_ETHROTTLED": ThrottledError,
    "PL_ESERVER": ServerError,
    "PL_ETIMEOUT": TimeoutError,
    "PL_ECONNECT": ConnectionError,
    "PL_EPROTOCOL": ProtocolError,
    "PL_EUNKNOWN": OutcomeUnknownError,
    "PL_EBADREQUEST": BadRequestError,
    "PL_ECONFLICT": ConflictError,
    "PL_ESTATE": StateError,
    "PL_ECLOSED": ClosedError,
    "PL_EHTTP": HTTPError,
    "PL_EINTERNAL": InternalError,
}


def _code_of(name: str) -> int:
    _code_names()
    code: int = globals()[name]
    return code


def from_code(code: int, status: int = 0, retryable: int = 0, message: Optional[str] = None) -> Error:
    """The exception for a C result code (used by the extension module)."""
    name = _code_names().get(code, "")
    cls = _BY_NAME.get(name, Error)
    if name == "PL_ENOMEM":
        # Out of memory keeps the Python spelling too.
        return cls(message or "out of memory", status=status, code=code, retryable=bool(retryable))
    return cls(message or name or "error", status=status, code=code, retryable=bool(retryable))


# The core raises these classes on every path (the CLI's `ls` reaches the core through the
# management client alone, never client.py): registered here, where `import peeklock` runs,
# the first time the extension loads. A source tree with no build has no extension: nothing
# to register.
try:
    from . import _core as _ext
except ImportError:
    pass
else:
    _ext.pl_py_set_error_factory(from_code)
