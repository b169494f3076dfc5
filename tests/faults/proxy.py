"""A small HTTP/1.1 TCP proxy for the fault matrix (tests/faults/matrix.json): it relays
keep-alive exchanges between a client and the emulator, and cuts the answer to the next
request of a chosen operation short after the server acted on it:

    cut_headers  the status line only, then the connection closes
    cut_body     the status line, the headers and half the body, then it closes

The operation is read from the request line as the REST API spells it. Loopback only.
Armed in-process (FaultProxy.arm) or, for tests in other languages, by a request to the
proxy itself: `POST /$proxy/arm?op=OP&mode=MODE`. Run standalone with
`python3 tests/faults/proxy.py UPSTREAM_PORT`: it prints `proxy: PORT` and serves until
killed."""

from __future__ import annotations

import re
import socket
import threading
import sys
import time
from typing import Callable, Dict, Optional, Tuple
from urllib.parse import parse_qs, urlsplit

_SETTLE = re.compile(rb"/messages/\d+/[^/?\s]+")


def operation(method: bytes, path: bytes, headers: bytes) -> str:
    if path.split(b"?")[0].endswith(b"/messages/head"):
        return "peek_lock" if method == b"POST" else "receive_and_delete"
    if _SETTLE.search(path):
        return {b"POST": "renew", b"PUT": "unlock", b"DELETE": "complete"}.get(method, "other")
    if method == b"POST" and path.split(b"?")[0].endswith(b"/messages"):
        return "send_batch" if b"vnd.microsoft.servicebus.json" in headers.lower() else "send"
    return "other"


def _read_message(f, request: bool) -> Optional[Tuple[bytes, bytes, bytes]]:
    """(start line, header block, body) of one HTTP/1.1 message with a Content-Length
    (or none) body; None at EOF."""
    start = f.readline()
    if not start:
        return None
    head = b""
    length = 0
    chunked = False
    while True:
        line = f.readline()
        if not line:
            return None
        head += line
        if line in (b"\r\n", b"\n"):
            break
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value.strip())
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    if not request and (start.split(b" ")[1:2] in ([b"204"], [b"304"])):
        return start, head, b""
    if chunked:  # relayed as received, chunk framing included
        body = b""
        while True:
            size_line = f.readline()
            body += size_line
            size = int(size_line.split(b";")[0].strip() or b"0", 16)
            body += f.read(size + 2)
            if size == 0:
                return start, head, body
    body = f.read(length) if length else b""
    return start, head, body


def loopback_server(handle: Callable[[socket.socket], None]) -> socket.socket:
    """A listening socket on 127.0.0.1 whose every accepted connection goes to handle
    (on a thread of its own); closing the socket stops it. For servers that answer
    badly on purpose (the tests of limits)."""
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(16)

    def accept() -> None:
        while True:
            try:
                c, _ = lsock.accept()
            except OSError:
                return
            threading.Thread(target=handle, args=(c,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    return lsock


class FaultProxy:
    def __init__(self, upstream_port: int) -> None:
        self.upstream = ("127.0.0.1", upstream_port)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.lock = threading.Lock()
        self.pending: Dict[str, str] = {}  # operation -> mode, for its next request
        self.hits = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def arm(self, op: str, mode: str) -> None:
        with self.lock:
            self.pending[op] = mode

    def close(self) -> None:
        self.sock.close()

    def _accept(self) -> None:
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c: socket.socket) -> None:
        up = socket.create_connection(self.upstream)
        cf, uf = c.makefile("rb"), up.makefile("rb")
        try:
            while True:
                req = _read_message(cf, True)
                if req is None:
                    return
                start, head, body = req
                parts = start.split(b" ")
                if len(parts) > 1 and parts[1].startswith(b"/$proxy/arm"):
                    q = parse_qs(urlsplit(parts[1].decode()).query)
                    self.arm(q["op"][0], q["mode"][0])
                    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                    continue
                op = operation(parts[0], parts[1] if len(parts) > 1 else b"", head)
                up.sendall(start + head + body)
                resp = _read_message(uf, False)
                if resp is None:
                    return
                with self.lock:
                    mode = self.pending.pop(op, None)
                    if mode:
                        self.hits += 1
                rstart, rhead, rbody = resp
                if mode == "cut_headers":
                    c.sendall(rstart)
                    return
                if mode == "cut_body":
                    c.sendall(rstart + rhead + rbody[: len(rbody) // 2])
                    return
                c.sendall(rstart + rhead + rbody)
        except OSError:
            return
        finally:
            for s in (c, up):
                try:
                    s.close()
                except OSError:
                    pass


if __name__ == "__main__":
    proxy = FaultProxy(int(sys.argv[1]))
    print(f"proxy: {proxy.port}", flush=True)
    while True:
        time.sleep(3600)
