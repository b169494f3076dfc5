-- Client CPU per operation from Lua (bench/lua/run.py drives it; see docs/lua.md).
--   lua5.4|luajit bench/lua/bench.lua net|wire CONNSTR ENTITY N
-- In nginx: require("bench").run(require "peeklock.resty", mode, conn, entity, n)
-- net:  send + peek_lock + complete against the emulator, N times (3N ops)
-- wire: sans-I/O, build a send request and parse a peek-lock response (2N ops),
--       the same work as c_baseline.c's wire mode.
local B = {}

local clock = os.clock

local function net(pl, conn, entity, n)
  local client = assert(pl.client(conn))
  local t0 = clock()
  for i = 1, n do
    assert(client:send(entity, "payload " .. i, { label = "bench", properties = { Priority = "High", Attempt = i } }))
    local msg = assert(client:peek_lock(entity, { timeout = 5 }))
    local _ = msg.body, msg.message_id, msg.properties
    assert(msg:complete())
    msg:free()
  end
  local cpu = clock() - t0
  client:close()
  return 3 * n, cpu
end

local function wire(pl, conn, entity, n)
  local peeklock = require "peeklock"
  local core = peeklock.core
  local client = assert(pl.client(conn))
  local ch = client._h
  local location = core.pl_client_endpoint(ch) .. "/" .. entity .. "/messages/7/0f8fad5b-d9cb-469f-a165-70867728950e"
  local t0 = clock()
  for i = 1, n do
    -- build a send request as the cosocket driver does
    local m = assert(peeklock._build_outgoing("send", "payload " .. i,
      { label = "bench", properties = { Priority = "High", Attempt = i } }))
    local _, req = core.pl_request_send(ch, entity, m)
    local _ = core.request_parts(req)
    core.release(req)
    core.release(m)
    -- parse a peek-lock response
    local _, rreq = core.pl_request_receive(ch, entity, 0, 1)
    local bp = '{"DeliveryCount":1,"EnqueuedSequenceNumber":0,"EnqueuedTimeUtc":"Sun, 22 Nov 2026 14:00:00 GMT",'
      .. '"Label":"bench","LockToken":"0f8fad5b-d9cb-469f-a165-70867728950e",'
      .. '"LockedUntilUtc":"Sun, 22 Nov 2026 14:01:00 GMT","MessageId":"m' .. i .. '",'
      .. '"SequenceNumber":7,"State":"Active","TimeToLive":922337203685.47754}'
    local _, resp = core.response_from(201, {
      { "Date", "Sun, 22 Nov 2026 14:00:00 GMT" }, { "BrokerProperties", bp }, { "Location", location },
      { "Priority", '"High"' }, { "Attempt", "3" }, { "Content-Type", "text/plain" } }, "payload")
    local rc, mh = core.pl_response_result(ch, rreq, nil, resp, core.pl_now_mono_ms())
    assert(rc == 0, "response_result failed")
    local msg = peeklock._wrap_message(client, mh)
    local _ = msg.body, msg.message_id, msg.properties
    msg:free()
    core.release(resp)
    core.release(rreq)
  end
  local cpu = clock() - t0
  client:close()
  return 2 * n, cpu
end

function B.run(pl, mode, conn, entity, n)
  if mode == "net" then return net(pl, conn, entity, n) end
  return wire(pl, conn, entity, n)
end

if arg and arg[0] and arg[0]:match("bench%.lua$") then
  local mode, conn, entity, n = arg[1], arg[2], arg[3], tonumber(arg[4])
  local ops, cpu = B.run(require "peeklock", mode, conn, entity, n)
  print(("%s %d %.6f"):format(mode, ops, cpu))
end

return B
