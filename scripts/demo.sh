#!/usr/bin/env bash
# Sets everything up and runs the demo against the embedded emulator.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
bash scripts/setup.sh
# Build the C core and the Python extension and install the package into .venv.
echo "demo: building and installing the peeklock package into .venv"
.venv/bin/python -m pip install -q .
exec .venv/bin/python examples/demo.py "$@"
