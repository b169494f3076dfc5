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
cmake --build "$B" --target bench_c -j "$(nproc)" >/dev/null

# nginx as the null responder (canned replies, bench/null_responder.py), and the emulator.
# The servers run on the last CPU and the benchmark on the others (bench/cpus.py says why);
# PEEKLOCK_BENCH_PIN=0, or a single CPU, runs everything unpinned.
SERVER=() CLIENT=()
LAST=$(( $(nproc) - 1 ))
if [ "${PEEKLOCK_BENCH_PIN:-1}" != 0 ] && [ "$LAST" -ge 1 ] && command -v taskset >/dev/null; then
  SERVER=(taskset -c "$LAST") CLIENT=(taskset -c "0-$(( LAST - 1 ))")
  echo "cpus: clients on CPU 0-$(( LAST - 1 )), servers under test on CPU $LAST (PEEKLOCK_BENCH_PIN=0 turns this off)"
else
  echo "cpus: not pinned"
fi
PEEKLOCK_EMULATOR_ARGS="--queue bq" "${SERVER[@]}" "$PY" bench/null_responder.py --dir "$B/nginx" -- \
  "${SERVER[@]}" "$PY" tests/c/with_emulator.py "${CLIENT[@]}" "$B/bench/c/bench_c" --null "{url}" --emulator "$@"
