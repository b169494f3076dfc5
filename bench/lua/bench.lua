-- Client CPU per operation from Lua (bench/lua/run.py drives it; see docs/lua.md).
--   lua5.4|luajit bench/lua/bench.lua net|wire CONNSTR ENTITY N    one run, prints "<mode> <ops> <cpu_s>"
--   lua5.4|luajit bench/lua/bench.lua serve CONNSTR ENTITY         one client, then per stdin line
--                                                                  "net|wire K": K iterations, prints "<ops> <cpu_s>"
--   lua5.4|luajit bench/lua/bench.lua serve-floor CONNSTR ENTITY   the same for "net K" through floor.c
--                                                                  (LUA_CPATH finds floor.so; run.py builds it)
-- In nginx: require("bench").round(require "peeklock.resty", mode, conn, entity, k) (a client per worker).
-- net:  send + peek_lock + complete against the emulator, N times (3N ops)
-- wire: sans-I/O, build a send request and parse a peek-lock response (2N ops),
--       the same work as c_baseline.c's wire mode.
-- CPU is os.clock(): clock(), the process's CPU time (every thread), as c_baseline.c.
local B = {}

local clock = os.clock

local function net(client, entity, n)
  local t0 = clock()
  for i = 1, n do
    assert(client:send(entity, "payload " .. i, { label = "bench", properties = { Priority = "High", Attempt = i } }))
    local msg = assert(client:peek_lock(entity, { timeout = 5 }))
    local _ = msg.body, msg.message_id, msg.properties
    assert(msg:complete())
    msg:free()
  end
  return 3 * n, clock() - t0
end

local function wire(client, entity, n)
  local I = require "peeklock.internal"
  local core = require "peeklock.core"
  local ch = client._h
  local request_send_from = I.request_send_from
  local location = core.pl_client_endpoint(ch) .. "/" .. entity .. "/messages/7/0f8fad5b-d9cb-469f-a165-70867728950e"
  local t0 = clock()
  for i = 1, n do
    -- build a send request as the cosocket driver does
    local _, req = request_send_from("send", ch, entity, "payload " .. i,
      { label = "bench", properties = { Priority = "High", Attempt = i } })
    local _ = core.request_head(req)
    core.release(req)
    -- parse a peek-lock response
    local _, rreq = core.pl_request_receive(ch, entity, 0, 1)
    local bp = '{"DeliveryCount":1,"EnqueuedSequenceNumber":0,"EnqueuedTimeUtc":"Sun, 22 Nov 2026 14:00:00 GMT",'
      .. '"Label":"bench","LockToken":"0f8fad5b-d9cb-469f-a165-70867728950e",'
      .. '"LockedUntilUtc":"Sun, 22 Nov 2026 14:01:00 GMT","MessageId":"m' .. i .. '",'
      .. '"SequenceNumber":7,"State":"Active","TimeToLive":922337203685.47754}'
    local rc, mh = core.result_from(ch, rreq, nil, 201, { -- flat name, value list, as the cosocket driver collects it
      "Date", "Sun, 22 Nov 2026 14:00:00 GMT", "BrokerProperties", bp, "Location", location,
      "Priority", '"High"', "Attempt", "3", "Content-Type", "text/plain" }, "payload", core.pl_now_mono_ms())
    assert(rc == 0, "response_result failed")
    local msg = I.wrap_message(client, mh)
    local _ = msg.body, msg.message_id, msg.properties
    msg:free()
    core.release(rreq)
  end
  return 2 * n, clock() - t0
end

-- net through bench/lua/floor.c (the thinnest binding): the same arguments and calls, what
-- net reads of the message handed back by peek_lock, no message object
local function floor_net(floor, entity, n)
  local t0 = clock()
  for i = 1, n do
    assert(floor.send(entity, "payload " .. i, { label = "bench", properties = { Priority = "High", Attempt = i } }))
    local msg, body, id, props = floor.peek_lock(entity, { timeout = 5 })
    assert(msg)
    local _ = body, id, props
    assert(floor.complete(msg))
  end
  return 3 * n, clock() - t0
end

local MODES = { net = net, wire = wire }

local function mode_fn(mode)
  return MODES[mode] or error("bench: mode must be net or wire, got " .. tostring(mode))
end

--- One run with its own client: ops, cpu seconds.
function B.run(pl, mode, conn, entity, n)
  local fn = mode_fn(mode)
  local client = assert(pl.client(conn))
  local ops, cpu = fn(client, entity, n)
  client:close()
  return ops, cpu
end

local clients = {} -- one per driver and connection string, kept across rounds (nginx: per worker)

--- One round on a long-lived client: ops, cpu seconds.
function B.round(pl, mode, conn, entity, k)
  local fn = mode_fn(mode)
  local key = tostring(pl) .. conn
  local client = clients[key]
  if not client then
    client = assert(pl.client(conn))
    clients[key] = client
  end
  return fn(client, entity, k)
end

if arg and arg[0] and arg[0]:match("bench%.lua$") then
  local mode, conn, entity = arg[1], arg[2], arg[3]
  local pl = require "peeklock"
  if mode == "serve-floor" then -- net rounds through floor.c, per stdin line "net K"
    local floor = require "floor"
    floor.open(conn)
    for line in io.lines() do
      local k = assert(tonumber(line:match("^net (%d+)$")), "serve-floor: net K expected")
      io.write(("%d %.9f\n"):format(floor_net(floor, entity, k)))
      io.flush()
    end
  elseif mode == "serve" then
    for line in io.lines() do
      local m, k = line:match("^(%a+) (%d+)$")
      local ops, cpu = B.round(pl, m, conn, entity, tonumber(k))
      io.write(("%d %.9f\n"):format(ops, cpu))
      io.flush()
    end
  else
    local ops, cpu = B.run(pl, mode, conn, entity, tonumber(arg[4]))
    print(("%s %d %.6f"):format(mode, ops, cpu))
  end
end

return B
