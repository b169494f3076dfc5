-- luacheck configuration (tests/lint/run.sh): Lua 5.4 and LuaJIT, OpenResty's ngx.
std = "max"
max_line_length = 120
files["lua/peeklock/resty.lua"] = { read_globals = { "ngx" } }
files["tests/nginx"] = { globals = { "ngx" } }
files["bench/lua"] = { read_globals = { "ngx" } }
files["examples/openresty"] = { read_globals = { "ngx" } }
files["tests/lua"] = { std = "+busted" }
