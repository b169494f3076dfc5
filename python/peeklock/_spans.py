"""Whether process spans may become the thread's current span. The processors'
batches switch it off; telemetry reads it. Kept apart from telemetry.py so the
processors need not import telemetry, which imports the client."""

from __future__ import annotations

import threading
from typing import Any

_local = threading.local()


class no_context:
    """While active in a thread, process spans are started without becoming
    the thread's current span (the processor's batches: several messages
    are entered at once, and their spans must not nest)."""

    def __enter__(self) -> None:
        _local.detached = getattr(_local, "detached", 0) + 1

    def __exit__(self, *exc: Any) -> None:
        _local.detached -= 1


def detached() -> bool:
    """True while a no_context block is active in this thread."""
    return bool(getattr(_local, "detached", 0))
