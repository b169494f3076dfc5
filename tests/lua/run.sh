#!/usr/bin/env bash
# Lua suites: builds peeklock/core.so for Lua 5.4 and LuaJIT, runs the busted specs
# under both against the emulator (and under ASan+UBSan on 5.4), a short GC loop under
# valgrind, the rock (luarocks make for both, pack and install of the release tarball),
# then the nginx test.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
BUILD=${PEEKLOCK_LUA_BUILD:-$ROOT/build/lua}
PY=${PEEKLOCK_PYTHON:-$ROOT/.venv/bin/python}
[ -x "$PY" ] || PY=python3
export PEEKLOCK_ROOT=$ROOT PEEKLOCK_PYTHON=$PY

cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPEEKLOCK_LUA=ON \
  -DPEEKLOCK_TESTS=OFF >/dev/null
cmake --build "$BUILD" --target peeklock_lua -j2 >/dev/null

passed=0; failed=0
run() { # name, command...
  local name=$1; shift
  echo "--- $name"
  if "$@"; then passed=$((passed + 1)); else failed=$((failed + 1)); echo "FAILED: $name"; fi
}

lua_env() { # flavour (5.4|jit), interpreter, command...
  local flavour=$1 interp=$2; shift 2
  env LUA_PATH="$ROOT/lua/?.lua;$ROOT/lua/?/init.lua;$ROOT/tests/lua/?.lua;;" \
      LUA_CPATH="$BUILD/lua/$flavour/?.so;;" PEEKLOCK_LUA_INTERP="$interp" "$@"
}

run "busted (Lua 5.4)" lua_env 5.4 lua5.4 lua5.4 /usr/bin/busted -o utfTerminal tests/lua
run "busted (LuaJIT)" lua_env jit luajit luajit /usr/bin/busted -o utfTerminal tests/lua
# The modules export their entry point only (the core linked in stays local to them).
exports_only_luaopen() {
  local f out
  for f in "$BUILD"/lua/5.4/peeklock/core.so "$BUILD"/lua/jit/peeklock/core.so; do
    out=$(nm -D --defined-only "$f" | awk '{print $3}')
    [ "$out" = luaopen_peeklock_core ] || { echo "$f exports: $out" | head -5; return 1; }
  done
  echo "exports: luaopen_peeklock_core only"
}
run "module exports" exports_only_luaopen
# The Lua glue (bindings/lua/*.c, bindings/lua.i) and the core under ASan+UBSan, driven by the Lua 5.4 specs.
asan_specs() {
  local abuild="$BUILD-asan"
  cmake -S "$ROOT" -B "$abuild" -DCMAKE_BUILD_TYPE=Debug -DPEEKLOCK_LUA=ON -DPEEKLOCK_TESTS=OFF \
    -DPEEKLOCK_SANITIZE=ON >/dev/null && cmake --build "$abuild" --target peeklock_lua -j2 >/dev/null &&
  env ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
      LD_PRELOAD="$(cc -print-file-name=libasan.so) $(cc -print-file-name=libubsan.so)" \
      LUA_PATH="$ROOT/lua/?.lua;$ROOT/lua/?/init.lua;$ROOT/tests/lua/?.lua;;" \
      LUA_CPATH="$abuild/lua/5.4/?.so;;" PEEKLOCK_LUA_INTERP=lua5.4 \
      lua5.4 /usr/bin/busted -o utfTerminal tests/lua
}
if [ "${PEEKLOCK_LUA_ASAN:-1}" = 1 ]; then
  run "busted under ASan+UBSan (Lua 5.4)" asan_specs
fi
if command -v valgrind >/dev/null; then
  run "GC loop under valgrind (Lua 5.4)" lua_env 5.4 lua5.4 valgrind -q --error-exitcode=9 \
    --leak-check=full --errors-for-leak-kinds=definite --show-leak-kinds=definite \
    lua5.4 tests/lua/gc_loop.lua 8
else
  echo "valgrind not installed: GC loop without it"
  run "GC loop (Lua 5.4)" lua_env 5.4 lua5.4 lua5.4 tests/lua/gc_loop.lua 25
