"""Failure records held back for a caller that tells the failure itself.

A blocking call's failure is logged by peeklock.client's log hook, an
asynchronous one's as its completion arrives. A caller that logs the same
failure in its own words (the processors' "receive from … failed") holds the
record back while it calls, then logs one line with its fields: one failure,
one line. The hold is a context variable, so it covers the calls of the thread
or asyncio task that holds it and no other."""

from __future__ import annotations

import contextvars
from types import TracebackType
from typing import Any, Dict, List, Optional, Type

# the records held back by the innermost hold_failures, or None
held: "contextvars.ContextVar[Optional[List[Dict[str, Any]]]]" = contextvars.ContextVar(
    "peeklock_held_failures", default=None
)


class hold_failures:
    """While active, the failed calls' log records (their ``peeklock_*`` fields)
    are appended to ``records`` instead of being logged."""

    __slots__ = ("records", "_token")

    def __init__(self) -> None:
        self.records: List[Dict[str, Any]] = []

    def __enter__(self) -> "hold_failures":
        self._token = held.set(self.records)
        return self

    def __exit__(
        self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException], tb: Optional[TracebackType]
    ) -> None:
        held.reset(self._token)
