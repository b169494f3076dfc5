#!/usr/bin/env bash
# Sets everything up and runs the whole test suite: C (ctest, plain and under
# sanitizers), Python (pytest against the emulator), Lua (busted) and nginx, and
# the at-least-once chaos proof (short version), and installation (tests/install).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
bash scripts/setup.sh

passed=0
failed=0
for suite in tests/lint/run.sh tests/python/run.sh tests/c/run.sh tests/lua/run.sh tests/chaos/run.sh tests/install/run.sh; do
  echo "=== $suite"
  if bash "$suite"; then
    passed=$((passed + 1))
  else
    echo "FAILED: $suite"
    failed=$((failed + 1))
  fi
done
echo "suites: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
