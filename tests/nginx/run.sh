#!/usr/bin/env bash
# nginx test: Debian's nginx with lua-nginx-module, on a free port with its own prefix
# and config, serving peeklock.resty handlers against the emulator. Needs the LuaJIT
# module built (tests/lua/run.sh builds it; PEEKLOCK_LUA_BUILD points at the build).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BUILD=${PEEKLOCK_LUA_BUILD:-$ROOT/build/lua}
PY=${PEEKLOCK_PYTHON:-$ROOT/.venv/bin/python}
[ -x "$PY" ] || PY=python3
[ -f "$BUILD/lua/jit/peeklock/core.so" ] || { echo "missing $BUILD/lua/jit/peeklock/core.so (run tests/lua/run.sh)"; exit 1; }
# The hand-over checks finish locks in a Python process with the installed package (what
# tests/python/run.sh installs): install it when this runs on its own.
if ! (cd / && "$PY" -c "import peeklock._core") 2>/dev/null; then
  SKBUILD_BUILD_DIR="$ROOT/build/py/{wheel_tag}" "$PY" -m pip install -q "$ROOT"
fi
exec "$PY" "$ROOT/tests/nginx/test_nginx.py" --root "$ROOT" --build "$BUILD"
