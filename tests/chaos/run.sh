#!/usr/bin/env bash
# CI version of the at-least-once chaos proof (about two minutes): the analyser's
# own tests, then one seeded chaos run. The last line is "chaos: N passed, M failed"
# (the proof's assertions); the exit status is non-zero when any of them failed.
# The full run (10,000 messages) is described in docs/chaos.md.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PY="${PEEKLOCK_PYTHON:-$ROOT/.venv/bin/python}"
cd "$ROOT"
if ! "$PY" -m pytest -q -p no:cacheprovider tests/chaos/test_analyse.py; then
  echo "chaos: the analyser's own tests failed; the proof cannot be trusted"
  echo "chaos: 0 passed, 1 failed"
  exit 1
fi
exec "$PY" tests/chaos/chaos.py --messages 800 --workers 4 --concurrency 8 --lock-duration 5 \
  --kill-interval 2.5 --emulator-restarts 2 --restart-downtime 1,7 --duration 150 \
  --seed "${CHAOS_SEED:-7}" --poll-interval 1 "$@"
