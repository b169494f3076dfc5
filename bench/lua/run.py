"""Client CPU per operation: C core, Lua 5.4, LuaJIT and OpenResty, in one run.

    python3 bench/lua/run.py [--n 300] [--wire-n 5000] [--repeat 3]

Builds the Lua modules and the C baseline (bench/lua/c_baseline.c), starts the
emulator and nginx (own prefix, free port), then measures process CPU time of the
client for two workloads:
  net   send + peek_lock + complete against the emulator over loopback (3 ops each)
  wire  sans-I/O: build a send request and parse a peek-lock response (2 ops each)
Best of --repeat rounds (each round runs every runtime once). Prints us/op and the difference to C; asserts nothing
(target: at most 10 us/op above C).
"""
import argparse
import os
import subprocess
import sys
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "nginx"))
from test_nginx import Emulator, Nginx  # noqa: E402


def sh(*cmd, env=None):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout


def parse(line):
    mode, ops, cpu = line.split()
    return int(ops), float(cpu)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--wire-n", type=int, default=5000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--build", default=os.path.join(ROOT, "build", "lua"))
    a = ap.parse_args()
    build = a.build
    sh("cmake", "-S", ROOT, "-B", build, "-DCMAKE_BUILD_TYPE=Release", "-DPEEKLOCK_LUA=ON",
       "-DPEEKLOCK_TESTS=OFF")
    sh("cmake", "--build", build, "--target", "peeklock_lua", "peeklock_static", "-j2")
    cbin = os.path.join(build, "c_baseline")
    sh("cc", "-std=c11", "-O2", "-Wall", "-Wextra", os.path.join(ROOT, "bench/lua/c_baseline.c"),
       "-I" + os.path.join(ROOT, "csrc/include"), os.path.join(build, "csrc/libpeeklock.a"),
       "-lcurl", "-lssl", "-lcrypto", "-lcjson", "-lpthread", "-o", cbin)

    emu = Emulator(ROOT, sys.executable)
    ngx = None
    try:
        emu.admin("PUT", "entities/bench", {"kind": "queue"})
        ngx = Nginx(ROOT, build, emu.conn, template="bench/lua/nginx.conf.in")

        def lua(flavour, interp):
            env = dict(os.environ, LUA_PATH=f"{ROOT}/lua/?.lua;{ROOT}/bench/lua/?.lua;;",
                       LUA_CPATH=f"{build}/lua/{flavour}/?.so;;")
            return lambda mode, n: parse(sh(interp, os.path.join(ROOT, "bench/lua/bench.lua"),
                                            mode, emu.conn, "bench", str(n), env=env))

        def c(mode, n):
            return parse(sh(cbin, mode, emu.conn, "bench", str(n)))

        def openresty(mode, n):
            url = f"http://127.0.0.1:{ngx.port}/bench?mode={mode}&entity=bench&n={n}"
            with urllib.request.urlopen(url, timeout=600) as r:
                return parse(r.read().decode())

        runners = [("C core", c), ("Lua 5.4", lua("5.4", "lua5.4")), ("LuaJIT", lua("jit", "luajit")),
                   ("OpenResty", openresty)]
        results = {}
        for mode, n in (("net", a.n), ("wire", a.wire_n)):
            # rounds interleave the runtimes, so a change of machine load hits them alike
            for _ in range(a.repeat):
                for name, fn in runners:
                    ops, cpu = fn(mode, n)
                    us = cpu / ops * 1e6
                    key = (mode, name)
                    results[key] = us if key not in results else min(results[key], us)
        print(f"client CPU per operation (best of {a.repeat}; net: {a.n} x send+peek_lock+complete "
              f"against the emulator; wire: {a.wire_n} x build send request + parse peek-lock response)")
        print(f"{'runtime':<12}{'net us/op':>12}{'vs C':>10}{'wire us/op':>13}{'vs C':>10}")
        for name, _ in runners:
            net, wire = results[("net", name)], results[("wire", name)]
            dn, dw = net - results[("net", "C core")], wire - results[("wire", "C core")]
            print(f"{name:<12}{net:>12.2f}{dn:>+10.2f}{wire:>13.2f}{dw:>+10.2f}")
        print("target: at most +10 us/op above C (printed, not asserted)")
    finally:
        if ngx:
            ngx.stop()
        emu.stop()


if __name__ == "__main__":
    main()
