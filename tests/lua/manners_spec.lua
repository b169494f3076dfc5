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
  setup(function()
    emu = H.start_emulator({})
    client = assert(peeklock.client(emu.conn))
  end)
  teardown(function()
    if client then client:close() end
    if emu then emu:stop() end
  end)

  describe("errors", function()
    it("work as strings: tostring, concatenation and a table of one string", function()
      local ok, err = client:send_batch(queue(), {})
      assert.is_nil(ok)
      assert.is_true(peeklock.is_error(err))
      local text = tostring(err)
      assert.equal("peeklock: send_batch: the batch is empty (invalid_argument)", text)
      assert.equal("failed: " .. text, "failed: " .. err)
      assert.equal(text .. "!", err .. "!")
      -- ngx.say / ngx.print write a table's array part: the message is all there is
      local raw = {}
      for k, v in next, err do raw[#raw + 1] = { k, v } end
      assert.same({ { 1, text } }, raw)
      assert.equal("invalid_argument", err.code)
      assert.equal(0, err.status)
      assert.is_false(err.retryable)
      assert.equal("the batch is empty", err.message)
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
end)
