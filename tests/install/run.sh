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
CACHE=${PEEKLOCK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/peeklock}
cleanup() { # unmount in reverse order, then remove the scratch directory
  local i
  for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do umount "${MOUNTS[i]}" 2>/dev/null || umount -l "${MOUNTS[i]}" || true; done
  MOUNTS=()
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

# --- 3. the sdist builds and installs (with the emulator extra) in a fresh venv
sdist_install() {
  local t0 t1
  "$PY" -m build --sdist -o "$WORK/sdist" . >"$WORK/sdist.log" 2>&1 || { tail -20 "$WORK/sdist.log"; return 1; }
  local sdist; sdist=$(ls "$WORK"/sdist/peeklock-*.tar.gz)
  # what a build from the sdist needs is in it
  local list; list=$(tar -tzf "$sdist")
  grep -q '/csrc/client.c$' <<<"$list" && grep -q '/bindings/python.i$' <<<"$list" &&
    grep -q '/LICENSE$' <<<"$list" || { echo "sdist lacks sources"; return 1; }
  "$PY" -m venv "$WORK/sdist-venv"
  t0=$(date +%s.%N)
  "$WORK/sdist-venv/bin/pip" install -q "$sdist[emulator]" >>"$WORK/sdist.log" 2>&1 ||
    { tail -20 "$WORK/sdist.log"; return 1; }
  t1=$(date +%s.%N)
  SOURCE_SECONDS=$(echo "$t1 - $t0" | bc)
  echo "pip install of the sdist (a build from source, with the emulator extra): ${SOURCE_SECONDS} s"
  (cd / && "$WORK/sdist-venv/bin/python" "$ROOT/tests/install/roundtrip.py" plain)
}
SOURCE_SECONDS=?
run "sdist builds and installs in a fresh venv" sdist_install

# --- 4. the portable wheel in a bare Debian root (debootstrap minbase: python3, python3-venv)
. "$ROOT/scripts/lib/debian.sh"
if [ "$(id -u)" != 0 ] || ! command -v debootstrap >/dev/null; then
  echo "install: not root or no debootstrap: the bare-root checks are skipped"
  echo "install: $passed passed, $failed failed"
  [ "$failed" = 0 ]; exit
fi

WHEELDIR=$WORK/wheel
build_wheel() {
  local whl tag so
  bash scripts/wheel.sh "$WHEELDIR" | tail -3 &&
    whl=$(ls "$WHEELDIR"/peeklock-*manylinux_*_x86_64.whl) &&
    # auditwheel finds the wheel consistent with the glibc it was built for (or an older one)
    tag=$("$(dirname "$PY")/auditwheel" show "$whl" | tr -s ' \n' ' ' |
      grep -oP 'following platform tag: "manylinux_2_\K[0-9]+(?=_x86_64")') && [ "$tag" -le "$GLIBC_MINOR" ] &&
    echo "auditwheel show: consistent with manylinux_2_${tag}_x86_64" &&
    echo "wheel: $(basename "$whl"), $(du -k "$whl" | cut -f1) KiB; contents:" &&
    "$PY" -m zipfile -l "$whl" | awk 'NR > 1 {print "  " $1, $NF}' &&
    # everything the extension needs besides glibc is inside it
    "$PY" -m zipfile -e "$whl" "$WORK/whl-x" && so=$(ls "$WORK"/whl-x/peeklock/_core*.so) &&
    ! readelf -d "$so" | grep NEEDED | grep -v -E '\[(libc|libpthread|libdl|libm|librt|ld-linux-x86-64)\.so' &&
    echo "  _core NEEDED: $(readelf -d "$so" | awk '/NEEDED/ {print $NF}' | tr -d '[]' | tr '\n' ' ')"
}
GLIBC_MINOR=${PEEKLOCK_GLIBC:-2.17}; GLIBC_MINOR=${GLIBC_MINOR#2.}
run "scripts/wheel.sh: a manylinux_2_$GLIBC_MINOR wheel with libcurl, OpenSSL, cJSON inside" build_wheel

BARE=$CACHE/debian-$(debian_codename)-minbase
bare_root() { # the cached root, made by debootstrap on the first run
  [ -f "$BARE/.peeklock-ok" ] && return 0
  local mirror; mirror=$(debian_mirror "") || { echo "no Debian archive in /etc/apt/sources.list*"; return 1; }
  echo "making $BARE (debootstrap --variant=minbase from $mirror)"
  rm -rf "$BARE.tmp"; mkdir -p "$(dirname "$BARE")"
  debootstrap --variant=minbase --include=python3,python3-venv "$(debian_codename)" "$BARE.tmp" \
    "$mirror" >"$WORK/debootstrap.log" 2>&1 || { tail -20 "$WORK/debootstrap.log"; return 1; }
  rm -rf "$BARE.tmp/var/cache/apt/archives/"*.deb
  touch "$BARE.tmp/.peeklock-ok" && rm -rf "$BARE" && mv "$BARE.tmp" "$BARE"
}

M=$WORK/root
in_root() { chroot "$M" /usr/bin/env -i PATH=/opt/venv/bin:/usr/bin:/bin HOME=/root LANG=C.UTF-8 "$@"; }
# A throw-away copy of the cached root (overlayfs over it), with /proc and /dev.
enter_root() {
  mkdir -p "$WORK/upper" "$WORK/ovl-work" "$M"
  mount -t overlay overlay -o "lowerdir=$BARE,upperdir=$WORK/upper,workdir=$WORK/ovl-work" "$M" &&
    MOUNTS+=("$M") &&
    mount -t proc proc "$M/proc" && MOUNTS+=("$M/proc") &&
    mount --bind /dev "$M/dev" && MOUNTS+=("$M/dev")
}
wheel_in_bare_root() {
  local whl t0 t1 pyver
  whl=$(ls "$WHEELDIR"/peeklock-*manylinux_*_x86_64.whl) || return 1
  bare_root && enter_root || return 1
  # bare: no compiler, no libcurl, no OpenSSL headers
  in_root sh -c '! command -v cc && ! command -v gcc && ! ls /usr/lib/*/libcurl* /usr/include/openssl' \
    >/dev/null 2>&1 || { echo "the root is not bare"; return 1; }
  mkdir -p "$M/srv/wheels" && cp "$whl" "$M/srv/wheels/" && cp "$ROOT/tests/install/roundtrip.py" "$M/srv/"
  in_root python3 -m venv /opt/venv || return 1
  t0=$(date +%s.%N)
  in_root pip install -q --no-index "/srv/wheels/$(basename "$whl")" || return 1
  t1=$(date +%s.%N)
  WHEEL_SECONDS=$(echo "$t1 - $t0" | bc)
  echo "pip install of the wheel in the bare root: ${WHEEL_SECONDS} s (the sdist's build from source: ${SOURCE_SECONDS} s)"
  # without the emulator extra, the command names it
  local out; out=$(in_root peeklock emulator --queue q 2>&1) && { echo "emulator ran without aiohttp"; return 1; }
  grep -q "pip install 'peeklock\[emulator\]'" <<<"$out" || { echo "$out"; return 1; }
  # the extra, from wheels fetched here for the root's Python (the root has no network set up)
  pyver=$(in_root python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
  "$PY" -m pip download -q --only-binary=:all: --python-version "$pyver" -d "$CACHE/wheels-py$pyver" \
    'aiohttp>=3.9' 'uvloop>=0.19' >"$WORK/download.log" 2>&1 || { tail -5 "$WORK/download.log"; return 1; }
  cp "$CACHE/wheels-py$pyver"/*.whl "$M/srv/wheels/"
  in_root pip install -q --no-index --find-links /srv/wheels "peeklock[emulator]" || return 1
  in_root python /srv/roundtrip.py plain
}
run "the wheel in a bare Debian root: install, emulator, send/peek-lock/renew/complete" wheel_in_bare_root

# --- 5. TLS in the bare root: the CA bundle is found where other distributions keep it
make_certs() { # a test CA and a certificate for 127.0.0.1 it signs; another CA that signs nothing
  local d=$WORK/tls
  mkdir -p "$d"
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=peeklock test CA" \
    -keyout "$d/ca.key" -out "$d/ca.pem" 2>/dev/null &&
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=peeklock other CA" \
    -keyout "$d/other.key" -out "$d/other.pem" 2>/dev/null &&
  openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" -keyout "$d/server.key" \
    -out "$d/server.csr" 2>/dev/null &&
  printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' >"$d/ext" &&
  openssl x509 -req -in "$d/server.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" -CAcreateserial \
    -days 2 -extfile "$d/ext" -out "$d/server.pem" 2>/dev/null &&
  mkdir -p "$M/srv/tls" && cp "$d/server.pem" "$d/server.key" "$d/ca.pem" "$d/other.pem" "$M/srv/tls/"
}
clear_bundles() {
  rm -f "$M/etc/ssl/certs/ca-certificates.crt" "$M/etc/pki/tls/certs/ca-bundle.crt" "$M/etc/ssl/cert.pem"
}
place_ca() { # path in the root, CA file
  mkdir -p "$(dirname "$M$1")" && cp "$2" "$M$1"
}
tls() { in_root python /srv/roundtrip.py "$@"; }
tls_cert_file() { in_root SSL_CERT_FILE="$1" python /srv/roundtrip.py "${@:2}"; }
TLS=(/srv/tls/server.pem /srv/tls/server.key)
tls_in_bare_root() {
  [ -x "$M/opt/venv/bin/peeklock" ] || { echo "no wheel installed in the root"; return 1; }
  make_certs || return 1
  clear_bundles
  tls tls-fails "${TLS[@]}" || return 1                                         # no CA anywhere
  place_ca /etc/pki/tls/certs/ca-bundle.crt "$WORK/tls/ca.pem"; tls tls "${TLS[@]}" || return 1  # RHEL, Fedora
  clear_bundles; place_ca /etc/ssl/cert.pem "$WORK/tls/ca.pem"; tls tls "${TLS[@]}" || return 1   # Alpine
  clear_bundles; place_ca /etc/ssl/certs/ca-certificates.crt "$WORK/tls/ca.pem"                   # Debian
  tls tls "${TLS[@]}" || return 1
  # $SSL_CERT_FILE, with no bundle in any of the places
  clear_bundles; tls_cert_file /srv/tls/ca.pem tls "${TLS[@]}" || return 1
  # ca_file still overrides: the test CA from elsewhere with no system bundle, and another CA
  # in place of a system bundle that would have trusted the endpoint
  clear_bundles; tls tls "${TLS[@]}" /srv/tls/ca.pem || return 1
  place_ca /etc/pki/tls/certs/ca-bundle.crt "$WORK/tls/ca.pem"; tls tls-fails "${TLS[@]}" /srv/tls/other.pem
}
run "TLS in the bare root: CA bundle on the RHEL, Alpine and Debian layouts, SSL_CERT_FILE; ca_file overrides" tls_in_bare_root

echo "install: $passed passed, $failed failed"
[ "$failed" = 0 ]
