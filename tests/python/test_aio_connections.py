"""peeklock.aio keeps its connections open between bursts: the connections a burst
of concurrent operations opened are reused by the next burst, however few
operations ran in between (libcurl's default cache keeps four connections per
transfer in flight at the moment one ends, and so closed all but a few of them
while a single request ran)."""

import asyncio

import pytest

import peeklock.aio

pytestmark = pytest.mark.asyncio

BURST = 24


def opened(c: peeklock.aio.Client) -> int:
    st = c.stats()
    return st["requests"] - st["reused_connections"]


async def test_a_burst_reuses_the_connections_of_the_one_before(emu, queue):
    c = peeklock.aio.Client.from_connection_string(emu.connection_string)
    try:

        async def burst() -> None:
            # long polls of an empty queue: all of them on the wire at once
            assert await asyncio.gather(*(c.peek_lock(queue, timeout=1) for _ in range(BURST))) == [None] * BURST

        await burst()
        assert opened(c) == BURST
        for i in range(5):  # one request at a time
            await c.send(queue, b"x", properties={"i": i})
            msg = await c.peek_lock(queue, timeout=5)
            assert msg is not None
            await msg.complete()
        assert opened(c) == BURST
        await burst()
        assert opened(c) == BURST, c.stats()
    finally:
        await c.aclose()
