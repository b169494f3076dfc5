"""OpenResty client CPU per operation with peeklock.metrics off and on.

    .venv/bin/python bench/lua/metrics.py [--rounds 400]

Builds the LuaJIT module (build/lua), starts the emulator and two nginx (bench/lua/nginx.conf.in,
the second with a lua_shared_dict and peeklock.metrics.init in init_worker), and runs rounds of
send+peek_lock+complete (bench.lua's net mode, 20 x 3 ops) on each in turn; prints the medians
and the median of the per-round differences with its interquartile range.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "python"))
sys.path.insert(0, os.path.join(ROOT, "tests", "nginx"))
from peeklock.testing import Emulator  # noqa: E402
from test_nginx import Nginx  # noqa: E402

ENTITY = "bench"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=400)
    ap.add_argument("--build", default=os.path.join(ROOT, "build", "lua"))
    a = ap.parse_args()
    subprocess.run(
        ["cmake", "-S", ROOT, "-B", a.build, "-DCMAKE_BUILD_TYPE=Release", "-DPEEKLOCK_LUA=ON", "-DPEEKLOCK_TESTS=OFF"],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    subprocess.run(
        ["cmake", "--build", a.build, "--target", "peeklock_lua", "-j2"], check=True, stdout=subprocess.DEVNULL
    )
    with open(os.path.join(ROOT, "bench/lua/nginx.conf.in")) as f:
        conf = f.read()
    tmp = tempfile.mkdtemp(prefix="peeklock-metrics-bench-")
    on_conf = os.path.join(tmp, "on.conf.in")
    with open(on_conf, "w") as f:
        f.write(
            conf.replace(
                "  server {",
                "  lua_shared_dict peeklock_metrics 1m;\n"
                '  init_worker_by_lua_block { require("peeklock.metrics").init("peeklock_metrics") }\n'
                "  server {",
                1,
            )
        )
    emu = Emulator.start("--queue", ENTITY)
    off = on = None
    try:
        off = Nginx(ROOT, a.build, emu.connection_string, template="bench/lua/nginx.conf.in")
        on = Nginx(ROOT, a.build, emu.connection_string, template=on_conf)

        def rnd(ngx, k=20):
            url = f"http://127.0.0.1:{ngx.port}/bench?mode=net&entity={ENTITY}&n={k}"
            with urllib.request.urlopen(url, timeout=600) as r:
                ops, cpu = r.read().decode().split()
            return float(cpu) / int(ops) * 1e6

        rnd(off), rnd(on)  # warm-up: connections, traces
        offs, ons = [], []
        for i in range(a.rounds):  # alternating which goes first
            if i % 2:
                offs.append(rnd(off))
                ons.append(rnd(on))
            else:
                ons.append(rnd(on))
                offs.append(rnd(off))
        d = [y - x for x, y in zip(offs, ons)]
        q1, _, q3 = statistics.quantiles(d, n=4)
        print(
            f"OpenResty send+peek_lock+complete, client CPU per op, {a.rounds} rounds: metrics off "
            f"{statistics.median(offs):.2f} us, on {statistics.median(ons):.2f} us; on - off median "
            f"{statistics.median(d):+.2f} us ({q1:+.2f}..{q3:+.2f})"
        )
    finally:
        for n in (off, on):
            if n:
                n.stop()
        emu.stop()
        os.unlink(on_conf)
        os.rmdir(tmp)


if __name__ == "__main__":
    main()
