-- luacheck configuration (tests/lint/run.sh): Lua 5.4 and LuaJIT, OpenResty's ngx.
std = "max"
max_line_length = 120
ignore = { "212/self" }       -- methods that do not use self
-- OpenResty code writes ngx.ctx and ngx.header fields
files["lua/peeklock/resty.lua"] = { globals = { "ngx" } }
files["lua/peeklock/metrics.lua"] = { globals = { "ngx" } }
files["tests/nginx"] = { globals = { "ngx" } }
files["bench/lua"] = { globals = { "ngx" }, ignore = { "531" } }
files["examples/openresty"] = { globals = { "ngx" } }
-- tests drop references on purpose (x = nil before a collection) and keep long lines of data
files["tests/lua"] = { std = "+busted", ignore = { "211", "231", "311", "531" }, max_line_length = 130 }
