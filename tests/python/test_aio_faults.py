"""The fault matrix (tests/faults/matrix.json) through peeklock.aio: test_faults.py's
cases run unchanged with peeklock.Client replaced by a blocking facade over the
asyncio client (aio_sync.py), so every operation meets every fault — emulator rules
and the cutting proxy — through the asynchronous engine, and must report what the
table says."""

import pytest

import peeklock
from aio_sync import SyncAioClient
from test_faults import proxy, test_fault_matrix  # noqa: F401  (collected here again)


@pytest.fixture(autouse=True)
def _through_aio(monkeypatch):
    monkeypatch.setattr(peeklock, "Client", SyncAioClient)
