#!/usr/bin/env python3
"""Emulator benchmark: peek-lock + complete throughput and latency, and memory for queued messages.

    .venv/bin/python bench/emulator/bench_emulator.py [--seconds 5] [--messages 100000]

Prints figures, never asserts. Targets (issue 2): >= 5,000 operations/s, p99.9 < 40 ms,
<= 300 MB resident for 100,000 queued 1 KB messages. An "operation" is one HTTP request
(a peek-lock or a complete); a cycle is one peek-lock + complete pair.

Baseline, measured in the same run with the same load generator: a bare aiohttp server that
answers every request with an empty chunked 200 (the floor any aiohttp-based emulator sits on).
Two load generators, each figure labelled with the one that produced it:
- Python: raw asyncio sockets (keep-alive, TCP_NODELAY), one connection per in-flight request;
- C (one client only): ``loadgen.c`` over libcurl on one keep-alive connection, built here with
  ``cc -O2 ... -lcurl`` (skipped, with the reason, when no compiler or libcurl is found). It uses
  far less CPU per operation than the Python generator, which shares the same cores as the
  server, so its figure is the closer one to what the server itself can do for a serial client.
Both sign with one SAS token computed before the run and valid for all of it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "python"))
sys.path.insert(0, os.path.join(ROOT, "bench"))

from peeklock.testing import Emulator  # noqa: E402
from cpus import describe, pin_client, pin_server  # noqa: E402

BASELINE_SERVER = textwrap.dedent("""
    import sys
    from aiohttp import web
    async def h(request):
        await request.read()
        r = web.StreamResponse(status=200)
        r.enable_chunked_encoding()
        await r.prepare(request)
        await r.write_eof()
        return r
    app = web.Application()
    app.router.add_route("*", "/{t:.*}", h)
    async def main():
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        print("port", site._server.sockets[0].getsockname()[1], flush=True)
        import asyncio
        await asyncio.Event().wait()
    import asyncio
    try:
        import uvloop
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass
    asyncio.run(main())
