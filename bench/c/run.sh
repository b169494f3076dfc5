#!/usr/bin/env bash
# Builds and runs the C benchmark: peeklock vs raw libcurl against an nginx null
# responder (canned Service Bus replies, configured under build/bench) and
# against the emulator. Usage: bench/c/run.sh [-n N] [-m M] [-r ROUNDS]
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
B="$ROOT/build/bench"
PY=python3
[ -x "$ROOT/.venv/bin/python" ] && PY="$ROOT/.venv/bin/python"
cmake -S . -B "$B" -DCMAKE_BUILD_TYPE=Release -DPEEKLOCK_BENCH=ON -DPEEKLOCK_TESTS=OFF >/dev/null
cmake --build "$B" --target bench_c aio_loop -j "$(nproc)" >/dev/null

# nginx as the null responder (canned replies, bench/null_responder.py), and the emulator.
# The servers run on the last CPU and the benchmark on the others (bench/cpus.py says why);
# PEEKLOCK_BENCH_PIN=0, or a single CPU, runs everything unpinned.
SERVER=() CLIENT=()
read -r client_cpus server_cpus < <("$PY" bench/cpus.py) || true
if [ -n "${server_cpus:-}" ] && command -v taskset >/dev/null; then
  SERVER=(taskset -c "$server_cpus") CLIENT=(taskset -c "$client_cpus")
fi
echo "cpus: $("$PY" bench/cpus.py --describe)"
PEEKLOCK_EMULATOR_ARGS="--queue bq" "${SERVER[@]}" "$PY" bench/null_responder.py --dir "$B/nginx" -- \
  "${SERVER[@]}" "$PY" tests/c/with_emulator.py "${CLIENT[@]}" "$B/bench/c/bench_c" --null "{url}" --emulator "$@"
