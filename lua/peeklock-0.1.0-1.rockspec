-- luarocks make lua/peeklock-0.1.0-1.rockspec   (from the repository root)
-- Builds peeklock.core (SWIG + the C core, linked statically) with CMake against the
-- system's libcurl, OpenSSL and cJSON, and installs peeklock.lua and peeklock/resty.lua.
-- Needs: cmake, swig, a C compiler, libcurl4-openssl-dev, libssl-dev, libcjson-dev.
rockspec_format = "3.0"
package = "peeklock"
version = "0.1.0-1"
source = {
  url = "git+file:///peeklock",   -- not fetched by `luarocks make`, which builds the checkout
}
description = {
  summary = "Azure Service Bus REST message locks (peek-lock, renew, complete) for Lua and OpenResty",
  detailed = [[
    Peek-lock, renew, abandon and complete Service Bus messages over the REST API, with
    background lock renewal in C (client:with_lock), Lua 5.4 <close> support, and
    peeklock.resty for OpenResty handlers that must not block the nginx worker.
  ]],
  license = "MIT",
}
dependencies = {
  "lua >= 5.1",
}
build = {
  type = "cmake",
  variables = {
    CMAKE_BUILD_TYPE = "Release",
    PEEKLOCK_LUA = "ON",
    PEEKLOCK_TESTS = "OFF",
    PEEKLOCK_LUA_INCDIR = "$(LUA_INCDIR)",
  },
  -- CMake builds the module; luarocks installs just these files (not the C library).
  install_pass = false,
  install = {
    lib = { ["peeklock.core"] = "build.luarocks/lua/rock/peeklock/core.so" },
    lua = { ["peeklock"] = "lua/peeklock.lua", ["peeklock.resty"] = "lua/peeklock/resty.lua" },
  },
}
