#!/usr/bin/env bash
# Python suites: the emulator (pure Python, no extension needed), then the package.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
PY="$ROOT/.venv/bin/python"

# 1. Emulator and protocol-fidelity suites, from the source tree.
PYTHONPATH="$ROOT/python" "$PY" -m pytest -q -p no:cacheprovider tests/python/emulator
