-- The fault matrix (tests/faults/matrix.json) against require "peeklock", run under Lua 5.4
-- and LuaJIT by tests/lua/run.sh: every operation meets every fault once (the emulator's
-- fault rules, and tests/faults/proxy.py for answers cut short: H.start_proxy), and the call reports what
-- the table says: ok (and the operation happened exactly once), unknown_outcome (and it
-- happened at most once), or the named error.
local H = require "helpers"
local peeklock = require "peeklock"
local json = require "dkjson"
local socket = require "socket"

local ROOT = os.getenv("PEEKLOCK_ROOT") or "."

local function read_matrix()
  local f = assert(io.open(ROOT .. "/tests/faults/matrix.json"))
  local m = assert(json.decode(f:read("*a")))
  f:close()
  return m
end

local MATRIX = read_matrix()
local EMU_OP = { send_batch = "send" }
local ERROR_CODE = { unknown = "unknown_outcome", protocol = "protocol", connection = "connection" }

local function free_port()
  local s = assert(socket.bind("127.0.0.1", 0))
  local _, port = s:getsockname()
  s:close() -- nothing listens there now
  return port
end

-- cases in a stable order
local CASES = {}
local ops = {}
for op in pairs(MATRIX.expect) do ops[#ops + 1] = op end
table.sort(ops)
for _, op in ipairs(ops) do
  local faults = {}
  for fault in pairs(MATRIX.expect[op]) do faults[#faults + 1] = fault end
  table.sort(faults)
  for _, fault in ipairs(faults) do
    local want = MATRIX.expect[op][fault]
    if want ~= "n/a" then CASES[#CASES + 1] = { op = op, fault = fault, want = want } end
  end
end

describe("fault matrix (" .. (jit and jit.version or _VERSION) .. ")", function()
  local emu, proxy, setup_client
  H.suite({}, function(e, c) emu, setup_client = e, c end)
  setup(function() proxy = H.start_proxy(emu.port) end)
  teardown(function() if proxy then proxy:stop() end end)

  for _, case in ipairs(CASES) do
    local op, fault, want = case.op, case.fault, case.want
    it(op .. " meets " .. fault .. ": " .. want, function()
      local spec = MATRIX.faults[fault]
      local q = H.unique("f"):lower()
      emu:create(q, { lock_duration = 5 })
      local port = spec.endpoint == "refused" and free_port() or proxy.port
      local c = assert(peeklock.client({ connection_string = H.via(emu.conn, port), request_timeout_ms = 1000 }))
      local msg
      if op ~= "send" and op ~= "send_batch" then
        assert(setup_client:send(q, "m", { message_id = "m1" }))
      end
      if op == "peek_lock" then assert(setup_client:send(q, "m", { message_id = "m2" })) end
      if op == "renew" or op == "unlock" or op == "complete" then
        msg = assert(c:peek_lock(q, { timeout = 5 })) -- opens the connection the settle reuses
      elseif spec.connection == "reused" then
        emu:create(q .. "-warm")
        local none, err = c:peek_lock(q .. "-warm", { timeout = 0 })
        assert(none == nil and err == nil)
      end
      if spec.rule then
        local rule = { operation = EMU_OP[op] or op, entity = q, count = 1 }
        for k, v in pairs(spec.rule) do rule[k] = v end
        emu:fault(rule)
      elseif spec.proxy then
        proxy:arm(op, spec.proxy)
      end

      local res, err
      if op == "send" then res, err = c:send(q, "s", { message_id = "s1" })
      elseif op == "send_batch" then
        res, err = c:send_batch(q, { { body = "b", message_id = "b1" }, { body = "b", message_id = "b2" } })
      elseif op == "receive_and_delete" then res, err = c:receive_and_delete(q, { timeout = 0 })
      elseif op == "peek_lock" then res, err = c:peek_lock(q, { timeout = 0 })
      elseif op == "renew" then res, err = msg:renew()
      elseif op == "unlock" then res, err = msg:abandon()
      else res, err = msg:complete() end

      local outcome, extra = want:match("^(%S+)%s*(.*)$")
      if outcome == "ok" then
        assert.is_nil(err)
        assert.truthy(res)
      else
        assert.is_nil(res)
        assert.is_table(err)
        assert.equal(ERROR_CODE[outcome], err.code)
      end
      if extra == "orphaned" then assert.is_true(c:stats().orphaned_locks >= 1) end
      if fault == "stall" then emu:clear_faults() end

      local copies = {}
      for _, m in ipairs(emu:messages(q)) do copies[m.message_id] = (copies[m.message_id] or 0) + 1 end
      if op == "send" or op == "send_batch" then
        for _, id in ipairs(op == "send" and { "s1" } or { "b1", "b2" }) do
          if outcome == "ok" then assert.equal(1, copies[id])
          elseif fault ~= "stall" then assert.is_true((copies[id] or 0) <= 1) end -- never a second copy
        end
      elseif op == "receive_and_delete" then
        if outcome == "ok" then
          assert.equal("m1", res.message_id)
          assert.is_nil(copies.m1)
        else
          assert.is_true((copies.m1 or 0) <= 1)
        end
      elseif op == "peek_lock" and outcome == "ok" then
        -- after a lost answer the retry locks the next message; m1's orphaned lock expires
        local acted = (spec.rule and spec.rule.after) or spec.proxy -- the server locked m1 first
        if extra ~= "orphaned" or not acted then assert.equal("m1", res.message_id)
        elseif fault ~= "stall" then assert.equal("m2", res.message_id) end
        assert(res:complete())
      elseif op == "renew" then
        assert.equal("held", msg.lock_state)
      elseif op == "unlock" or op == "complete" then
        assert.equal(outcome == "ok" and "settled" or "unknown", msg.lock_state)
        local done = emu:completed(q, "m1")
        if op == "complete" and outcome == "ok" then assert.equal(1, done)
        elseif op == "complete" then assert.is_true(done <= 1) end
        if outcome == "unknown" then
          local again, err2 = msg:complete() -- remembered: unknown again
          assert.is_nil(again)
          assert.equal("unknown_outcome", err2.code)
        end
      end
      c:close()
    end)
  end
end)
