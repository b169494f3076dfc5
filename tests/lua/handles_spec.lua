-- busted specs for lock hand-over in require "peeklock": msg:lock_handle(), msg:release(),
-- client:attach(handle). Run under Lua 5.4 and LuaJIT by tests/lua/run.sh against the
-- emulator; time-based lock behaviour uses the emulator's clock.
local H = require "helpers"
local peeklock = require "peeklock"
local socket = require "socket"

local emu, client

local function queue(settings)
  local name = H.unique("hq"):lower()
  emu:create(name, settings)
  return name
end

-- A message sent to a new queue, peek-locked by client: msg, queue, message id.
local function locked(settings)
  local q = queue(settings)
  local id = H.unique("h")
  assert(client:send(q, "work " .. id, { message_id = id }))
  return assert(client:peek_lock(q, { timeout = 5 })), q, id
end

-- No secret of a handle in s: neither the handle nor the lock token it carries.
local function assert_no_secret(s, handle, token)
  s = tostring(s)
  assert.is_nil(s:find(handle, 1, true), "the handle leaked: " .. s)
  if token then assert.is_nil(s:find(token, 1, true), "the lock token leaked: " .. s) end
end

describe("lock hand-over (" .. (jit and jit.version or _VERSION) .. ")", function()
  H.suite({ "--queue", "orders" }, function(e, c) emu, client = e, c end)

  it("a handle attached by a second client is renewed there past the lock duration, then completed once",
    function()
      local msg, q, id = locked({ lock_duration = 5 })
      local token = peeklock.core.pl_message_lock_token(msg._h)
      local seq = msg.sequence_number
      local handle = assert(msg:lock_handle())
      assert.is_string(handle)
      assert.truthy(handle:find("^plh1%."))
      assert_no_secret(msg, handle, token)
      assert.is_true(msg:release())                  -- handed over: not renewed, not abandoned here
      assert.equal("peeklock.Message(freed)", tostring(msg))
      collectgarbage(); collectgarbage()             -- the collector abandons nothing either

      local worker = assert(peeklock.client({ connection_string = emu.conn, renewer = {} })) -- its own renewer
      local done, perr = pcall(function()
        local m = assert(worker:attach(handle, { max_renew = 60 }))
        assert.equal("held", m.lock_state)
        assert.equal(q, m.entity)
        assert.equal(seq, m.sequence_number)
        assert.equal(id, m.message_id)
        assert_no_secret(m, handle, token)
        -- held over two lock durations of 5 s by the worker's renewer alone
        local start = socket.gettime()
        local renewals = H.wait_for(function()
          local st = worker:renewer_stats()
          return st and st.renewals >= 2 and socket.gettime() - start > 5.5 and st.renewals
        end, 30)
        assert.is_number(renewals, "the renewer did not renew the attached lock twice within 30 s")
        assert.equal("held", m.lock_state)
        local msgs = emu:messages(q)
        assert.equal(1, #msgs)
        assert.is_true(msgs[1].locked)
        assert.is_true(m:complete())
        assert.equal("settled", m.lock_state)
        assert.equal(1, emu:completed(q, id))
        assert.equal(0, #emu:messages(q))            -- completed, never redelivered
      end)
      worker:close()
      assert(done, perr)
    end)

  it("attach after the lock expired gives lock_lost on settle and completes nothing", function()
    local msg, q, id = locked({ lock_duration = 5 })
    local handle = assert(msg:lock_handle())
    assert(msg:release())
    emu:advance(30)                                   -- the server-side lock expires
    local m = assert(client:attach(handle, { renew = false }))
    local ok, err = m:complete()
    assert.is_nil(ok)
    assert.equal("lock_lost", err.code)
    assert_no_secret(err, handle)
    assert.equal("lost", m.lock_state)
    -- the with_lock form says so too
    ok, err = client:attach(handle, function() end)
    assert.is_nil(ok)
    assert.equal("lock_lost", err.code)
    assert.equal("attach", err.op)
    assert.equal(0, emu:completed(q, id))
    assert.equal(1, #emu:messages(q))                 -- back for the next receiver
  end)

  it("two holders: both renew, the first settle wins, the other sees lock_lost", function()
    local msg, q, id = locked({ lock_duration = 30 })
    local handle = assert(msg:lock_handle())
    local other = assert(peeklock.client(emu.conn))
    local a = assert(client:attach(handle, { renew = false }))
    local b = assert(other:attach(handle, { renew = false }))
    assert.is_true(a:renew())
    assert.is_true(b:renew())
    assert.is_true(b:complete())
    local ok, err = a:complete()
    assert.is_nil(ok)
    assert.equal("lock_lost", err.code)
    ok, err = msg:abandon()                           -- the original holder: lost too, no false success
    assert.is_nil(ok)
    assert.equal("lock_lost", err.code)
    assert.equal(1, emu:completed(q, id))
    assert.equal(0, #emu:messages(q))
    other:close()
  end)

  it("refuses a bad handle without quoting it", function()
    local msg = locked()
    local handle = assert(msg:lock_handle())
    local token = peeklock.core.pl_message_lock_token(msg._h)
    local foreign = assert(peeklock.client("Endpoint=sb://127.0.0.1:1/;SharedAccessKeyName=k;"
                                           .. "SharedAccessKey=c2VjcmV0;UseDevelopmentEmulator=true"))
    local bad = {
      "secret-not-a-handle-7f3a",
      "plh1.secret!!not*base64",
      "plh1.e30",                                     -- {}: no fields
      "plh1." .. ("A"):rep(20000),                    -- over the size limit
      handle:sub(1, #handle - 9),                     -- cut short
      handle .. "x",
    }
    -- the core's refusal raises at the caller's line (as in Python: InvalidArgument)
    for _, s in ipairs(bad) do
      local err = H.refused(client.attach, client, s)
      assert.matches("^peeklock: attach: .*%(invalid_argument%)$", err)
      assert_no_secret(err, s:sub(6, 30), token)
    end
    local err = H.refused(foreign.attach, foreign, handle) -- another namespace
    assert.truthy(err:find("another namespace", 1, true), err)
    assert.matches("%(invalid_argument%)$", err)
    assert_no_secret(err, handle, token)
    foreign:close()
    -- wrong types and a NUL byte raise, naming the argument only
    local ok, e = pcall(client.attach, client, 42)
    assert.is_false(ok)
    assert.truthy(tostring(e):find("bad argument #1 to 'attach' (string expected, got number)", 1, true))
    ok, e = pcall(client.attach, client, handle .. "\0")
    assert.is_false(ok)
    assert.truthy(tostring(e):find("string without NUL bytes", 1, true))
    assert_no_secret(e, handle, token)
    ok, e = pcall(client.attach, client, handle, { bogus = 1 })
    assert.is_false(ok)
    assert.truthy(tostring(e):find("unknown option 'bogus' to 'attach'", 1, true))
    assert(msg:complete())
  end)

  it("the attach form with a function completes on return and abandons on error", function()
    local msg, q, id = locked()
    local handle = assert(msg:lock_handle())
    assert(msg:release())
    local ok, err = client:attach(handle, function(m)
      assert.equal(id, m.message_id)
      error("handler broke")
    end)
    assert.is_nil(ok)
    assert.equal("handler", err.code)
    assert.equal(0, emu:completed(q, id))
    local again = assert(client:peek_lock(q, { timeout = 5 })) -- abandoned: delivered again
    assert.equal(2, again.delivery_count)
    handle = assert(again:lock_handle())
    assert(again:release())
    local r1, r2
    ok, r1, r2 = client:attach(handle, { max_renew = 30 }, function(m) return m.sequence_number, "done" end)
    assert.is_true(ok)
    assert.is_number(r1)
    assert.equal("done", r2)
    assert.equal(1, emu:completed(q, id))
    assert.equal(0, #emu:messages(q))
  end)

  it("with_lock leaves a message whose handler handed it over and released it", function()
    local q = queue()
    local id = H.unique("wl")
    assert(client:send(q, "hand me over", { message_id = id }))
    local other = assert(peeklock.client(emu.conn))
    local handle
    local ok, err = client:with_lock(q, { timeout = 5 }, function(msg)
      handle = assert(msg:lock_handle())
      assert(msg:release())
    end)
    assert.is_nil(err)
    assert.is_true(ok)
    assert.equal(0, emu:completed(q, id))             -- not completed by with_lock ...
    local msgs = emu:messages(q)
    assert.is_true(msgs[1].locked)                    -- ... nor abandoned: still locked
    local m = assert(other:attach(handle))
    assert.is_true(m:complete())
    assert.equal(1, emu:completed(q, id))
    other:close()
  end)

  it("lock_handle and release on a message without a held lock", function()
    local msg = locked()
    assert(msg:complete())
    local h, err = msg:lock_handle()
    assert.is_nil(h)
    assert.equal("state", err.code)
    assert.is_true(msg:release())                     -- nothing to let go of: just freed
    h, err = msg:lock_handle()
    assert.is_nil(h)
    assert.equal("state", err.code)
    local q = queue()
    assert(client:send(q, "rd"))
    local rd = assert(client:receive_and_delete(q, { timeout = 5 }))
    h, err = rd:lock_handle()
    assert.is_nil(h)
    assert.equal("state", err.code)
  end)

  if _VERSION == "Lua 5.4" and not jit then
    it("<close> abandons an attached message left unsettled", function()
      local msg, q = locked()
      local handle = assert(msg:lock_handle())
      assert(msg:release())
      local chunk = assert(load([[
        local client, handle = ...
        do
          local m <close> = assert(client:attach(handle))
          assert(m.lock_state == "held")
        end
      ]]))
      chunk(client, handle)
      local again = assert(client:peek_lock(q, { timeout = 5 }))
      assert.equal(2, again.delivery_count)
      assert(again:complete())
    end)
  end
end)
