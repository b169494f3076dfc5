-- Test helpers: start the emulator on a free port, talk to its /$admin/ controls.
-- Used by the busted specs (Lua 5.4 and LuaJIT) and the nginx test.
local http = require "socket.http"
local ltn12 = require "ltn12"
local json = require "dkjson"

local H = {}

local ROOT = os.getenv("PEEKLOCK_ROOT") or "."
local PYTHON = os.getenv("PEEKLOCK_PYTHON") or "python3"

-- Starts `python -m peeklock.emulator --port 0 <args>`; returns an emulator object.
function H.start_emulator(args)
  local argv = { "--port", "0" }
  for _, a in ipairs(args or {}) do argv[#argv + 1] = a end
  local quoted = {}
  for i, a in ipairs(argv) do quoted[i] = "'" .. a:gsub("'", "'\\''") .. "'" end
  -- popen's own shell prints its pid, then becomes the emulator (exec): stop() kills that
  -- pid. (Wrapped in a second sh -c, $$ was the outer shell's, and each emulator outlived
  -- its test.)
  local cmd = ("cd '%s' && echo $$ && PYTHONPATH='%s/python' exec %s -m peeklock.emulator %s 2>&1")
    :format(ROOT, ROOT, PYTHON, table.concat(quoted, " "))
  local p = assert(io.popen(cmd, "r"))
  local pid = assert(tonumber(p:read("*l")), "emulator: no pid")
  local conn
  local seen = {}
  for _ = 1, 200 do
    local line = p:read("*l")
    if not line then break end
    seen[#seen + 1] = line
    local rest = line:match("ready: (.*)$")
    if rest then conn = rest; break end
  end
  if not conn then
    os.execute("kill " .. pid .. " 2>/dev/null")
    p:close()
    error("emulator did not start:\n" .. table.concat(seen, "\n"))
  end
  local port = assert(tonumber(conn:match("Endpoint=sb://[^:]+:(%d+)")), "no port in " .. conn)
  return setmetatable({ pid = pid, pipe = p, conn = conn, port = port,
                        base = "http://127.0.0.1:" .. port }, { __index = H.Emulator })
end

H.Emulator = {}

function H.Emulator:stop()
  if self.pid then
    os.execute("kill " .. self.pid .. " 2>/dev/null")
    self.pipe:close()
    self.pid = nil
  end
end

function H.Emulator:admin(method, path, body)
  local out = {}
  local src = body and json.encode(body) or nil
  local ok, status = http.request({
    url = self.base .. "/$admin/" .. path,
    method = method,
    headers = src and { ["content-type"] = "application/json", ["content-length"] = #src } or
      { ["content-length"] = 0 },
    source = src and ltn12.source.string(src) or nil,
    sink = ltn12.sink.table(out),
  })
  assert(ok, "admin request failed: " .. tostring(status))
  local text = table.concat(out)
  local decoded = text ~= "" and json.decode(text) or nil
  return status, decoded, text
end

function H.Emulator:advance(seconds)
  local status = self:admin("POST", "clock/advance", { seconds = seconds })
  assert(status == 200, "clock/advance answered " .. tostring(status))
end

function H.Emulator:reset()
  local status = self:admin("POST", "reset")
  assert(status == 200, "reset answered " .. tostring(status))
end

function H.Emulator:create(path, settings)
  settings = settings or {}
  settings.kind = settings.kind or "queue"
  local status = self:admin("PUT", "entities/" .. path, settings)
  assert(status == 200 or status == 201, "create entity answered " .. tostring(status))
end

-- A new queue with a unique lower-case name (prefix, then a counter): its name.
function H.Emulator:queue(prefix, settings)
  local name = H.unique(prefix):lower()
  self:create(name, settings)
  return name
end

function H.Emulator:fault(rule)
  local status = self:admin("POST", "faults", rule)
  assert(status == 201 or status == 200, "fault answered " .. tostring(status))
end

-- Starts tests/faults/proxy.py in front of the emulator on upstream_port: proxy.port relays
-- to it, proxy:arm(op, mode) cuts the answer to the next request of op short after the
-- server acted on it (mode cut_headers or cut_body), proxy:stop() kills it.
local Proxy = {}
Proxy.__index = Proxy

function H.start_proxy(upstream_port)
  local p = assert(io.popen(("cd '%s' && echo $$ && exec %s tests/faults/proxy.py %d 2>&1")
    :format(ROOT, PYTHON, upstream_port), "r"))
  local pid = assert(tonumber(p:read("*l")))
  local port = assert(tonumber((p:read("*l") or ""):match("^proxy: (%d+)")), "proxy did not start")
  return setmetatable({ pid = pid, pipe = p, port = port }, Proxy)
end

function Proxy:arm(op, mode)
  local _, status = http.request(("http://127.0.0.1:%d/$proxy/arm?op=%s&mode=%s"):format(self.port, op, mode), "")
  assert(status == 200, "proxy arm answered " .. tostring(status))
end

Proxy.stop = H.Emulator.stop -- (the same pid and pipe)

-- The connection string conn with its endpoint at 127.0.0.1:port (e.g. a proxy's).
function H.via(conn, port)
  return (conn:gsub("Endpoint=sb://[^;]+", "Endpoint=sb://127.0.0.1:" .. port))
end

function H.Emulator:clear_faults() self:admin("DELETE", "faults") end

function H.Emulator:state()
  local status, st = self:admin("GET", "state")
  assert(status == 200, "state answered " .. tostring(status))
  return st
end

-- The entity's part of the state dump (entities may be a list or a map).
function H.Emulator:entity(path)
  local st = self:state()
  local ents = st.entities or st
  if ents[path] then return ents[path] end
  for _, e in pairs(ents) do
    if type(e) == "table" and (e.path == path or e.name == path) then return e end
  end
  return nil
end

function H.Emulator:messages(path)
  local e = self:entity(path)
  return e and e.messages or {}
end

function H.Emulator:completed(path, message_id)
  local e = self:entity(path)
  local c = e and e.completed or {}
  return c[message_id] or 0
end

-- Polls fn() every 20 ms until it returns a truthy value or `seconds` pass.
-- (Waiting for an event of the system under test, never a stand-in for one.)
function H.wait_for(fn, seconds)
  local socket = require "socket"
  local deadline = socket.gettime() + (seconds or 10)
  while socket.gettime() < deadline do
    local v = fn()
    if v then return v end
    socket.sleep(0.02)
  end
  return fn()
end

-- A spec's emulator and client: registers (busted's) setup, which starts an emulator with
-- args and makes a client of it for set(emu, client), and teardown, which closes that client
-- and stops the emulator.
function H.suite(args, set)
  local busted = require "busted" -- (its setup and teardown: the spec files' are not globals here)
  local emu, client
  busted.setup(function()
    emu = H.start_emulator(args)
    client = assert(require("peeklock").client(emu.conn))
    set(emu, client)
  end)
  busted.teardown(function()
    if client then client:close() end
    if emu then emu:stop() end
  end)
end

-- Calls fn(...) and expects an argument error raised at this call's line (the caller of
-- peeklock's function: none of peeklock's own frames): the message without its position.
function H.refused(fn, ...)
  local line = debug.getinfo(1, "l").currentline + 1
  local ok, err = pcall(fn, ...)
  assert(not ok, "expected an argument error, got a result")
  assert(type(err) == "string", "expected an error message, got " .. type(err))
  local at = err:match("^[^:]*helpers%.lua:(%d+): ")
  assert(at == tostring(line), ("expected an error at helpers.lua:%d, got: %s"):format(line, err))
  return (err:gsub("^[^:]*helpers%.lua:%d+: ", ""))
end

local counter = 0
function H.unique(prefix)
  counter = counter + 1
  return ("%s-%d-%d"):format(prefix or "m", os.time(), counter)
end

return H