""")


class Conn:
    def __init__(self, reader, writer):
        self.r = reader
        self.w = writer

    @classmethod
    async def open(cls, host, port):
        reader, writer = await asyncio.open_connection(host, port)
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(reader, writer)

    async def call(self, req: bytes):
        self.w.write(req)
        head = await self.r.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        headers = {}
        for line in head.split(b"\r\n")[1:]:
            if b":" in line:
                k, v = line.split(b":", 1)
                headers[k.strip().lower()] = v.strip()
        body = b""
        if headers.get(b"transfer-encoding") == b"chunked":
            while True:
                size = int((await self.r.readuntil(b"\r\n"))[:-2], 16)
                if size == 0:
                    await self.r.readuntil(b"\r\n")
                    break
                body += await self.r.readexactly(size)
                await self.r.readexactly(2)
        elif b"content-length" in headers:
            n = int(headers[b"content-length"])
            if n:
                body = await self.r.readexactly(n)
        return status, headers, body

    def close(self):
        self.w.close()


def request(method, path, host, auth, body=b""):
    return (
        "%s %s HTTP/1.1\r\nHost: %s\r\nAuthorization: %s\r\nContent-Length: %d\r\n\r\n"
        % (method, path, host, auth, len(body))
    ).encode() + body


async def loop_worker(host, port, hostport, auth, queue, deadline, lat, counts, baseline):
    c = await Conn.open(host, port)
    peek = request("POST", "/%s/messages/head?timeout=5" % queue, hostport, auth)
    try:
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            status, headers, _ = await c.call(peek)
            t1 = time.perf_counter()
            lat.append(t1 - t0)
            counts[0] += 1
            if baseline:
                path = "/%s/messages/1/00000000-0000-0000-0000-000000000000" % queue
            else:
                if status != 201:
                    counts[1] += 1
                    continue
                loc = headers[b"location"].decode()
                path = "/" + loc.split("/", 3)[3]
            status, _, _ = await c.call(request("DELETE", path, hostport, auth))
            lat.append(time.perf_counter() - t1)
            counts[0] += 1
            if status != 200:
                counts[1] += 1
    finally:
        c.close()


def pct(sorted_vals, p):
    if not sorted_vals:
        return float("nan")
    k = min(len(sorted_vals) - 1, max(0, int(round(p / 100.0 * len(sorted_vals))) - 1))
    return sorted_vals[k]


def own_cpu():
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def run_loop(host, port, auth, queue, seconds, inflight, baseline=False):
    cpu0 = own_cpu()
    lat, counts = [], [0, 0]
    hostport = "%s:%d" % (host, port)
    deadline = time.perf_counter() + seconds
    t0 = time.perf_counter()
    await asyncio.gather(
        *(loop_worker(host, port, hostport, auth, queue, deadline, lat, counts, baseline) for _ in range(inflight))
    )
    elapsed = time.perf_counter() - t0
    lat.sort()
    return {
        "gen_cpu_us": (own_cpu() - cpu0) / max(counts[0], 1) * 1e6,
        "ops": counts[0],
        "errors": counts[1],
        "ops_per_s": counts[0] / elapsed,
        "cycles_per_s": counts[0] / 2 / elapsed,
        "p50_ms": pct(lat, 50) * 1e3,
        "p99_ms": pct(lat, 99) * 1e3,
        "p999_ms": pct(lat, 99.9) * 1e3,
        "max_ms": lat[-1] * 1e3 if lat else 0,
    }


async def fill(emu, queue, count, size, batch=100):
    c = await Conn.open(emu.host, emu.port)
    hostport = "%s:%d" % (emu.host, emu.port)
    auth = emu.sas_token(lifetime=7200)
    body_text = "x" * size
    sent = 0
    try:
        while sent < count:
            n = min(batch, count - sent)
            body = json.dumps([{"Body": body_text} for _ in range(n)]).encode()
            req = (
                "POST /%s/messages HTTP/1.1\r\nHost: %s\r\nAuthorization: %s\r\n"
                "Content-Type: application/vnd.microsoft.servicebus.json\r\nContent-Length: %d\r\n\r\n"
                % (queue, hostport, auth, len(body))
            ).encode() + body
            status, _, data = await c.call(req)
            if status != 201:
                raise RuntimeError("fill failed: %d %s" % (status, data[:200]))
            sent += n
    finally:
        c.close()


LOADGEN_SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "loadgen.c")


def build_loadgen(outdir):
    """Compile loadgen.c; (path, None) or (None, reason)."""
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if not cc:
        return None, "no C compiler (cc) found"
    exe = os.path.join(outdir, "loadgen")
    cmd = [cc, "-O2", "-o", exe, LOADGEN_SRC, "-lcurl"]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, "%s failed: %s" % (" ".join(cmd), e)
    if p.returncode != 0:
        return None, "%s failed: %s" % (" ".join(cmd), (p.stderr.strip().splitlines() or ["?"])[-1][:200])
    return exe, None


def run_c(exe, host, port, auth, queue, seconds, baseline=False):
    """One keep-alive client in C (libcurl): the same peek-lock + complete loop."""
    cmd = [exe, "http://%s:%d" % (host, port), queue, auth, str(seconds)] + (["baseline"] if baseline else [])
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    if out.returncode != 0:
        raise RuntimeError("loadgen failed (%d): %s" % (out.returncode, out.stderr.strip()[:300]))
    r = json.loads(out.stdout.strip().splitlines()[-1])
    r["ops_per_s"] = r["ops"] / r["elapsed"]
    r["cycles_per_s"] = r["ops_per_s"] / 2
    return r


def cpu_seconds(pid):
    """utime + stime of a process, from /proc (load-independent cost figure)."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def fmt(name, r):
    return (
        "%-36s %6.0f ops/s (%5.0f cycles/s) p50 %5.2f ms p99 %5.2f ms p99.9 %5.2f ms max %5.2f ms "
        "server CPU %4.0f us/op (=> %5.0f ops/s per core) load generator CPU %4.0f us/op errors %d"
        % (
            name,
            r["ops_per_s"],
            r["cycles_per_s"],
            r["p50_ms"],
            r["p99_ms"],
            r["p999_ms"],
            r["max_ms"],
            r.get("cpu_us", 0),
            1e6 / r["cpu_us"] if r.get("cpu_us") else 0,
            r["gen_cpu_us"],
            r["errors"],
        )
    )


