#!/usr/bin/env bash
# The C suite: (1) configure + build + ctest (unit, integration against the
# emulator, fuzz-corpus replay); (2) the same under AddressSanitizer +
# UndefinedBehaviorSanitizer; (3) the threaded tests under ThreadSanitizer.
# Build trees live in build/c, build/c-asan and build/c-tsan.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
JOBS=$(nproc 2>/dev/null || echo 2)
PYOPT=()
if [ -x "$ROOT/.venv/bin/python" ]; then
  PYOPT=(-DPython3_EXECUTABLE="$ROOT/.venv/bin/python")
fi

echo "--- C: build + ctest"
cmake -S . -B build/c -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPEEKLOCK_TESTS=ON "${PYOPT[@]}" >/dev/null
cmake --build build/c -j "$JOBS"
ctest --test-dir build/c --output-on-failure -j 2

echo "--- C: ASan + UBSan"
cmake -S . -B build/c-asan -DCMAKE_BUILD_TYPE=Debug -DPEEKLOCK_TESTS=ON -DPEEKLOCK_SANITIZE=ON "${PYOPT[@]}" >/dev/null
cmake --build build/c-asan -j "$JOBS"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
  ctest --test-dir build/c-asan --output-on-failure -j 2

echo "--- C: TSan (threaded tests)"
cmake -S . -B build/c-tsan -DCMAKE_BUILD_TYPE=Debug -DPEEKLOCK_TESTS=ON -DPEEKLOCK_TSAN=ON "${PYOPT[@]}" >/dev/null
cmake --build build/c-tsan -j "$JOBS"
TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 \
  ctest --test-dir build/c-tsan --output-on-failure -R 'test_int_threads|test_renewer|test_int_aio$|test_int_log'
echo "--- C suite passed"
