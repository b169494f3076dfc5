"""Client CPU per operation: C core, Lua 5.4, LuaJIT and OpenResty, in one run.

    .venv/bin/python bench/lua/run.py [--rounds 121] [--net-k 20] [--wire-k 250] [--callgrind]

Builds the Lua modules and the C baseline (bench/lua/c_baseline.c), starts the
emulator and nginx (own prefix, free port), then measures the client's process CPU
time (every thread) for two workloads:
  net   send + peek_lock + complete against the emulator over loopback (3 ops each)
  wire  sans-I/O: build a send request and parse a peek-lock response (2 ops each)
Each runtime is one long-lived process with one client (C and the two Lua interpreters
serve rounds over a pipe, OpenResty over HTTP from one nginx worker). Two floor rows (net
only) run bench.lua's net loop through bench/lua/floor.c, a minimal binding of the same
calls on the Lua C API (one C call per operation, no message object): their distance from
C is the interpreter's share on this machine, and each runtime's distance from its floor is
peeklock's Lua layer. Many short rounds interleave the runtimes, in a new shuffled order
each round (fixed seed), so a change of machine load, and whatever a runtime leaves in the
caches for the next, hits them alike; the figures are the median per-op CPU and the median
of the per-round differences to C, with their interquartile range.
--callgrind adds instruction counts per op under valgrind (C, Lua 5.4, LuaJIT; the
difference of two run lengths, so start-up cancels): deterministic, load-independent.
Prints figures; asserts nothing (target: at most 10 us/op above C).
"""

import argparse
import os
import random
import re
import statistics
import subprocess
import sys
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "nginx"))
sys.path.insert(0, os.path.join(ROOT, "python"))
from peeklock.testing import Emulator  # noqa: E402
from test_nginx import Nginx  # noqa: E402

sys.path.insert(0, os.path.join(ROOT, "bench"))
from cpus import describe, pin_client, pin_server  # noqa: E402

ENTITY = "bench"
BENCH_LUA = os.path.join(ROOT, "bench/lua/bench.lua")


def sh(*cmd, env=None):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout


def lua_env(build, flavour):
    return dict(
        os.environ, LUA_PATH=f"{ROOT}/lua/?.lua;{ROOT}/bench/lua/?.lua;;", LUA_CPATH=f"{build}/lua/{flavour}/?.so;;"
    )


