-- busted specs for the lua-resty manners of require "peeklock" (errors usable as strings,
-- options checked, closing inside a handler, integer counts, tracebacks, dropped messages),
-- run under Lua 5.4 and LuaJIT by tests/lua/run.sh against the real emulator.
local H = require "helpers"
local peeklock = require "peeklock"

local emu, client

local function queue()
  local name = H.unique("mq"):lower()
  emu:create(name)
  return name
end

-- The emulator's view of the one message of q: locked or not.
local function locked(q)
  local m = emu:messages(q)[1]
  return m and m.locked
end

describe("peeklock manners (" .. (jit and jit.version or _VERSION) .. ")", function()
  H.suite({}, function(e, c) emu, client = e, c end)

  describe("errors", function()
    it("work as strings: tostring, concatenation and a table of one string", function()
      local closed = assert(peeklock.client(emu.conn))
      closed:close()
      local ok, err = closed:send_batch(queue(), { "x" })
      assert.is_nil(ok)
      assert.is_true(peeklock.is_error(err))
      local text = tostring(err)
      assert.equal("peeklock: send_batch: client was closed (closed)", text)
      assert.equal("failed: " .. text, "failed: " .. err)
      assert.equal(text .. "!", err .. "!")
      -- ngx.say / ngx.print write a table's array part: the message is all there is
      local raw = {}
      for k, v in next, err do raw[#raw + 1] = { k, v } end
      assert.same({ { 1, text } }, raw)
      assert.equal("closed", err.code)
      assert.equal(0, err.status)
      assert.is_false(err.retryable)
      assert.equal("client was closed", err.message)
    end)

    it("name the operation once and no C parameter", function()
      local q = queue()
      assert(client:send(q, "once"))
      local msg = assert(client:peek_lock(q, { timeout = 5 }))
      assert(msg:complete())
      local ok, err = msg:complete()
      assert.is_nil(ok)
      assert.equal("peeklock: complete: the message was already settled (state)", tostring(err))
      local _, aerr = msg:abandon()
      assert.equal("peeklock: abandon: the message was already settled (state)", tostring(aerr))
      msg:free()
      local _, nerr = client:send("no-such-queue-" .. H.unique():lower(), "x")
      assert.equal(1, select(2, tostring(nerr):gsub("send", "")))
    end)

    it("keep the handler's traceback and error value", function()
      local q = queue()
      assert(client:send(q, "tb"))
      local cause = { why = "mine" }
      local function inner() error(cause) end
      local ok, err = client:with_lock(q, { timeout = 5 }, function() inner() end)
      assert.is_nil(ok)
      assert.equal("handler", err.code)
      assert.equal(cause, err.cause)
      assert.is_string(err.traceback)
      assert.truthy(err.traceback:find("manners_spec.lua:%d+: in %a* ?function 'inner'")
                    or err.traceback:find("manners_spec.lua:%d+: in upvalue 'inner'")
                    or err.traceback:find("manners_spec.lua:%d+: in local 'inner'"), err.traceback)
    end)
  end)

  describe("options", function()
    it("refuses an unknown client option or one of the wrong type", function()
      local ok, e = pcall(peeklock.client, { connection_string = emu.conn, bogus_opt = 1 })
      assert.is_false(ok)
      assert.truthy(e:find("unknown option 'bogus_opt' to 'client'", 1, true), e)
      assert.truthy(e:find("manners_spec.lua", 1, true), e)
      ok, e = pcall(peeklock.client, { connection_string = emu.conn, max_retries = "3" })
      assert.is_false(ok)
      assert.truthy(e:find("bad option 'max_retries' to 'client' (number expected, got string)", 1, true), e)
      ok, e = pcall(peeklock.client, { connection_string = emu.conn, renewer = { margin = 1 } })
      assert.is_false(ok)
      assert.truthy(e:find("unknown option 'margin' to 'client'", 1, true), e)
      ok, e = pcall(peeklock.client, { connection_string = emu.conn, renewer = { jitter = "0.1" } })
      assert.is_false(ok)
      assert.truthy(e:find("manners_spec.lua:%d+: bad option 'jitter' to 'client' %(number expected, got string%)"), e)
      ok, e = pcall(peeklock.client, { connection_string = emu.conn, renewer = 5 })
      assert.is_false(ok)
      assert.truthy(e:find("bad option 'renewer' to 'client' (table expected, got number)", 1, true), e)
      ok, e = pcall(peeklock.client, { connection_string = emu.conn, pool_size = 0 / 0 })
      assert.is_false(ok)
      assert.truthy(e:find("bad option 'pool_size' to 'client' (number expected, got number)", 1, true), e)
      -- a caller's own options (peeklock.resty's) pass with their type, and are refused with another
      local c = assert(peeklock.client({ connection_string = emu.conn, ssl_verify = true }, { ssl_verify = "boolean" }))
      c:close()
      ok, e = pcall(peeklock.client, { connection_string = emu.conn, ssl_verify = 1 }, { ssl_verify = "boolean" })
      assert.is_false(ok)
      assert.truthy(e:find("bad option 'ssl_verify' to 'client' (boolean expected, got number)", 1, true), e)
      -- the OpenResty client's own options are not the blocking client's
      ok, e = pcall(peeklock.client, { connection_string = emu.conn, keepalive_ms = 1000 })
      assert.is_false(ok)
      assert.truthy(e:find("unknown option 'keepalive_ms'", 1, true), e)
    end)
  end)

  describe("with_lock", function()
    it("returns nil, err when the handler closes the client", function()
      local q = queue()
      assert(client:send(q, "close me"))
      local c = assert(peeklock.client(emu.conn))
      local ok, err = c:with_lock(q, { timeout = 5 }, function() c:close() end)
      assert.is_nil(ok)
      assert.is_true(peeklock.is_error(err))
      assert.equal("closed", err.code)
      assert.truthy(tostring(err):find("not completed", 1, true))
      assert.equal(0, emu:completed(q, emu:messages(q)[1].message_id))
    end)
  end)

  describe("numbers", function()
    it("counts and whole-second times are integers on Lua 5.3+", function()
      if not math.type then return end -- LuaJIT has one number type
      local q = queue()
      assert(client:send(q, "n", { time_to_live = 600 }))
      local msg = assert(client:peek_lock(q, { timeout = 5 }))
      assert.equal("integer", math.type(msg.time_to_live))
      assert(msg:complete())
      msg:free()
      local st = assert(client:stats())
      for _, k in ipairs({ "requests", "sent", "received", "completed", "orphaned_locks" }) do
        assert.equal("integer", math.type(st[k]), k)
      end
    end)
  end)

  describe("dropped messages", function()
    it("a peek-locked message dropped to the collector is abandoned", function()
      local q = queue()
      assert(client:send(q, "dropped"))
      local msg = assert(client:peek_lock(q, { timeout = 5 }))
      assert.is_true(locked(q))
      msg = nil ---@diagnostic disable-line: cast-local-type
      collectgarbage(); collectgarbage()
      assert.is_false(locked(q))
      assert.equal(0, emu:completed(q, emu:messages(q)[1].message_id))
    end)

    it("a with_lock whose coroutine is dropped abandons and stops renewing", function()
      local q = queue()
      assert(client:send(q, "in a coroutine"))
      local c = assert(peeklock.client(emu.conn))
      local co = coroutine.create(function()
        c:with_lock(q, { timeout = 5 }, function() coroutine.yield("inside") end)
      end)
      assert.same({ true, "inside" }, { coroutine.resume(co) })
      assert.is_true(locked(q))
      assert.equal(1, c:renewer_stats().held)
      co = nil ---@diagnostic disable-line: cast-local-type
      collectgarbage(); collectgarbage()
      assert.is_false(locked(q))
      assert.equal(0, c:renewer_stats().held)
      c:close()
    end)
  end)

  describe("one renewer per process", function()
    -- this process's thread count (the renewer is a thread; clients make none)
    local function threads()
      local f = assert(io.open("/proc/self/status"))
      local n = tonumber(f:read("*a"):match("Threads:%s*(%d+)"))
      f:close()
      return n
    end

    it("clients made per job share it: 60 with_locks, no new thread", function()
      local q = queue()
      local function job(i)
        local c = assert(peeklock.client(emu.conn)) -- a client per job, never closed
        assert(c:send(q, "job " .. i))
        assert(c:with_lock(q, { timeout = 5 }, function(msg) return msg.body end))
      end
      job(0) -- the first with_lock of the process may start the renewer
      local base = threads()
      for i = 1, 60 do job(i) end
      assert.equal(base, threads())
      assert.equal(0, #emu:messages(q))
    end)

    it("close({ unlock_held = true }) hands back that client's locks only", function()
      local q1, q2 = queue(), queue()
      assert(client:send(q1, "one"))
      assert(client:send(q2, "two"))
      local c1, c2 = assert(peeklock.client(emu.conn)), assert(peeklock.client(emu.conn))
      local co1 = coroutine.create(function() return c1:with_lock(q1, { timeout = 5 }, coroutine.yield) end)
      local co2 = coroutine.create(function()
        return c2:with_lock(q2, { timeout = 5 }, function(msg) coroutine.yield(); return msg.body end)
      end)
      assert.is_true(coroutine.resume(co1))
      assert.is_true(coroutine.resume(co2))
      local held = c2:renewer_stats().held
      assert.is_true(held >= 2)
      assert.equal(held, c1:renewer_stats().held) -- one renewer
      c1:close({ unlock_held = true })
      assert.is_false(locked(q1))
      assert.is_true(locked(q2))
      assert.equal(held - 1, c2:renewer_stats().held)
      local ok, a, b = coroutine.resume(co1)
      assert.is_true(ok)
      assert.is_nil(a)
      assert.equal("closed", b.code)
      assert.same({ true, true, "two" }, { coroutine.resume(co2) })
      assert.equal(0, #emu:messages(q2))
      assert.equal(1, #emu:messages(q1))
      c2:close()
    end)
  end)

  describe("process", function()
    it("runs the handler for message after message: completed, or abandoned when it raises", function()
      local q = queue()
      for i = 1, 5 do assert(client:send(q, "p" .. i, { message_id = "p" .. i })) end
      local seen = {}
      local s = assert(client:process(q, function(msg)
        seen[#seen + 1] = msg.body
        if msg.body == "p3" and msg.delivery_count == 1 then error("once") end
      end, { max_messages = 6, poll_timeout = 1 }))
      assert.equal("max_messages", s.stopped_by)
      assert.equal(5, s.processed)
      assert.equal(1, s.failed)
      assert.equal(0, s.lost)
      assert.equal(6, #seen)
      for i = 1, 5 do assert.equal(1, emu:completed(q, "p" .. i)) end
      assert.equal(0, #emu:messages(q))
    end)

    it("counts a handler that raised after its lock was lost as lost, as Python's processors do", function()
      local q = queue()
      assert(client:send(q, "x", { message_id = "x" }))
      local s = assert(client:process(q, function()
        emu:advance(400) -- the emulator's clock runs past the lock: the abandon finds it gone
        error("too slow")
      end, { max_messages = 1, poll_timeout = 1 }))
      assert.equal(1, s.lost)
      assert.equal(0, s.failed)
      assert.equal(0, s.in_flight)
      assert.equal(0, emu:completed(q, "x"))
    end)

    -- the run test_processor.py and test_aio.py make, with the same counts (the core's)
    it("counts a processed, a handler-settled, an abandoned and a redelivered message", function()
      local q = queue()
      for i = 0, 2 do assert(client:send(q, tostring(i), { message_id = "m" .. i })) end
      local s = assert(client:process(q, function(msg)
        if msg.body == "1" then assert(msg:complete()) -- settled by the handler itself
        elseif msg.body == "2" and msg.delivery_count == 1 then error("once") end
      end, { max_messages = 4, poll_timeout = 1 }))
      local f = assert(io.open((os.getenv("PEEKLOCK_ROOT") or ".") .. "/tests/tallies.json"))
      local run = assert(require("dkjson").decode(f:read("*a")))
      f:close()
      for k, v in pairs(run.counts) do assert.equal(v, s[k], k) end
      assert.equal(run.stopped_by, s.stopped_by)
      assert.is_nil(s.error)
      for i = 0, 2 do assert.equal(1, emu:completed(q, "m" .. i)) end
    end)

    it("ends quietly as closed when the client is closed under the run", function()
      local q = queue()
      assert(client:send(q, "c1"))
      local c = assert(peeklock.client(emu.conn))
      local n = 0
      local s = assert(c:process(q, function() n = n + 1 end, {
        poll_timeout = 1, stop = function() if n >= 1 then c:close() end return false end }))
      assert.equal(1, n)
      assert.equal(1, s.processed)
      assert.equal("closed", s.stopped_by)
      assert.is_nil(s.error)
      assert.equal(0, s.errors)
    end)

    it("stops when stop() says so or nothing arrives for idle_timeout", function()
      local q = queue()
      for i = 1, 3 do assert(client:send(q, "s" .. i)) end
      local n = 0
      local s = assert(client:process(q, function() n = n + 1 end, { stop = function() return n >= 2 end,
                                                                       poll_timeout = 1 }))
      assert.equal(2, s.processed)
      assert.equal("stop_event", s.stopped_by)
      assert.equal(1, #emu:messages(q))
      s = assert(client:process(q, function() end, { idle_timeout = 0.5, poll_timeout = 1 }))
      assert.equal(1, s.processed)
      assert.equal("idle", s.stopped_by)
    end)

    it("ends on an error that cannot pass, and checks its arguments", function()
      local s = assert(client:process("no-such-queue-" .. H.unique():lower(), function() end, { poll_timeout = 1 }))
      assert.equal(0, s.processed)
      assert.equal("entity_not_found", s.error.code)
      assert.equal("error", s.stopped_by)
      local ok, e = pcall(client.process, client, "q", function() end, { concurrency = 2 })
      assert.is_false(ok)
      assert.truthy(e:find("bad option 'concurrency' to 'process' (out of range 1..1)", 1, true), e)
      ok, e = pcall(client.process, client, "q", function() end, { workers = 2 })
      assert.is_false(ok)
      assert.truthy(e:find("unknown option 'workers' to 'process'", 1, true), e)
      -- the values are the core's rules (pl_check_process_option), in its words, at the
      -- caller's line; the entity is the core's to check too, when process starts
      local cases = {
        { { concurrency = 0 }, "bad option 'concurrency' to 'process' (must be a whole number 1..256)" },
        { { concurrency = 1.5 }, "bad option 'concurrency' to 'process' (must be a whole number 1..256)" },
        { { batch = 100001 }, "bad option 'batch' to 'process' (must be a whole number 1..100000)" },
        { { max_messages = 0 }, "bad option 'max_messages' to 'process' (must be a whole number 1..2^53)" },
        { { idle_timeout = 0 },
          "bad option 'idle_timeout' to 'process' (must be a positive, finite number of seconds)" },
        { { max_wait = 3601 }, "bad option 'max_wait' to 'process' (must be 0..3600 seconds)" },
      }
      for _, c in ipairs(cases) do
        ok, e = pcall(function() client:process("q", function() end, c[1]) end)
        assert.is_false(ok)
        assert.truthy(e:find("manners_spec.lua:%d+: bad option"), e)
        assert.truthy(e:find(c[2], 1, true), e)
      end
      for _, entity in ipairs({ "", "a/../b", "q/messages" }) do
        ok, e = pcall(function() client:process(entity, function() end, { poll_timeout = 0 }) end)
        assert.is_false(ok)
        assert.truthy(e:find("manners_spec.lua:%d+: peeklock: process: entity: "), e)
      end
    end)
  end)
end)
