"""Fixtures for the package suites (tests/python/test_*.py): the emulator of
peeklock.testing, a fresh queue per test and a client. Nothing here imports the
compiled extension at import time, so the emulator suites below this directory
run from a source tree without a build."""

import signal
import uuid

import pytest

from peeklock.testing import Emulator, emulator, emulator_factory, fresh_emulator  # noqa: F401


@pytest.fixture
def python_sigint():
    """Python's own SIGINT handler (KeyboardInterrupt) for the test, then whatever was
    there. A runner started in the background by a non-interactive shell (`cmd &`)
    inherits SIGINT ignored, and Python then leaves it ignored: a test that sends itself
    SIGINT needs the handler an interactive run has."""
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, old)


@pytest.fixture
def emu(fresh_emulator):
    """The session emulator, emptied, with no faults."""
    yield fresh_emulator
    fresh_emulator.clear_faults()


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def queue(emu):
    """A new queue with a 5 s lock."""
    name = _name("q")
    emu.create_queue(name, lock_duration=5)
    return name


@pytest.fixture
def client(emu):
    import peeklock

    c = peeklock.Client.from_connection_string(emu.connection_string)
    yield c
    c.close()


@pytest.fixture
def make_queue(emu):
    def make(**opts):
        name = _name("q")
        emu.create_queue(name, **opts)
        return name

    return make


def completed(emu: Emulator, entity: str) -> dict:
    """message_id -> times completed, from the emulator's state dump."""
    return emu.entity_state(entity)["completed"]


def wait_for(predicate, timeout: float = 20.0, interval: float = 0.05):
    """Waits for an event (a condition becoming true), failing after timeout."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met within %.0f s" % timeout)
        time.sleep(interval)


def pytest_asyncio_loop_factories(config, item):
    """Every asyncio test runs on the default event loop and on uvloop."""
    import asyncio

    factories = {"asyncio": asyncio.new_event_loop}
    try:
        import uvloop

        factories["uvloop"] = uvloop.new_event_loop
    except ImportError:
        pass
    return factories
