"""Runs inside the bare root (tests/install/run.sh), with the venv the wheel went into.

    roundtrip.py plain                 emulator + send / peek-lock / renew / complete over HTTP
    roundtrip.py tls CERT KEY [CA]     send and receive through a TLS endpoint on 127.0.0.1 whose
                                       certificate CERT is signed by a test CA; CA given: passed as
                                       the client's ca_file, else the client finds the system's
    roundtrip.py tls-fails CERT KEY [CA]   the TLS endpoint must be refused (no CA trusts it)

Prints one line and exits 0 when the expectation holds.
"""

import asyncio
import os
import ssl
import subprocess
import sys
import threading

import peeklock

BIN = os.path.join(os.path.dirname(sys.executable), "peeklock")


def start_emulator():
    p = subprocess.Popen([BIN, "emulator", "--port", "0", "--queue", "orders"], stdout=subprocess.PIPE, text=True)
    line = p.stdout.readline()
    if "ready:" not in line:
        p.kill()
        raise SystemExit("emulator did not start: %r" % line)
    return p, line.split("ready:", 1)[1].strip()


def parse(conn):
    return dict(part.split("=", 1) for part in conn.split(";") if part)


def tls_proxy(cert, key, target_port):
    """A TLS endpoint on 127.0.0.1 that forwards to the emulator; returns its port."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    ready = threading.Event()
    port = []

    async def pipe(reader, writer):
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    async def handle(reader, writer):
        try:
            ur, uw = await asyncio.open_connection("127.0.0.1", target_port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(pipe(reader, uw), pipe(ur, writer))

    async def main():
        server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=ctx)
        port.append(server.sockets[0].getsockname()[1])
        ready.set()
        async with server:
            await server.serve_forever()

    threading.Thread(target=lambda: asyncio.run(main()), daemon=True).start()
    ready.wait(10)
    return port[0]


def round_trip(client):
    client.send("orders", b"hello", message_id="m1", properties={"Attempt": 1})
    msg = client.peek_lock("orders", timeout=5)
    assert msg is not None and msg.body == b"hello", msg
    before = msg.locked_until
    msg.renew_lock()
    assert msg.locked_until is not None and msg.locked_until >= before, (before, msg.locked_until)
    msg.complete()
    assert client.peek_lock("orders", timeout=1) is None  # completed: gone
    return msg


def main():
    mode = sys.argv[1]
    emu, conn = start_emulator()
    try:
        if mode == "plain":
            with peeklock.Client.from_connection_string(conn) as c:
                round_trip(c)
            print("plain round trip: send, peek-lock, renew, complete ok (peeklock %s)" % peeklock.__version__)
            return 0
        cert, key = sys.argv[2], sys.argv[3]
        ca = sys.argv[4] if len(sys.argv) > 4 else None
        f = parse(conn)
        port = tls_proxy(cert, key, int(f["Endpoint"].rsplit(":", 1)[1].strip("/")))
        tls_conn = "Endpoint=sb://127.0.0.1:%d/;SharedAccessKeyName=%s;SharedAccessKey=%s" % (
            port,
            f["SharedAccessKeyName"],
            f["SharedAccessKey"],
        )
        opts = {"ca_file": ca} if ca else {}
        with peeklock.Client.from_connection_string(tls_conn, max_retries=0, **opts) as c:
            if mode == "tls-fails":
                try:
                    c.send("orders", b"x")
                except peeklock.Error as e:
                    print("TLS refused as expected: %s" % type(e).__name__)
                    return 0
                print("TLS endpoint was trusted with no CA for it")
                return 1
            # send and receive over TLS (peek-lock's Location from the plain-HTTP emulator
            # names http://, which the client rightly refuses behind an https endpoint)
            c.send("orders", b"over tls", message_id="t1")
            msg = c.receive_and_delete("orders", timeout=5)
            assert msg is not None and msg.body == b"over tls", msg
        print("TLS send and receive ok (%s)" % ("ca_file=" + ca if ca else "system CA bundle found"))
        return 0
    finally:
        emu.terminate()
        emu.wait(10)


if __name__ == "__main__":
    sys.exit(main())
