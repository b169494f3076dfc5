#!/usr/bin/env bash
# Installation suite: what a new user meets when installing peeklock.
#  - a build from source without a system library stops with the Debian and Fedora
#    package to install;
#  - a read-only source tree (a container's bind mount) installs;
#  - the sdist builds and installs in a fresh venv;
#  - luarocks make / pack from the repository root (tests/lua/run.sh runs the rock too);
#  - the portable wheel (scripts/wheel.sh) installs and works in a bare Debian root
#    with nothing but python3 (tests/install/bare_root.sh).
# Needs root for the bind mounts and chroot; the checks that need it are skipped without.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
PY=${PEEKLOCK_PYTHON:-$ROOT/.venv/bin/python}
WORK=$(mktemp -d)
MOUNTS=()
cleanup() {
  local m
  for m in "${MOUNTS[@]}"; do umount -l "$m" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

passed=0; failed=0
run() { # name, command...
  local name=$1; shift
  echo "--- $name"
  if "$@"; then passed=$((passed + 1)); else failed=$((failed + 1)); echo "FAILED: $name"; fi
}

# A copy of the source tree as git would ship it (tracked and new files, no build output).
copy_tree() { # dest
  mkdir -p "$1"
  git ls-files -z --cached --others --exclude-standard | xargs -0 cp --parents -t "$1"
}

# --- 1. configure failures name the package to install
missing_message() { # label, debian pkg, fedora pkg, env/cmake args...
  local label=$1 deb=$2 fed=$3; shift 3
  local b="$WORK/cfg" out
  rm -rf "$b"
  out=$(env "$@" -S "$ROOT" -B "$b" -DPEEKLOCK_TESTS=OFF 2>&1) && {
    echo "configure succeeded without $label"; return 1; }
  grep -q "peeklock: $label" <<<"$out" && grep -q "apt-get install $deb" <<<"$out" &&
    grep -q "dnf install $fed" <<<"$out" || { echo "$out" | tail -15; return 1; }
}
run "missing libcurl names libcurl4-openssl-dev / libcurl-devel" \
  missing_message "libcurl" libcurl4-openssl-dev libcurl-devel cmake -DCMAKE_DISABLE_FIND_PACKAGE_CURL=TRUE
run "missing OpenSSL names libssl-dev / openssl-devel" \
  missing_message "OpenSSL" libssl-dev openssl-devel cmake -DCMAKE_DISABLE_FIND_PACKAGE_OpenSSL=TRUE
run "missing cJSON names libcjson-dev / cjson-devel" \
  missing_message "cJSON" libcjson-dev cjson-devel PKG_CONFIG_LIBDIR=/nonexistent cmake
run "missing Python headers name python3-dev / python3-devel" \
  missing_message "Python 3 development files" python3-dev python3-devel \
  cmake -DPEEKLOCK_PYTHON=ON -DCMAKE_DISABLE_FIND_PACKAGE_Python=TRUE
# swig: hide the usual program directories from CMake's searches (the tools the
# configure step needs besides swig are given by path).
run "missing swig names swig" \
  missing_message "swig" swig swig cmake -DPEEKLOCK_PYTHON=ON \
  "-DCMAKE_IGNORE_PATH=/usr/bin;/bin;/usr/local/bin;/usr/sbin;/sbin;/usr/local/sbin" \
  -DCMAKE_C_COMPILER="$(readlink -f "$(command -v cc)")" -DCMAKE_MAKE_PROGRAM="$(command -v make)" \
  -DPKG_CONFIG_EXECUTABLE="$(command -v pkg-config)" -DPython_EXECUTABLE="$PY"

# --- 2. a read-only source tree installs (pip builds in a temporary directory)
readonly_install() {
  local src="$WORK/ro-src" ro="$WORK/ro"
  copy_tree "$src"; mkdir -p "$ro"
  mount --bind "$src" "$ro" && MOUNTS+=("$ro") && mount -o remount,bind,ro "$ro" || return 1
  touch "$ro/probe" 2>/dev/null && { echo "bind mount is writable"; return 1; }
  "$PY" -m venv "$WORK/ro-venv" &&
    "$WORK/ro-venv/bin/pip" install -q "$ro" >"$WORK/ro.log" 2>&1 ||
    { echo "install failed"; tail -20 "$WORK/ro.log"; return 1; }
  (cd / && "$WORK/ro-venv/bin/python" -c 'import peeklock; print("installed", peeklock.__version__)')
}
run "pip install from a read-only source tree" readonly_install

echo "install: $passed passed, $failed failed"
[ "$failed" = 0 ]
