#!/usr/bin/env bash
# Sets everything up and runs the demo against the embedded emulator.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
bash scripts/setup.sh
exec .venv/bin/python examples/demo.py "$@"