fi
run "GC loop (LuaJIT)" lua_env jit luajit luajit tests/lua/gc_loop.lua 25
# The rock: a bare `luarocks make` at the repository root into a fresh tree, for Lua 5.4 and
# for LuaJIT (luarocks' Lua 5.1, LuaJIT's headers), then `require` from that tree.
rock_check() { # flavour (5.4|jit)
  local tree lv interp args=()
  tree=$(mktemp -d)
  case $1 in
    5.4) lv=5.4 interp=lua5.4 ;;
    jit) lv=5.1 interp=luajit args=(LUA_INCDIR=/usr/include/luajit-2.1) ;;
  esac
  rm -rf "$ROOT/build.luarocks"
  luarocks --lua-version "$lv" --tree "$tree" make "${args[@]}" >"$tree/log" 2>&1 &&
    env TREE="$tree" LUA_PATH="$tree/share/lua/$lv/?.lua;;" LUA_CPATH="$tree/lib/lua/$lv/?.so;;" \
      "$interp" -e 'local p = require "peeklock"; assert(p.version == "0.1.0")
                    assert(package.searchpath("peeklock.core", package.cpath):find(os.getenv("TREE"), 1, true))
                    assert(package.searchpath("peeklock.metrics", package.path):find(os.getenv("TREE"), 1, true))' \
      || { tail -20 "$tree/log"; rm -rf "$tree" "$ROOT/build.luarocks"; return 1; }
  rm -rf "$tree" "$ROOT/build.luarocks"
}
# What a release does: the tarball (scripts/release-tarball.sh), `luarocks pack` of the
# rockspec (its source.url pointed at that file here) into a source rock, and an install of
# that rock into a fresh tree that runs no swig (the tarball carries the generated wrapper).
rock_pack() {
  local dir tarball
  dir=$(mktemp -d)
  tarball=$(bash scripts/release-tarball.sh "$dir") &&
    sed "s|^  url = .*|  url = \"file://$tarball\",|" peeklock-0.1.0-1.rockspec >"$dir/peeklock-0.1.0-1.rockspec" &&
    (cd "$dir" && luarocks --lua-version 5.4 pack peeklock-0.1.0-1.rockspec >"$dir/log" 2>&1) &&
    [ -f "$dir/peeklock-0.1.0-1.src.rock" ] &&
    (cd "$dir" && luarocks --lua-version 5.4 --tree "$dir/tree" install \
      peeklock-0.1.0-1.src.rock >>"$dir/log" 2>&1) &&
    ! grep -q "SWIG: Lua wrapper" "$dir/log" &&
    env LUA_PATH="$dir/tree/share/lua/5.4/?.lua;;" LUA_CPATH="$dir/tree/lib/lua/5.4/?.so;;" \
      lua5.4 -e 'assert(require("peeklock").version == "0.1.0")' &&
    (cd "$dir" && luarocks --lua-version 5.4 --tree "$dir/tree" pack peeklock >>"$dir/log" 2>&1) &&
    ls "$dir"/peeklock-0.1.0-1.*.rock ||
    { tail -20 "$dir/log"; rm -rf "$dir"; return 1; }
  rm -rf "$dir"
}
# external_dependencies: CURL_DIR= / CJSON_DIR= reach CMake (here copies of the system's
# libcurl and cJSON in another prefix are what the build links), and a library missing where
# it was pointed at stops luarocks with its name.
rock_overrides() {
  local t out libcurl
  t=$(mktemp -d)
  libcurl=$(pkg-config --variable=libdir libcurl)
  mkdir -p "$t/curl/include" "$t/curl/lib" "$t/cjson/include" "$t/cjson/lib"
  cp -r "$(pkg-config --variable=includedir libcurl)/curl" "$t/curl/include/" 2>/dev/null ||
    cp -r /usr/include/*/curl "$t/curl/include/"
  cp -a "$libcurl"/libcurl.so* "$t/curl/lib/"
  cp -r "$(pkg-config --variable=includedir libcjson)/cjson" "$t/cjson/include/"
  cp -a "$(pkg-config --variable=libdir libcjson)"/libcjson.so* "$t/cjson/lib/"
  rm -rf "$ROOT/build.luarocks"
  luarocks --lua-version 5.4 --tree "$t/tree" make CURL_DIR="$t/curl" CJSON_DIR="$t/cjson" >"$t/log" 2>&1 &&
    grep -q "^CURL_LIBRARY_RELEASE:FILEPATH=$t/curl/lib/libcurl.so\$" "$ROOT/build.luarocks/CMakeCache.txt" &&
    grep -q "^CJSON_LIBRARY:FILEPATH=$t/cjson/lib/libcjson.so\$" "$ROOT/build.luarocks/CMakeCache.txt" ||
    { tail -20 "$t/log"; grep -E '^(CURL|CJSON)_' "$ROOT/build.luarocks/CMakeCache.txt"; rm -rf "$t" "$ROOT/build.luarocks"; return 1; }
  rm -rf "$ROOT/build.luarocks"
  out=$(luarocks --lua-version 5.4 --tree "$t/tree" make CJSON_DIR="$t/none" 2>&1) && { rm -rf "$t"; return 1; }
  rm -rf "$t" "$ROOT/build.luarocks"
  grep -q "Could not find header file for CJSON" <<<"$out" || { echo "$out" | tail -5; return 1; }
}
if command -v luarocks >/dev/null; then
  run "luarocks make at the root (Lua 5.4)" rock_check 5.4
  run "luarocks make at the root (LuaJIT)" rock_check jit
  run "release tarball, luarocks pack, install with no swig run" rock_pack
  run "luarocks CURL_DIR= / CJSON_DIR= reach the build" rock_overrides
fi
run "nginx + lua module" env PEEKLOCK_LUA_BUILD="$BUILD" bash tests/nginx/run.sh

echo "lua: $passed passed, $failed failed"
[ "$failed" = 0 ]
