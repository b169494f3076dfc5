"""A blocking facade over peeklock.aio, so that suites written against the blocking
client (the fault matrix) run unchanged through the asynchronous engine: every call
is a coroutine run on one event loop in a background thread."""

import asyncio
import threading

import peeklock.aio


class _Loop:
    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="aio-facade")
        self.thread.start()

    def run(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(120)

    def close(self):
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


_LOOP = None


def _run(coro):
    global _LOOP
    if _LOOP is None:
        _LOOP = _Loop()
    return _LOOP.run(coro)


async def _await(x):
    return await x


class SyncMessage:
    def __init__(self, m):
        self._m = m

    def renew_lock(self):
        return _run(self._m.renew_lock())

    def complete(self):
        return _run(self._m.complete())

    def abandon(self):
        return _run(self._m.abandon())

    def __getattr__(self, name):
        return getattr(self._m, name)


def _wrap(m):
    return None if m is None else SyncMessage(m)


class SyncAioClient:
    """peeklock.Client's calls, each run through a peeklock.aio.Client."""

    def __init__(self, *args, **kwargs):
        self._c = peeklock.aio.Client(*args, **kwargs)

    def send(self, *args, **kwargs):
        return _run(self._c.send(*args, **kwargs))

    def send_batch(self, *args, **kwargs):
        return _run(self._c.send_batch(*args, **kwargs))

    def peek_lock(self, *args, **kwargs):
        return _wrap(_run(_await(self._c.peek_lock(*args, **kwargs))))

    def receive_and_delete(self, *args, **kwargs):
        return _wrap(_run(self._c.receive_and_delete(*args, **kwargs)))

    def stats(self):
        return self._c.stats()

    def close(self):
        _run(self._c.aclose())
