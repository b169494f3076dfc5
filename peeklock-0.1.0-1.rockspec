-- luarocks make                      (from the repository root; Lua 5.4)
-- luarocks --lua-version 5.1 make LUA_INCDIR=/usr/include/luajit-2.1      (LuaJIT)
-- Builds peeklock.core (the C core linked statically, plus its SWIG wrapper) with CMake
-- against the system's libcurl, OpenSSL and cJSON, and installs peeklock.lua, peeklock/resty.lua,
-- peeklock/metrics.lua and peeklock/internal.lua (private: what the first two share). Needs cmake
-- and a C compiler; swig too, except from the release tarball (scripts/release-tarball.sh), which
-- carries the generated wrapper.
-- CURL_DIR=, OPENSSL_DIR=, CJSON_DIR= (or *_INCDIR= / *_LIBDIR=) point at other copies.
rockspec_format = "3.0"
package = "peeklock"
version = "0.1.0-1"
source = {
  -- made by scripts/release-tarball.sh (dist/peeklock-0.1.0.tar.gz)
  url = "https://github.com/peeklock/peeklock/releases/download/v0.1.0/peeklock-0.1.0.tar.gz",
  dir = "peeklock-0.1.0",
}
description = {
  summary = "Azure Service Bus REST message locks (peek-lock, renew, complete) for Lua and OpenResty",
  detailed = [[
    Peek-lock, renew, abandon and complete Service Bus messages over the REST API, with
    background lock renewal in C (client:with_lock), Lua 5.4 <close> support, and
    peeklock.resty for OpenResty handlers that must not block the nginx worker.
  ]],
  homepage = "https://github.com/peeklock/peeklock",
  license = "MIT",
}
dependencies = {
  "lua >= 5.1",
}
external_dependencies = {
  -- Debian keeps curl/curl.h under include/<multiarch>/: the library is what is checked
  CURL = { library = "curl" },
  OPENSSL = { header = "openssl/evp.h", library = "crypto" },
  CJSON = { header = "cjson/cJSON.h", library = "cjson" },
}
build = {
  type = "cmake",
  variables = {
    CMAKE_BUILD_TYPE = "Release",
    PEEKLOCK_LUA = "ON",
    PEEKLOCK_TESTS = "OFF",
    PEEKLOCK_LUA_INCDIR = "$(LUA_INCDIR)",
    -- where luarocks found the libraries (or was told: CURL_DIR=..., *_INCDIR=, *_LIBDIR=);
    -- CMake searches there before the system's places
    CURL_ROOT = "$(CURL_DIR)",
    OPENSSL_ROOT_DIR = "$(OPENSSL_DIR)",
    CJSON_INCLUDE_DIR = "$(CJSON_INCDIR)",
    CJSON_LIBRARY_DIR = "$(CJSON_LIBDIR)",
    PEEKLOCK_INCLUDE_PATH = "$(CURL_INCDIR);$(OPENSSL_INCDIR)",
    PEEKLOCK_LIBRARY_PATH = "$(CURL_LIBDIR);$(OPENSSL_LIBDIR)",
  },
  -- CMake builds the module; luarocks installs just these files (not the C library).
  install_pass = false,
  install = {
    lib = { ["peeklock.core"] = "build.luarocks/lua/rock/peeklock/core.so" },
    lua = { ["peeklock"] = "lua/peeklock.lua", ["peeklock.resty"] = "lua/peeklock/resty.lua",
            ["peeklock.metrics"] = "lua/peeklock/metrics.lua",
            ["peeklock.internal"] = "lua/peeklock/internal.lua" },
  },
}