def main():
    try:
        import uvloop  # the load generator too, when installed

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        loop_name = "uvloop %s" % uvloop.__version__
    except ImportError:
        loop_name = "asyncio"
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=5.0, help="duration of each throughput run")
    ap.add_argument("--messages", type=int, default=100000, help="messages queued for the memory figure")
    ap.add_argument("--size", type=int, default=1024, help="message size for the memory figure (bytes)")
    ap.add_argument("--data-dir", action="store_true", help="also measure with --data-dir (SQLite)")
    args = ap.parse_args()
    print(
        "command: PYTHONPATH=python %s %s"
        % (sys.executable, " ".join([os.path.relpath(__file__, ROOT)] + sys.argv[1:]))
    )
    print(
        "machine: %d CPUs, load average %s, Python %s, event loop %s (server and load generator)"
        % (os.cpu_count(), " ".join("%.2f" % x for x in os.getloadavg()), sys.version.split()[0], loop_name)
    )

    pin_client()  # the load generators; each server goes to its own CPU below
    print("cpus:", describe())
    tmpbin = tempfile.mkdtemp(prefix="plbench-bin-")
    loadgen, why = build_loadgen(tmpbin)

    def c_run(pid, host, port, auth, queue, baseline=False):
        c0 = cpu_seconds(pid)
        r = run_c(loadgen, host, port, auth, queue, args.seconds, baseline)
        r["cpu_us"] = (cpu_seconds(pid) - c0) / max(r["ops"], 1) * 1e6
        return r

    # baseline: a bare aiohttp server, same load generators
    base = subprocess.Popen([sys.executable, "-c", BASELINE_SERVER], stdout=subprocess.PIPE, text=True)
    try:
        port = int(base.stdout.readline().split()[1])
        pin_server(base.pid)
        c0 = cpu_seconds(base.pid)
        b1 = asyncio.run(run_loop("127.0.0.1", port, "x", "q", args.seconds, 1, baseline=True))
        c1 = cpu_seconds(base.pid)
        b16 = asyncio.run(run_loop("127.0.0.1", port, "x", "q", args.seconds, 16, baseline=True))
        c2 = cpu_seconds(base.pid)
        b1["cpu_us"] = (c1 - c0) / max(b1["ops"], 1) * 1e6
        b16["cpu_us"] = (c2 - c1) / max(b16["ops"], 1) * 1e6
        bc = c_run(base.pid, "127.0.0.1", port, "x", "q", baseline=True) if loadgen else None
    finally:
        base.terminate()
        base.wait()
    print(fmt("baseline aiohttp, 1 client", b1))
    print(fmt("baseline aiohttp, 16 in flight", b16))
    if bc is not None:
        print(fmt("baseline aiohttp, 1 client (C)", bc))
    else:
        print("C load generator (libcurl): skipped, %s" % why)

    runs = [("memory", [])]
    if args.data_dir:
        runs.append(("sqlite", None))
    for label, _ in runs:
        tmp = tempfile.mkdtemp(prefix="plbench-") if label == "sqlite" else None
        emu = Emulator.start("--queue", "bench", "--queue", "mem", data_dir=tmp)
        pin_server(emu.proc.pid)
        try:
            auth = emu.sas_token(lifetime=7200)
            need = int(args.seconds * 30000) + 1000
            asyncio.run(fill(emu, "bench", need, 16, batch=500))
            c0 = cpu_seconds(emu.proc.pid)
            r1 = asyncio.run(run_loop(emu.host, emu.port, auth, "bench", args.seconds, 1))
            c1 = cpu_seconds(emu.proc.pid)
            r16 = asyncio.run(run_loop(emu.host, emu.port, auth, "bench", args.seconds, 16))
            c2 = cpu_seconds(emu.proc.pid)
            r1["cpu_us"] = (c1 - c0) / max(r1["ops"], 1) * 1e6
            r16["cpu_us"] = (c2 - c1) / max(r16["ops"], 1) * 1e6
            rc = c_run(emu.proc.pid, emu.host, emu.port, auth, "bench") if loadgen else None
            print(fmt("emulator (%s), 1 client" % label, r1))
            print(fmt("emulator (%s), 16 in flight" % label, r16))
            if rc is not None:
                print(fmt("emulator (%s), 1 client (C)" % label, rc))
            print(
                "  ratio to baseline: 1 client %.2f, 16 in flight %.2f%s"
                % (
                    r1["ops_per_s"] / b1["ops_per_s"],
                    r16["ops_per_s"] / b16["ops_per_s"],
                    ", 1 client (C) %.2f" % (rc["ops_per_s"] / bc["ops_per_s"]) if rc is not None else "",
                )
            )

            def verdict(r):
                return "%s / %s" % (
                    "met" if r["ops_per_s"] >= 5000 else "NOT met",
                    "met" if r["p999_ms"] < 40 else "NOT met",
                )

            print(
                "  targets (>= 5000 ops/s / p99.9 < 40 ms): 1 client (Python generator) %s; 16 in flight %s%s"
                % (verdict(r1), verdict(r16), "; 1 client (C generator) %s" % verdict(rc) if rc is not None else "")
            )
            if label == "memory":
                emu.reset()
                idle = rss_mb(emu.proc.pid)
                t0 = time.perf_counter()
                asyncio.run(fill(emu, "mem", args.messages, args.size))
                took = time.perf_counter() - t0
                full = rss_mb(emu.proc.pid)
                count = emu.entity_state("mem")["message_count"]
                print(
                    "memory: %d queued %d-byte messages (filled in %.1f s): RSS %.1f MB (idle %.1f MB, +%.1f MB, "
                    "%.0f bytes/message); target <= 300 MB -> %s"
                    % (
                        count,
                        args.size,
                        took,
                        full,
                        idle,
                        full - idle,
                        (full - idle) * 1048576 / max(count, 1),
                        "met" if full <= 300 else "NOT met",
                    )
                )
        finally:
            emu.stop()
    shutil.rmtree(tmpbin, ignore_errors=True)


if __name__ == "__main__":
    main()
