#!/usr/bin/env python3
"""Server instructions per request, counted by valgrind (callgrind): a deterministic cost figure.

    .venv/bin/python bench/emulator/instructions.py [--cycles 300] [--warmup 200] [--server emulator|baseline|both]

Timing figures on a shared machine swing 10-30%; an instruction count does not (repeated runs
agree within about 0.5%), so this is the figure to compare two versions of the emulator with.
One keep-alive client (blocking sockets, in this process) runs the benchmark's peek-lock +
complete cycle against a server started under ``valgrind --tool=callgrind``; the counters are
zeroed after the warm-up cycles and dumped after the measured ones (``callgrind_control``), so
start-up, imports and the queue fill are not counted. The baseline is the same bare aiohttp
server as bench_emulator.py's (an empty chunked 200 for every request). Prints figures, never
asserts. Needs valgrind; under it a run takes a minute or two.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "python"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_emulator import BASELINE_SERVER  # noqa: E402
from peeklock.emulator import DEFAULT_KEY, DEFAULT_KEY_NAME  # noqa: E402
from peeklock.emulator.sas import make_token  # noqa: E402


class Client:
    """A blocking HTTP/1.1 keep-alive client: just enough for the emulator's answers."""

    def __init__(self, port: int, auth: str):
        self.host = "127.0.0.1:%d" % port
        self.auth = auth
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def _need(self, n: int) -> None:
        while len(self.buf) < n:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("server closed the connection")
            self.buf += data

    def _until(self, sep: bytes) -> bytes:
        while sep not in self.buf:
            self._need(len(self.buf) + 1)
        head, _, self.buf = self.buf.partition(sep)
        return head

    def call(self, method: str, path: str, body: bytes = b"", ctype: str = ""):
        self.sock.sendall(
            (
                "%s %s HTTP/1.1\r\nHost: %s\r\nAuthorization: %s\r\n%sContent-Length: %d\r\n\r\n"
                % (method, path, self.host, self.auth, "Content-Type: %s\r\n" % ctype if ctype else "", len(body))
            ).encode()
            + body
        )
        head = self._until(b"\r\n\r\n")
        headers = {}
        for line in head.split(b"\r\n")[1:]:
            k, _, v = line.partition(b":")
            headers[k.strip().lower()] = v.strip()
        if headers.get(b"transfer-encoding") == b"chunked":
            while True:
                size = int(self._until(b"\r\n"), 16)
                self._need(size + 2)
                self.buf = self.buf[size + 2 :]
                if size == 0:
                    break
        else:
            n = int(headers.get(b"content-length", b"0"))
            self._need(n)
            self.buf = self.buf[n:]
        return int(head[9:12]), headers


def measure(server: str, cycles: int, warmup: int, outdir: str, pythonpath: str) -> float:
    out = os.path.join(outdir, "callgrind.%s" % server)
    py = sys.executable
    if server == "emulator":
        argv = [py, "-m", "peeklock.emulator", "--queue", "bench", "--port", "0"]
    else:
        argv = [py, "-c", BASELINE_SERVER]
    env = dict(os.environ, PYTHONPATH=pythonpath, PYTHONHASHSEED="0")
    proc = subprocess.Popen(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=" + out] + argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    try:
        line = proc.stdout.readline().decode()
        m = re.search(r"127\.0\.0\.1:(\d+)", line) or re.search(r"port (\d+)", line)
        if m is None:
            raise RuntimeError("%s did not start: %r" % (server, line))
        port = int(m.group(1))
        auth = make_token("http://127.0.0.1:%d/bench" % port, DEFAULT_KEY_NAME, DEFAULT_KEY, int(time.time()) + 7200)
        c = Client(port, auth)
        if server == "emulator":
            sent, total = 0, warmup + cycles + 1
            while sent < total:
                n = min(500, total - sent)
                status, _ = c.call(
                    "POST",
                    "/bench/messages",
                    json.dumps([{"Body": "x" * 16}] * n).encode(),
                    "application/vnd.microsoft.servicebus.json",
                )
                if status != 201:
                    raise RuntimeError("fill answered %d" % status)
                sent += n

        def cycle():
            status, headers = c.call("POST", "/bench/messages/head?timeout=5")
            if server == "emulator":
                if status != 201:
                    raise RuntimeError("peek-lock answered %d" % status)
                path = "/" + headers[b"location"].decode().split("/", 3)[3]
            else:
                path = "/bench/messages/1/00000000-0000-0000-0000-000000000000"
            c.call("DELETE", path)

        for _ in range(warmup):
            cycle()
        subprocess.run(
            ["callgrind_control", "--zero", str(proc.pid)],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(cycles):
            cycle()
        subprocess.run(
            ["callgrind_control", "--dump", str(proc.pid)],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    finally:
        proc.terminate()
        proc.wait()
    dumps = [f for f in glob.glob(out + ".*") if re.search(r"\.\d+$", f)]
    if not dumps:
        raise RuntimeError("no callgrind dump for %s" % server)
    with open(sorted(dumps)[0]) as f:
        for text in f:
            if text.startswith(("totals:", "summary:")):
                return int(text.split()[1]) / (2.0 * cycles)
    raise RuntimeError("no totals in the callgrind dump for %s" % server)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cycles", type=int, default=300, help="measured peek-lock + complete cycles")
    ap.add_argument("--warmup", type=int, default=200, help="cycles before the counters are zeroed")
    ap.add_argument("--server", choices=("emulator", "baseline", "both"), default="both")
    ap.add_argument(
        "--pythonpath",
        default=os.path.join(ROOT, "python"),
        metavar="DIR",
        help="where the emulator's peeklock package is taken from (A/B against another checkout)",
    )
    args = ap.parse_args()
    if not shutil.which("valgrind") or not shutil.which("callgrind_control"):
        print("skipped: valgrind (callgrind) not found")
        return
    print("command: %s %s" % (sys.executable, " ".join([os.path.relpath(__file__, ROOT)] + sys.argv[1:])))
    outdir = tempfile.mkdtemp(prefix="plbench-cg-")
    try:
        res = {}
        for server in ("baseline", "emulator") if args.server == "both" else (args.server,):
            res[server] = measure(server, args.cycles, args.warmup, outdir, args.pythonpath)
            print(
                "%-8s server: %8.0f instructions per request (%d requests, after %d warm-up cycles)"
                % (server, res[server], 2 * args.cycles, args.warmup)
            )
        if len(res) == 2:
            print("emulator / baseline: %.2f" % (res["emulator"] / res["baseline"]))
    finally:
        shutil.rmtree(outdir, ignore_errors=True)


if __name__ == "__main__":
    main()
