#!/usr/bin/env python3
"""Renewer benchmark: the peeklock renewer against a thread-per-lock renewer.

Builds bench_renewer.c together with csrc/*.c (-O2), starts the emulator
(python -m peeklock.emulator, port 0, loopback), and for each workload runs both
renewers one after the other on a fresh queue, then prints the figures side by
side. Nothing is asserted: these are figures, not tests.

    .venv/bin/python bench/renewer/run.py                 # N = 100, 1000, 10000 at 30 s; 1000 at 5 s
    .venv/bin/python bench/renewer/run.py --quick         # N = 100 and 1000 at 5 s, short runs
    .venv/bin/python bench/renewer/run.py --workloads 1000:5 --lock-durations 2

Run length per workload: --lock-durations (default 2) times the lock duration.
"""

import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "python"))
from peeklock.testing import Emulator  # noqa: E402  (the source tree's emulator launcher)


def build(out_dir):
    exe = os.path.join(out_dir, "bench_renewer")
    srcs = sorted(glob.glob(os.path.join(ROOT, "csrc", "*.c")))
    cmd = (
        [
            "cc",
            "-std=c11",
            "-O2",
            "-g",
            "-D_POSIX_C_SOURCE=200809L",
            "-D_DEFAULT_SOURCE",
            "-I" + os.path.join(ROOT, "csrc"),
            "-I" + os.path.join(ROOT, "csrc", "include"),
            "-I/usr/include/cjson",
        ]
        + srcs
        + [
            os.path.join(ROOT, "bench", "renewer", "bench_renewer.c"),
            "-lcurl",
            "-lcrypto",
            "-lcjson",
            "-lpthread",
            "-lm",
            "-o",
            exe,
        ]
    )
    subprocess.run(cmd, check=True)
    return exe


def run_one(exe, conn, mode, n, lock_s, run_s):
    env = dict(os.environ, PEEKLOCK_CONNECTION_STRING=conn)
    p = subprocess.run(
        [exe, mode, str(n), str(lock_s), str(run_s)], env=env, capture_output=True, text=True, timeout=run_s + 600
    )
    if p.returncode != 0:
        return {"mode": mode, "error": (p.stderr or p.stdout).strip()[-200:]}
    return json.loads(p.stdout.strip().splitlines()[-1])


ROWS = [
    ("locks lost", "lost", "%d"),
    ("renewals", "renewals", "%d"),
    ("failed renew attempts", "failures", "%d"),
    ("renewal lateness p99 (ms)", "lateness_p99_ms", "%.1f"),
    ("  as % of lock duration", None, None),
    ("CPU per renewal (us)", "cpu_us_per_renewal", "%.1f"),
    ("CPU total (s)", "cpu_s", "%.2f"),
    ("heap per held lock (bytes)", "heap_bytes_per_lock", "%.0f"),
    ("RSS per held lock (KiB)", "rss_kb_per_lock", "%.2f"),
    ("library state per lock (bytes)", "state_bytes_per_lock", "%.0f"),
    ("threads used", "threads", "%d"),
    ("connections (pool)", "connections", "%d"),
]


def fmt(v, f):
    if v is None:
        return "-"
    try:
        return f % v
    except TypeError:
        return str(v)


def table(n, lock_s, a, b):
    print("\nN = %d locks, lock duration %d s, run %.0f s" % (n, lock_s, a.get("run_s", 0)))
    if "error" in a or "error" in b:
        print("  peeklock: %s\n  thread-per-lock: %s" % (a.get("error", "ok"), b.get("error", "ok")))
    print("  %-32s %14s %16s %10s" % ("", "peeklock", "thread-per-lock", "ratio"))
    for label, key, f in ROWS:
        if key is None:
            va = a.get("lateness_p99_ms")
            vb = b.get("lateness_p99_ms")
            pa = None if va is None else 100.0 * va / (lock_s * 1000.0)
            pb = None if vb is None else 100.0 * vb / (lock_s * 1000.0)
            print("  %-32s %14s %16s" % (label, fmt(pa, "%.3f%%"), fmt(pb, "%.3f%%")))
            continue
        va, vb = a.get(key), b.get(key)
        ratio = ""
        if (
            isinstance(va, (int, float))
            and isinstance(vb, (int, float))
            and va > 0
            and key
            in (
                "cpu_us_per_renewal",
                "cpu_s",
                "heap_bytes_per_lock",
                "rss_kb_per_lock",
                "threads",
                "lateness_p99_ms",
                "renewals",
            )
        ):
            ratio = "%.1fx" % (vb / va)
        print("  %-32s %14s %16s %10s" % (label, fmt(va, f), fmt(vb, f), ratio))
    sys.stdout.flush()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workloads", default="100:30,1000:30,10000:30,1000:5", help="comma-separated N:LOCK_SECONDS")
    ap.add_argument("--lock-durations", type=float, default=2.0, help="run length in lock durations (default 2)")
    ap.add_argument("--quick", action="store_true", help="100:5,1000:5 for 1.5 lock durations")
    ap.add_argument("--only", choices=["peeklock", "thread"], help="run one renewer only")
    args = ap.parse_args()
    if args.quick:
        args.workloads, args.lock_durations = "100:5,1000:5", 1.5
    workloads = [tuple(int(x) for x in w.split(":")) for w in args.workloads.split(",")]

    with tempfile.TemporaryDirectory() as tmp:
        exe = build(tmp)
        print("renewer benchmark (figures, not assertions); nproc=%d" % os.cpu_count())
        results = []
        for n, lock_s in workloads:
            run_s = lock_s * args.lock_durations
            res = {}
            for mode in ("peeklock", "thread"):
                if args.only and mode != args.only:
                    res[mode] = {"mode": mode, "error": "skipped"}
                    continue
                emu = Emulator.start()  # fresh emulator per run: neither run inherits the other's load
                try:
                    res[mode] = run_one(exe, emu.connection_string, mode, n, lock_s, run_s)
                finally:
                    emu.stop()
            table(n, lock_s, res["peeklock"], res["thread"])
            results.append({"n": n, "lock_s": lock_s, **res})
        print("\nraw: " + json.dumps(results))


if __name__ == "__main__":
    main()