class Served:
    """A long-lived bench process (c_baseline or bench.lua in serve mode)."""

    def __init__(self, cmd, env=None):
        self.proc = subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)

    def __call__(self, mode, k):
        self.proc.stdin.write(f"{mode} {k}\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.proc.args[0]} exited ({self.proc.wait()})")
        ops, cpu = line.split()
        return int(ops), float(cpu)

    def threads(self):
        """(user, system) CPU seconds of each thread of the process so far (from /proc)."""
        tick = os.sysconf("SC_CLK_TCK")
        out = []
        task = f"/proc/{self.proc.pid}/task"
        for tid in sorted(os.listdir(task), key=int):
            with open(f"{task}/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            out.append((int(fields[11]) / tick, int(fields[12]) / tick))  # utime, stime
        return out

    def close(self):
        self.proc.stdin.close()
        self.proc.wait()


def quartiles(v):
    q = statistics.quantiles(v, n=4, method="inclusive")
    return q[0], q[1], q[2]


def callgrind_per_op(cmd_for, mode, n, env=None):
    """Instructions per op: (count(2n) - count(n)) / ops(n)."""
    counts, ops = [], []
    for k in (n, 2 * n):
        r = subprocess.run(
            ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null"] + cmd_for(mode, k),
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        counts.append(int(re.search(r"Collected : (\d+)", r.stderr).group(1)))
        ops.append(int(r.stdout.split()[1]))
    return (counts[1] - counts[0]) / (ops[1] - ops[0])


def main():
    ap = argparse.ArgumentParser(allow_abbrev=False)
    ap.add_argument("--rounds", type=int, default=121)
    ap.add_argument("--net-k", type=int, default=20, help="net iterations per round (3 ops each)")
    ap.add_argument("--wire-k", type=int, default=250, help="wire iterations per round (2 ops each)")
    ap.add_argument("--callgrind", action="store_true", help="also count instructions per op under valgrind")
    ap.add_argument("--build", default=os.path.join(ROOT, "build", "lua"))
    a = ap.parse_args()
    build = a.build
    sh("cmake", "-S", ROOT, "-B", build, "-DCMAKE_BUILD_TYPE=Release", "-DPEEKLOCK_LUA=ON", "-DPEEKLOCK_TESTS=OFF")
    sh("cmake", "--build", build, "--target", "peeklock_lua", "peeklock_static", "-j2")

    def cc(src, out, *flags):
        """Compiles src against the static core (as a program, or a module with -shared)."""
        sh(
            "cc",
            "-std=c11",
            "-O2",
            "-Wall",
            "-Wextra",
            *flags,
            "-I" + os.path.join(ROOT, "csrc/include"),
            os.path.join(ROOT, src),
            os.path.join(build, "csrc/libpeeklock.a"),
            "-lcurl",
            "-lssl",
            "-lcrypto",
            "-lcjson",
            "-lpthread",
            "-o",
            out,
        )

    cbin = os.path.join(build, "c_baseline")
    cc("bench/lua/c_baseline.c", cbin)
    floor_cpath = {}
    for flavour, inc in (("5.4", "/usr/include/lua5.4"), ("jit", "/usr/include/luajit-2.1")):
        d = os.path.join(build, "floor", flavour)
        os.makedirs(d, exist_ok=True)
        cc("bench/lua/floor.c", os.path.join(d, "floor.so"), "-shared", "-fPIC", "-I" + inc)
        floor_cpath[flavour] = f"{d}/?.so;{build}/lua/{flavour}/?.so;;"

    emu = Emulator.start("--queue", ENTITY)
    pin_server(emu.proc.pid)
    pin_client()  # before nginx and the served runtimes start: they inherit this
    print("cpus:", describe())
    conn = emu.connection_string
    ngx = None
    served = []
    try:
        ngx = Nginx(ROOT, build, conn, template="bench/lua/nginx.conf.in")

        def openresty(mode, k):
            url = f"http://127.0.0.1:{ngx.port}/bench?mode={mode}&entity={ENTITY}&n={k}"
            with urllib.request.urlopen(url, timeout=600) as r:
                ops, cpu = r.read().decode().split()
            return int(ops), float(cpu)

        c = Served([cbin, "serve", conn, ENTITY])
        l54 = Served(["lua5.4", BENCH_LUA, "serve", conn, ENTITY], env=lua_env(build, "5.4"))
        jit = Served(["luajit", BENCH_LUA, "serve", conn, ENTITY], env=lua_env(build, "jit"))
        # the floors (bench/lua/floor.c): net only, the same Lua arguments and calls, no message object
        f54 = Served(
            ["lua5.4", BENCH_LUA, "serve-floor", conn, ENTITY],
            env=dict(lua_env(build, "5.4"), LUA_CPATH=floor_cpath["5.4"]),
        )
        fjit = Served(
            ["luajit", BENCH_LUA, "serve-floor", conn, ENTITY],
            env=dict(lua_env(build, "jit"), LUA_CPATH=floor_cpath["jit"]),
        )
        served = [("C core", c), ("Lua 5.4", l54), ("LuaJIT", jit), ("5.4 floor", f54), ("JIT floor", fjit)]
        floors = {"Lua 5.4": "5.4 floor", "LuaJIT": "JIT floor"}
        runners = (
            [r for r in served if r[0] not in floors.values()]
            + [("OpenResty", openresty)]
            + [r for r in served if r[0] in floors.values()]
        )
        names = [n for n, _ in runners]
        # per (mode, runtime): us/op of each round
        per = {(m, n): [] for m in ("net", "wire") for n in names}
        for mode, k in (("net", a.net_k), ("wire", a.wire_k)):
            here = [(n, fn) for n, fn in runners if mode == "net" or n not in floors.values()]
            for _, fn in here:  # warm-up: connections, JIT traces, allocator
                fn(mode, k)
            order = random.Random(1)  # a fixed seed: the same orders in every run
            for r in range(a.rounds):
                # a new order each round: every runtime in every place, after every other, alike
                for name, fn in order.sample(here, len(here)):
                    ops, cpu = fn(mode, k)
                    per[(mode, name)].append(cpu / ops * 1e6)

        print(
            f"client CPU per operation: {a.rounds} interleaved rounds, medians; net: {a.net_k} x "
            f"send+peek_lock+complete against the emulator per round; wire: {a.wire_k} x build send "
            f"request + parse peek-lock response per round"
        )
        print(f"{'runtime':<11}{'net us/op':>10}{'vs C (IQR)':>24}{'wire us/op':>12}{'vs C (IQR)':>24}")
        for name in names:
            cols = []
            for mode in ("net", "wire"):
                mine, base = per[(mode, name)], per[(mode, "C core")]
                if not mine:
                    cols.append(f"{'-':>10}{'-':>24}")
                    continue
                q1, med, q3 = quartiles([x - y for x, y in zip(mine, base)])
                cols.append(f"{statistics.median(mine):>10.2f}{f'{med:+.2f} ({q1:+.2f}..{q3:+.2f})':>24}")
            print(f"{name:<11}{cols[0]}  {cols[1]}")
        for name, fl in floors.items():
            q1, med, q3 = quartiles([x - y for x, y in zip(per[("net", name)], per[("net", fl)])])
            print(f"net, {name} over its floor (peeklock's Lua layer): {med:+.2f} us/op ({q1:+.2f}..{q3:+.2f})")
        spread = {n: quartiles(per[("net", n)]) for n in names}
        print(
            "net us/op IQR per runtime (the machine's noise): "
            + ", ".join(f"{n} {q1:.1f}..{q3:.1f}" for n, (q1, _, q3) in spread.items())
        )
        # the same work in each (warm-up and every round): anything else burning CPU shows here
        for name, proc in served:
            t = proc.threads()
            print(
                f"{name}: {len(t)} thread(s), CPU s user+system per thread (whole run): "
                + ", ".join(f"{u:.2f}+{s:.2f}" for u, s in t)
            )
        print("target: at most +10 us/op above C (printed, not asserted)")

        if a.callgrind:
            print("user-space instructions per op under callgrind (deterministic):")
            cmds = [
                ("C core", lambda m, k: [cbin, m, conn, ENTITY, str(k)], None),
                ("Lua 5.4", lambda m, k: ["lua5.4", BENCH_LUA, m, conn, ENTITY, str(k)], lua_env(build, "5.4")),
                ("LuaJIT", lambda m, k: ["luajit", BENCH_LUA, m, conn, ENTITY, str(k)], lua_env(build, "jit")),
            ]
            res = {}
            for mode, n in (("net", 100), ("wire", 500)):
                for name, cmd_for, env in cmds:
                    res[(mode, name)] = callgrind_per_op(cmd_for, mode, n, env)
            for name, _, _ in cmds:
                print(
                    f"{name:<11}"
                    + "  ".join(
                        f"{mode} {res[(mode, name)]:>8.0f} ({res[(mode, name)] - res[(mode, 'C core')]:+.0f})"
                        for mode in ("net", "wire")
                    )
                )
    finally:
        for _, proc in served:
            proc.close()
        if ngx:
            ngx.stop()
        emu.stop()


if __name__ == "__main__":
    main()
