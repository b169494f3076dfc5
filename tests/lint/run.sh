#!/usr/bin/env bash
# Linters and formatters, in check mode: ruff (Python lint and format), luacheck (Lua),
# clang-format (C style, .clang-format), mypy --strict over the package (run by the
# Python suite) . Installed by scripts/setup.sh (scripts/deps/*.apt, *.pip).
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
passed=0
failed=0
check() {
  local name=$1
  shift
  if "$@"; then
    echo "lint: $name ok"
    passed=$((passed + 1))
  else
    echo "lint: $name FAILED"
    failed=$((failed + 1))
  fi
}
check ruff .venv/bin/ruff check --no-cache python tests bench examples
check ruff-format .venv/bin/ruff format --check --no-cache python tests bench examples
check luacheck luacheck --no-color -q lua tests/lua tests/nginx bench/lua $(ls -d examples/openresty 2>/dev/null)
c_files=$(git ls-files '*.c' '*.h' | grep -v '^tests/fuzz/corpus/')
check clang-format clang-format --dry-run --Werror $c_files
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
