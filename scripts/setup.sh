#!/usr/bin/env bash
# Installs everything peeklock needs on a fresh Debian machine: system packages
# listed in scripts/deps/*.apt and Python packages (scripts/deps/*.pip) into .venv.
# Idempotent; safe to run again.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

apt_pkgs=$(cat scripts/deps/*.apt 2>/dev/null | sed 's/#.*//' | tr -s ' \n' '\n' | sort -u | tr '\n' ' ')
missing=""
for p in $apt_pkgs; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  echo "setup: installing system packages:$missing"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

# .venv is made from the distribution's Python when it has one (Debian builds it with
# profile-guided and link-time optimization: the emulator spends ~15% less CPU per request
# on it than on an unoptimized source build; docs/emulator.md). PEEKLOCK_PYTHON overrides.
base=${PEEKLOCK_PYTHON:-}
if [ -z "$base" ]; then
  base=python3
  if [ -x /usr/bin/python3 ] && /usr/bin/python3 -c 'import ensurepip, venv' 2>/dev/null; then
    base=/usr/bin/python3
  fi
fi
want=$("$base" -c 'import sys; print(sys.base_prefix, sys.version_info[:2])')
if [ -x .venv/bin/python ] && [ "$(.venv/bin/python -c 'import sys; print(sys.base_prefix, sys.version_info[:2])' 2>/dev/null)" != "$want" ]; then
  echo "setup: .venv was made from another Python; making it again from $base"
  rm -rf .venv
fi
if [ ! -x .venv/bin/python ]; then
  "$base" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
pip_reqs=$(cat scripts/deps/*.pip 2>/dev/null | sed 's/#.*//' | tr -s ' \n' '\n' | sort -u | tr '\n' ' ')
if [ -n "$pip_reqs" ]; then
  .venv/bin/python -m pip install -q $pip_reqs
fi
echo "setup: done"
