#!/usr/bin/env bash
# Python suites: the emulator (pure Python, no extension needed), then the package.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
PY="$ROOT/.venv/bin/python"

# 1. Emulator and protocol-fidelity suites, from the source tree.
PYTHONPATH="$ROOT/python" "$PY" -m pytest -q -p no:cacheprovider tests/python/emulator

# 2. The package: build and install it into .venv (C core + SWIG extension via
#    scikit-build-core), then its suite against the emulator, mypy over the stubs,
#    the notebook and the console script included. Run from tests/python so the
#    installed package (not the source tree) is imported.
SKBUILD_BUILD_DIR="$ROOT/build/py/{wheel_tag}" "$PY" -m pip install -q ".[test]"
(cd "$ROOT/tests/python" && "$PY" -m pytest -q -p no:cacheprovider test_*.py)
