-- busted specs for what client:process does when a receive fails, by the core's rule
-- (pl_receive_pause_ms): an error that waiting cannot mend ends the run (summary.error);
-- any other pauses the consumer (1 s doubling per consecutive failure, at most 10 s) and the
-- run goes on. Run under Lua 5.4 and LuaJIT by tests/lua/run.sh against the real emulator.
local H = require "helpers"
local peeklock = require "peeklock"
local core = require "peeklock.core"

local emu, client

describe("process when a receive fails (" .. (jit and jit.version or _VERSION) .. ")", function()
  H.suite({}, function(e, c) emu, client = e, c end)

  for _, batch in ipairs({ false, 2 }) do
    it("ends at once on a missing entity" .. (batch and " (batch)" or ""), function()
      local t0 = core.pl_now_mono_ms()
      local s = assert(client:process("ordrs", function() error("never") end,
                                      { idle_timeout = 10, batch = batch or nil }))
      assert.is_true(core.pl_now_mono_ms() - t0 < 5000) -- not after the idle timeout
      assert.equal("entity_not_found", s.error.code)
      assert.equal(1, s.errors)
      assert.equal(0, s.processed)
    end)
  end

  it("ends at once on a wrong key", function()
    local q = emu:queue("pw")
    local conn = emu.conn:gsub("SharedAccessKey=[^;]+", "SharedAccessKey=wrong-k3y")
    local bad = assert(peeklock.client(conn))
    local s = assert(bad:process(q, function() error("never") end, { idle_timeout = 10 }))
    bad:close()
    assert.equal("auth", s.error.code)
    assert.is_nil(tostring(s.error):find("wrong-k3y", 1, true))
  end)

  it("goes on after a peek-lock whose answer was cut (the lock it may hold expires)", function()
    local proxy = H.start_proxy(emu.port)
    local q = emu:queue("pc", { lock_duration = 5 })
    assert(client:send(q, "1", { message_id = "m1" }))
    assert(client:send(q, "2", { message_id = "m2" }))
    local c = assert(peeklock.client({ connection_string = H.via(emu.conn, proxy.port), max_retries = 0 }))
    proxy:arm("peek_lock", "cut_headers") -- the server locks m1, its answer is lost
    local seen = {}
    local s = assert(c:process(q, function(msg) seen[#seen + 1] = msg.message_id end,
                               { max_messages = 1, poll_timeout = 1 }))
    c:close()
    proxy:stop()
    assert.is_nil(s.error)
    assert.equal("protocol", s.last_error.code)
    assert.equal(1, s.errors)
    assert.same({ "m2" }, seen)
    assert.equal(1, emu:completed(q, "m2"))
  end)

  it("pauses 1, 2, 4 s between consecutive 503s, then processes the message", function()
    local q = emu:queue("pt")
    assert(client:send(q, "1", { message_id = "m1" }))
    local c = assert(peeklock.client({ connection_string = emu.conn, max_retries = 0 }))
    emu:fault({ operation = "peek_lock", entity = q, status = 503, count = 3 })
    local t0 = core.pl_now_mono_ms()
    local s = assert(c:process(q, function() end, { max_messages = 1, poll_timeout = 1 }))
    local elapsed = core.pl_now_mono_ms() - t0
    c:close()
    assert.is_nil(s.error)
    assert.equal(3, s.errors)
    assert.equal("throttled", s.last_error.code)
    assert.equal(1, s.processed)
    assert.equal(1, emu:completed(q, "m1"))
    -- the three pauses, 1 + 2 + 4 s, ran in full (a second each would be 3 s)
    assert.is_true(elapsed >= 7000, "elapsed " .. elapsed .. " ms")
    assert.is_true(elapsed < 7000 + 3000, "elapsed " .. elapsed .. " ms")
  end)
end)
