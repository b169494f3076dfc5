"""peeklock.aio keeps its connections open between bursts: the connections a burst
of concurrent operations opened are reused by the next burst, however few
operations ran in between (libcurl's default cache keeps four connections per
transfer in flight at the moment one ends, and so closed all but a few of them
while a single request ran)."""

import asyncio
import os

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


def _engine_ticks(tid: str) -> int:
    with open(f"/proc/self/task/{tid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="needs Linux /proc")
async def test_a_kept_connection_the_server_closes_costs_nothing_and_is_replaced():
    """The engine keeps an idle kept-alive socket in its epoll set for the next
    transfer; when the server closes it meanwhile (readable, nobody watching), the
    engine drops it once rather than waking for it again and again, and the next
    operation opens a new connection."""
    served = []
    answered = asyncio.Event()  # the client has its answer: the connection is idle
    closed = asyncio.Event()  # the server has closed it

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = [int(h.split(b":", 1)[1]) for h in head.split(b"\r\n") if h.lower().startswith(b"content-length:")]
        await reader.readexactly(length[0] if length else 0)
        served.append(head.split(b" ", 2)[1])
        # kept alive as far as the client knows, then closed while idle
        writer.write(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        await answered.wait()
        writer.close()
        await writer.wait_closed()
        closed.set()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    before = set(os.listdir("/proc/self/task"))
    c = peeklock.aio.Client(f"http://127.0.0.1:{port}", key_name="k", key="c2VjcmV0")
    [engine] = set(os.listdir("/proc/self/task")) - before
    try:
        await c.send("q", b"one")
        answered.set()
        await closed.wait()  # the server has closed the idle connection
        ticks = _engine_ticks(engine)
        await asyncio.sleep(1.0)
        assert _engine_ticks(engine) - ticks <= 1  # asleep, not woken by the closed socket
        await c.send("q", b"two")
        assert served == [b"/q/messages", b"/q/messages"]
        assert opened(c) == 2  # the closed connection was replaced, not reused
    finally:
        await c.aclose()
        server.close()
        await server.wait_closed()
