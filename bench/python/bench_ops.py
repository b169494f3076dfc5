"""Client CPU per operation (send, peek-lock, complete), in one run, for:

  1. peeklock      the Python package (SWIG extension over the C core)
  2. C core        the same calls through libpeeklock directly (bench/python/c_ops.c)
  3. requests      a hand-written requests client doing the same REST calls
  4. legacy SDK    azure-servicebus 0.21.1 ServiceBusService (the REST client)

All against one local emulator (a separate process, so its CPU is not counted).
CPU is the client process's CPU time (all threads, from the scheduler's clock)
divided by the operations. The package and the C core each keep one client
(the C core in one long-lived helper process) and run many short rounds,
interleaved (the order alternates every round), after one warm-up round each;
the package's cost above the C core is the median of the per-round paired
differences, printed with its interquartile range, so a slow patch of the
shared machine hits both sides of a pair. The pure-Python peers run fewer
rounds (their medians are printed). Targets (issue 5): the package at most
15 us per operation above C; at least 10x less client CPU per message than
the best pure-Python peer. Figures are printed, never asserted.

With --instructions N it also counts user-space instructions per operation
under callgrind (one round of N after a warm-up, each side), which no load on
the machine moves; the phases are split at getppid() marks both sides make.

    .venv/bin/python bench/python/bench_ops.py [--n 200] [--rounds 30] [--peer-rounds 3]
                                               [--body 256] [--instructions 300]
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid
from typing import Dict, List, Optional, Sequence

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OPS = ("send", "peek_lock", "complete")
Result = Dict[str, float]


def cpu() -> float:
    return time.process_time()


def phase() -> float:
    """The CPU clock at a phase boundary, after a getppid() call: the mark on
    which --instructions splits a callgrind profile (as c_ops.c does)."""
    os.getppid()
    return time.process_time()


def quartiles(xs: Sequence[float]) -> "tuple[float, float, float]":
    if len(xs) < 2:
        return xs[0], xs[0], xs[0]
    q1, q2, q3 = statistics.quantiles(xs, n=4, method="inclusive")
    return q1, q2, q3


# ---------------------------------------------------------------- peeklock


class PeeklockRunner:
    """The package, one client for every round (like an application)."""

    def __init__(self, emu) -> None:
        import peeklock

        self.client = peeklock.Client.from_connection_string(emu.connection_string)

    def round(self, queue: str, n: int, body: bytes) -> Result:
        client = self.client
        props = {"Kind": "bench", "Index": 0}
        m0 = time.thread_time()
        t0 = phase()
        for i in range(n):
            props["Index"] = i
            client.send(queue, body, properties=props)
        t1 = phase()
        msgs = []
        for _ in range(n):
            m = client.peek_lock(queue, 5)
            m.body, m.message_id, m.sequence_number
            msgs.append(m)
        t2 = phase()
        for m in msgs:
            m.complete()
        t3 = phase()
        m3 = time.thread_time()
        return {
            "send": (t1 - t0) / n,
            "peek_lock": (t2 - t1) / n,
            "complete": (t3 - t2) / n,
            "other_threads": ((t3 - t0) - (m3 - m0)) / (3 * n),
        }

    def close(self) -> None:
        self.client.close()


class TracedRunner(PeeklockRunner):
    """The package with peeklock.telemetry instrumented for its rounds only:
    "API" with no SDK provider (the API's no-op tracer and meter), "SDK" with
    the OpenTelemetry SDK, an in-memory span exporter and metric reader."""

    def __init__(self, emu, sdk: bool) -> None:
        super().__init__(emu)
        self.tp = self.mp = None
        if sdk:
            from opentelemetry.sdk.metrics import MeterProvider
            from opentelemetry.sdk.metrics.export import InMemoryMetricReader
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import SimpleSpanProcessor
            from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

            self.exporter = InMemorySpanExporter()
            self.tp = TracerProvider()
            self.tp.add_span_processor(SimpleSpanProcessor(self.exporter))
            self.mp = MeterProvider(metric_readers=[InMemoryMetricReader()])

    def round(self, queue: str, n: int, body: bytes) -> Result:
        from peeklock import telemetry

        if self.tp is not None:
            self.exporter.clear()
        telemetry.instrument(tracer_provider=self.tp, meter_provider=self.mp)
        try:
            return super().round(queue, n, body)
        finally:
            telemetry.uninstrument()


# ------------------------------------------------------------------ C core


def build_c_ops() -> Optional[str]:
    out = os.path.join(tempfile.gettempdir(), "peeklock-bench-c_ops")
    # Release build of the static core, like the one inside the extension.
    bdir = os.path.join(ROOT, "build", "bench-python")
    subprocess.run(
        ["cmake", "-S", ROOT, "-B", bdir, "-DPEEKLOCK_TESTS=OFF", "-DCMAKE_BUILD_TYPE=Release"],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    subprocess.run(
        ["cmake", "--build", bdir, "--target", "peeklock_static", "-j2"], check=True, stdout=subprocess.DEVNULL
    )
    lib = os.path.join(bdir, "csrc", "libpeeklock.a")
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return None
    subprocess.run(
        [
            cc,
            "-O2",
            "-std=c11",
            "-Wall",
            "-Wextra",
            "-o",
            out,
            os.path.join(ROOT, "bench", "python", "c_ops.c"),
            "-I",
            os.path.join(ROOT, "csrc", "include"),
            lib,
            "-lcurl",
            "-lssl",
            "-lcrypto",
            "-lcjson",
            "-lpthread",
        ],
        check=True,
    )
    return out


class CRunner:
    """The C core in one long-lived helper process (bench/python/c_ops.c)."""

    def __init__(self, exe: str, emu, body: bytes) -> None:
        self.proc = subprocess.Popen(
            [exe, emu.connection_string, str(len(body))], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )

    def round(self, queue: str, n: int, body: bytes) -> Result:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"{queue} {n}\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"c_ops exited with status {self.proc.wait()}")
        return {k: v / 1e6 for k, v in json.loads(line).items()}

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(10)


# ------------------------------------------------- instruction counts

_PY_CHILD = """
import sys
sys.path.insert(0, sys.argv[1])
from bench_ops import PeeklockRunner
class Emu:
    connection_string = sys.argv[2]
runner = PeeklockRunner(Emu)
body = b"x" * int(sys.argv[5])
runner.round(sys.argv[3], 2, body)            # warm-up
runner.round(sys.argv[3], int(sys.argv[4]), body)
runner.close()
"""


def _callgrind_phases(cmd: List[str], out: str, stdin: Optional[str] = None) -> List[int]:
    """Instructions of the last round's three phases: callgrind dumps a part
    at every getppid() (the phase marks), the last dump is the exit."""
    subprocess.run(
        ["valgrind", "--tool=callgrind", "--dump-before=getppid", f"--callgrind-out-file={out}"] + cmd,
        input=stdin,
        text=True,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    parts = {}
    d = os.path.dirname(out)
    for f in os.listdir(d):
        if not f.startswith(os.path.basename(out)):
            continue
        part = total = None
        with open(os.path.join(d, f)) as fh:
            for line in fh:
                if line.startswith("part: "):
                    part = int(line.split()[1])
                elif line.startswith(("summary: ", "totals: ")):
                    total = int(line.split()[1])
        if part is not None and total is not None:
            parts[part] = total
    return [parts[k] for k in sorted(parts)[-4:-1]]


def instructions(emu, exe: str, n: int, body: bytes) -> Dict[str, Dict[str, float]]:
    """User-space instructions per operation of one round after a warm-up,
    under callgrind: the package and the C core, load-independent."""
    out: Dict[str, Dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as d:
        for name in ("peeklock", "C core"):
            q = "bench-" + uuid.uuid4().hex[:8]
            emu.create_queue(q, lock_duration=120)
            if name == "C core":
                counts = _callgrind_phases(
                    [exe, emu.connection_string, str(len(body))], os.path.join(d, "c.out"), f"{q} 2\n{q} {n}\n"
                )
            else:
                counts = _callgrind_phases(
                    [
                        sys.executable,
                        "-c",
                        _PY_CHILD,
                        os.path.dirname(os.path.abspath(__file__)),
                        emu.connection_string,
                        q,
                        str(n),
                        str(len(body)),
                    ],
                    os.path.join(d, "py.out"),
                )
            emu.delete_entity(q)
            out[name] = {k: v / n for k, v in zip(OPS, counts)}
    return out


# ---------------------------------------------------------------- requests


def run_requests(emu, queue: str, n: int, body: bytes) -> Dict[str, float]:
    import requests

    base = emu.endpoint
    uri = urllib.parse.quote(base + "/", safe="").lower()
    se = int(time.time()) + 3600
    sig = base64.b64encode(hmac.new(emu.key.encode(), f"{uri}\n{se}".encode(), hashlib.sha256).digest()).decode()
    auth = f"SharedAccessSignature sr={uri}&sig={urllib.parse.quote(sig, safe='')}&se={se}&skn={emu.key_name}"
    s = requests.Session()
    s.headers["Authorization"] = auth
    t0 = cpu()
    for i in range(n):
        r = s.post(
            f"{base}/{queue}/messages",
            data=body,
            headers={
                "Content-Type": "application/octet-stream",
                "Kind": '"bench"',
                "Index": str(i),
                "BrokerProperties": "{}",
            },
        )
        r.raise_for_status()
    t1 = cpu()
    locs = []
    for _ in range(n):
        r = s.post(f"{base}/{queue}/messages/head", params={"timeout": "5"})
        r.raise_for_status()
        bp = json.loads(r.headers["BrokerProperties"])
        props = {
            k: v
            for k, v in r.headers.items()
            if k.lower() not in ("brokerproperties", "content-type", "location", "date", "server", "transfer-encoding")
        }
        r.content, bp["MessageId"], bp["SequenceNumber"], props
        locs.append(r.headers["Location"])
    t2 = cpu()
    for loc in locs:
        path = urllib.parse.urlsplit(loc).path
        s.delete(base + path).raise_for_status()
    t3 = cpu()
    s.close()
    return {"send": (t1 - t0) / n, "peek_lock": (t2 - t1) / n, "complete": (t3 - t2) / n}


# -------------------------------------------------------------- legacy SDK


def run_legacy(emu, queue: str, n: int, body: bytes) -> Dict[str, float]:
    from azure.servicebus import Message, ServiceBusService

    sbs = ServiceBusService(
        service_namespace=emu.host,
        host_base=f":{emu.port}",
        shared_access_key_name=emu.key_name,
        shared_access_key_value=emu.key,
    )
    sbs._httpclient.protocol = "http"  # the emulator speaks plain HTTP on its own port
    t0 = cpu()
    for i in range(n):
        sbs.send_queue_message(queue, Message(body, custom_properties={"Kind": "bench", "Index": i}))
    t1 = cpu()
    msgs = []
    for _ in range(n):
        m = sbs.receive_queue_message(queue, peek_lock=True, timeout=5)
        m.body, m.broker_properties["MessageId"], m.broker_properties["SequenceNumber"]
        msgs.append(m)
    t2 = cpu()
    for m in msgs:
        m.delete()
    t3 = cpu()
    return {"send": (t1 - t0) / n, "peek_lock": (t2 - t1) / n, "complete": (t3 - t2) / n}


# -------------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser(description="client CPU per operation: peeklock vs peers")
    ap.add_argument("--n", type=int, default=200, help="messages per round (default 200)")
    ap.add_argument(
        "--rounds", type=int, default=30, help="interleaved rounds of the package and the C core (default 30)"
    )
    ap.add_argument(
        "--peer-rounds", type=int, default=3, help="rounds of each pure-Python peer (default 3; 0 skips them)"
    )
    ap.add_argument("--body", type=int, default=256, help="body bytes (default 256)")
    ap.add_argument(
        "--telemetry",
        action="store_true",
        help="also run the package with peeklock.telemetry instrumented: with the "
        "OpenTelemetry API alone (no SDK provider) and with the SDK and "
        "in-memory exporters, in the same interleaved rounds",
    )
    ap.add_argument(
        "--instructions",
        type=int,
        default=0,
        metavar="N",
        help="also count instructions per operation under callgrind, one round of "
        "N messages each (deterministic; needs valgrind)",
    )
    args = ap.parse_args()
    from peeklock.testing import Emulator  # the installed package (pip install .)

    body = b"x" * args.body
    exe = build_c_ops()
    samples: Dict[str, List[Result]] = {}
    skipped: Dict[str, str] = {}
    emu = Emulator.start()
    sys.path.insert(0, os.path.join(ROOT, "bench"))
    from cpus import describe, pin_client, pin_server

    pin_server(emu.proc.pid)
    pin_client()  # before the C core's helper process starts: it inherits this
    print("cpus:", describe())
    runners: Dict[str, object] = {}
    try:
        runners["peeklock"] = PeeklockRunner(emu)
        if args.telemetry:
            runners["otel API"] = TracedRunner(emu, sdk=False)
            runners["otel SDK"] = TracedRunner(emu, sdk=True)
        if exe:
            runners["C core"] = CRunner(exe, emu, body)
        queues = {}
        for name in runners:
            queues[name] = "bench-" + uuid.uuid4().hex[:8]
            emu.create_queue(queues[name], lock_duration=60)
        for name, r in runners.items():  # warm-up round, not counted
            r.round(queues[name], args.n, body)
        names = list(runners)
        for rnd in range(args.rounds):
            for name in names if rnd % 2 == 0 else names[::-1]:
                samples.setdefault(name, []).append(runners[name].round(queues[name], args.n, body))
        py_threads = threading.active_count()
        os_threads = len(os.listdir("/proc/self/task")) if os.path.isdir("/proc/self/task") else 0
        counts = (
            instructions(emu, exe, args.instructions, body)
            if args.instructions and exe and shutil.which("valgrind")
            else None
        )
        for name, fn in (("requests", run_requests), ("legacy SDK", run_legacy)):
            for _ in range(args.peer_rounds):
                q = "bench-" + uuid.uuid4().hex[:8]
                emu.create_queue(q, lock_duration=60)
                try:
                    samples.setdefault(name, []).append(fn(emu, q, args.n, body))
                except ImportError as e:
                    skipped[name] = f"not installed ({e.name})"
                    samples.pop(name, None)
                    break
                finally:
                    emu.delete_entity(q)
    finally:
        for r in runners.values():
            r.close()  # type: ignore[attr-defined]
        emu.stop()

    us: Dict[str, Dict[str, float]] = {}
    for name, rs in samples.items():
        us[name] = {k: statistics.median(r[k] for r in rs) * 1e6 for k in OPS}
        us[name]["per message"] = statistics.median(sum(r[k] for k in OPS) for r in rs) * 1e6
        if "other_threads" in rs[0]:
            us[name]["other threads"] = statistics.median(r["other_threads"] for r in rs) * 1e6
    cols = list(OPS) + ["per message", "other threads"]
    print(
        f"client CPU per operation, us: medians of {args.rounds} interleaved rounds of "
        f"{args.n} messages (peers: {args.peer_rounds} rounds), {args.body}-byte bodies; "
        f"Python {sys.version.split()[0]}"
    )
    print(f"{'client':<12}" + "".join(f"{c:>14}" for c in cols))
    for name, r in us.items():
        print(f"{name:<12}" + "".join(f"{r[c]:>14.1f}" if c in r else f"{'-':>14}" for c in cols))
    for name, why in skipped.items():
        print(f"{name:<12}  skipped: {why}")
    print(
        f'("other threads": CPU per operation outside the thread making the calls; '
        f"the package's process had {py_threads} Python thread(s), {os_threads} OS thread(s))"
    )
    if "peeklock" in samples and "C core" in samples:
        p, c = samples["peeklock"], samples["C core"]
        print("\npeeklock over the C core, per-round paired differences (target: at most 15 us per operation):")
        print(f"  {'':<12}{'median':>7}{'IQR':>20}{'ratio':>8}")
        for k in OPS + ("per message",):
            if k == "per message":
                d = [sum(a[o] - b[o] for o in OPS) * 1e6 for a, b in zip(p, c)]
            else:
                d = [(a[k] - b[k]) * 1e6 for a, b in zip(p, c)]
            q1, med, q3 = quartiles(d)
            ratio = us["peeklock"][k] / us["C core"][k]
            print(f"  {k:<12}{med:>+7.1f}  [{q1:>+7.1f}, {q3:>+7.1f}] us{ratio:>7.2f}x")
    if counts:
        p, c = counts["peeklock"], counts["C core"]
        print(
            f"\nuser-space instructions per operation (callgrind, one round of {args.instructions} "
            f"after a warm-up; repeatable to a few per cent):"
        )
        print(f"{'':<12}" + "".join(f"{k:>18}" for k in OPS))
        for name, r in counts.items():
            print(f"{name:<12}" + "".join(f"{r[k]:>18,.0f}" for k in OPS))
        print(f"{'difference':<12}" + "".join(f"{f'{p[k] - c[k]:+,.0f} ({p[k] / c[k] - 1:+.1%})':>18}" for k in OPS))
    elif args.instructions:
        print("\ninstruction counts skipped: valgrind or the C helper is missing")
    if "C core" in samples and "otel API" in samples:
        print(
            "\nwith peeklock.telemetry instrumented, over the C core (per-round paired "
            "differences, us per operation; not instrumented costs nothing: the rows "
            "above):"
        )
        print(f"  {'':<12}" + "".join(f"{k:>12}" for k in OPS + ("per message",)))
        for name in ("peeklock", "otel API", "otel SDK"):
            row = []
            for k in OPS + ("per message",):
                ks = OPS if k == "per message" else (k,)
                d = [sum(a[o] - b[o] for o in ks) * 1e6 for a, b in zip(samples[name], samples["C core"])]
                row.append(statistics.median(d))
            print(f"  {name:<12}" + "".join(f"{v:>+12.1f}" for v in row))
    peers = [n for n in ("requests", "legacy SDK") if n in us]
    if "peeklock" in us and peers:
        bestpeer = min(peers, key=lambda n: us[n]["per message"])
        ratio = us[bestpeer]["per message"] / us["peeklock"]["per message"]
        print(
            f"\nbest pure-Python peer: {bestpeer}, {us[bestpeer]['per message']:.0f} us per message;"
            f" peeklock {us['peeklock']['per message']:.0f} us: {ratio:.1f}x less client CPU "
            f"(target: at least 10x)"
        )
        for n in peers:
            print(f"  vs {n:<10} {us[n]['per message'] / us['peeklock']['per message']:5.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
