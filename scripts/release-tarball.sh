#!/usr/bin/env bash
# Makes the release tarball the rockspec's source.url names:
#
#   bash scripts/release-tarball.sh [OUTDIR]      # default: dist/ -> dist/peeklock-VERSION.tar.gz
#
# The committed tree (git archive of HEAD, under peeklock-VERSION/) plus the SWIG wrapper
# for Lua generated into bindings/generated/, so `luarocks install` needs no swig. Upload
# it as the release's asset; `luarocks pack peeklock-VERSION-1.rockspec` then makes the
# source rock from it.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
OUT=$(mkdir -p "${1:-$ROOT/dist}" && cd "${1:-$ROOT/dist}" && pwd)
VERSION=$(sed -n 's/^project(peeklock VERSION \([0-9.]*\).*/\1/p' CMakeLists.txt)
NAME=peeklock-$VERSION
STAGE=$(mktemp -d)
trap 'rm -rf "$STAGE"' EXIT

git archive --format=tar --prefix="$NAME/" HEAD | tar -x -C "$STAGE"
mkdir -p "$STAGE/$NAME/bindings/generated"
swig -lua -nomoduleglobal -module peeklock_core -I"$STAGE/$NAME/bindings" -I"$STAGE/$NAME/csrc/include" \
  -o "$STAGE/$NAME/bindings/generated/peeklock_lua_wrap.c" "$STAGE/$NAME/bindings/lua.i"
# Reproducible: fixed owner, order and times (the commit's).
mtime=$(git log -1 --format=%ct HEAD)
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$mtime" -C "$STAGE" -cf - "$NAME" |
  gzip -n -9 >"$OUT/$NAME.tar.gz"
echo "$OUT/$NAME.tar.gz"
