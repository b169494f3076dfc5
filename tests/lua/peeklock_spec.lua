-- busted specs for require "peeklock", run under Lua 5.4 and LuaJIT by tests/lua/run.sh
-- against the real emulator over real sockets.
local H = require "helpers"
local peeklock = require "peeklock"

local emu, client

local function queue(settings)
  local name = H.unique("q"):lower()
  emu:create(name, settings)
  return name
end

describe("peeklock (" .. (jit and jit.version or _VERSION) .. ")", function()
  H.suite({ "--queue", "orders" }, function(e, c) emu, client = e, c end)

  describe("module", function()
    it("require returns the module table and sets no global", function()
      local interp = os.getenv("PEEKLOCK_LUA_INTERP")
      assert.is_string(interp, "run through tests/lua/run.sh")
      -- (SWIG's loader sets swig_type and swig_equals: peeklock.core's own puts them back,
      -- a global of that name the program had included)
      local code = [[
        swig_equals = "the program's"
        local before = {} for k, v in pairs(_G) do before[k] = v end
        local core = require "peeklock.core"
        assert(type(core) == "table" and core.pl_version)
        local m = require "peeklock"
        assert(type(m) == "table" and m.client and m.Client)
        for k, v in pairs(_G) do
          if before[k] ~= v then io.write("global set: ", tostring(k), "\n") os.exit(3) end
        end
        for k in pairs(before) do if _G[k] == nil then io.write("global gone: ", k, "\n") os.exit(3) end end
        io.write("clean\n")
      ]]
      local f = assert(io.popen(("%s -e %q 2>&1"):format(interp, code)))
      local out = f:read("*a")
      f:close()
      assert.equal("clean\n", out)
      assert.equal(package.loaded.peeklock, peeklock)
    end)

    it("exposes the version, codes and lock states", function()
      assert.equal("0.1.0", peeklock.version)
      assert.equal(-5, peeklock.codes.lock_lost)
      assert.equal("held", peeklock.lock_states[1])
    end)

    it("has a word for every error code of the core's list", function()
      local core, n = peeklock.core, 0
      for i = 0, core.pl_code_count() - 1 do
        if core.pl_code_at(i) < 0 then n = n + 1 end
      end
      -- one word per code (two codes with one word would collapse into one entry)
      local count = 0
      for _ in pairs(peeklock.codes) do count = count + 1 end
      assert.equal(n, count)
      assert.equal(core.PL_ECANCELED, peeklock.codes.cancelled)
      assert.equal(core.PL_EUNKNOWN, peeklock.codes.unknown_outcome)
      assert.equal(core.PL_ENOTFOUND, peeklock.codes.entity_not_found)
      assert.equal(core.PL_ELOCKLOST, peeklock.codes.lock_lost)
    end)
  end)

  describe("send and receive", function()
    it("reads the service's TimeSpan.MaxValue time to live as none", function()
      local q = queue()
      assert(client:send(q, "x"))
      assert(client:send(q, "y", { time_to_live = 40 }))
      local first = assert(client:peek_lock(q, { timeout = 5 }))
      local second = assert(client:peek_lock(q, { timeout = 5 }))
      assert.is_nil(first.time_to_live)
      assert.equal(40, second.time_to_live)
      assert(first:complete())
      assert(second:complete())
    end)

    it("sends and peek-locks with every message field, then completes once", function()
      local q = queue()
      local id = H.unique("id")
      assert(client:send(q, "hello\0world", {
        message_id = id, label = "M1", correlation_id = "c-1", content_type = "text/plain",
        time_to_live = 600,
        properties = { Priority = "High", Attempt = 3, Ratio = 0.5, Urgent = true,
                       Due = peeklock.datetime(1700000000) },
      }))
      local msg, err = client:peek_lock(q, { timeout = 5 })
      assert.is_nil(err)
      assert.is_table(msg)
      assert.equal("hello\0world", msg.body)
      assert.equal(id, msg.message_id)
      assert.equal("M1", msg.label)
      assert.equal("c-1", msg.correlation_id)
      assert.equal("text/plain", msg.content_type)
      assert.equal(1, msg.delivery_count)
      assert.is_number(msg.sequence_number)
      if math.type then -- Lua 5.3+: 64-bit counts and times are integers
        assert.equal("integer", math.type(msg.sequence_number))
        assert.equal("integer", math.type(msg.lock_remaining_ms))
      end
      assert.is_number(msg.enqueued_time)
      assert.is_number(msg.locked_until)
      assert.equal(600, msg.time_to_live)
      assert.equal("held", msg.lock_state)
      assert.is_true(msg.lock_remaining_ms > 0)
      local p = msg.properties
      assert.equal("High", p.Priority)
      assert.equal(3, p.Attempt)
      assert.equal(0.5, p.Ratio)
      assert.equal(true, p.Urgent)
      assert.matches("GMT", p.Due)
      local s = tostring(msg)
      assert.matches("peeklock.Message", s)
      local token = peeklock.core.pl_message_lock_token(msg._h)
      assert.is_string(token)
      assert.is_nil(s:find(token, 1, true))
      assert.is_true(msg:complete())
      assert.equal("settled", msg.lock_state)
      assert.equal(1, emu:completed(q, id))
      assert.equal(0, #emu:messages(q))
      msg:free()
    end)

    it("takes every broker field of the core's table as an option, by send and send_batch", function()
      local core, q = peeklock.core, queue()
      local n = core.pl_broker_field_count()
      assert.is_true(n >= 9)
      for i = 0, n - 1 do
        local arg, wire = core.pl_broker_field_arg(i), core.pl_broker_field_name(i)
        for _, batch in ipairs({ false, true }) do
          local v = ("%s-%s"):format(arg, batch and "b" or "s")
          if batch then assert(client:send_batch(q, { { body = "x", [arg] = v } }))
          else assert(client:send(q, "x", { [arg] = v })) end
          local msg = assert(client:receive_and_delete(q, { timeout = 5 }))
          assert.equal(v, core.pl_message_broker(msg._h, wire), wire) -- as the emulator stored it
          assert.equal(v, msg[arg], arg)
          msg:free()
        end
        -- the wire name is no option name, and nothing was sent
        assert.has_error(function() client:send(q, "x", { [wire] = "v" }) end,
          ("unknown option '%s' to 'send'"):format(wire))
      end
      assert.is_nil((client:receive_and_delete(q, { timeout = 0 })))
    end)

    it("waits a whole second for a timeout of half a second (the core rounds up)", function()
      local q = queue()
      -- pl_timeout_seconds: 0.5 s is a 1 s long poll, which the emulator holds for its second
      -- (rounded down, it was a 0 s poll that answered at once)
      for _, call in ipairs({ client.peek_lock, client.receive_and_delete }) do
        local t0 = peeklock.core.pl_now_mono_ms()
        local msg, err = call(client, q, { timeout = 0.5 })
        assert.is_nil(msg)
        assert.is_nil(err)
        assert.is_true(peeklock.core.pl_now_mono_ms() - t0 >= 950)
      end
      -- the option checks of with_lock, process (poll_timeout) and peeklock.resty use the same
      local I = require "peeklock.internal"
      assert.equal(1, I.opt_timeout("process", { poll_timeout = 0.5 }, "poll_timeout", 5))
      assert.equal(5, I.opt_timeout("process", {}, "poll_timeout", 5))
      assert.equal("bad option 'poll_timeout' to 'process' (must be 0..300 seconds)",
        H.refused(client.process, client, q, function() end, { poll_timeout = 300.5 }))
      assert.equal("bad option 'timeout' to 'peek_lock' (must be 0..300 seconds)",
        H.refused(client.peek_lock, client, q, { timeout = -0.5 }))
    end)

    it("returns nil, nil when nothing arrives within the timeout", function()
      local q = queue()
      local msg, err = client:peek_lock(q, { timeout = 0 })
      assert.is_nil(msg)
      assert.is_nil(err)
      msg, err = client:receive_and_delete(q, { timeout = 0 })
      assert.is_nil(msg)
      assert.is_nil(err)
    end)

    it("sends a batch and receives it with receive_and_delete", function()
      local q = queue()
      assert(client:send_batch(q, { "a", { body = "b", label = "second", properties = { N = 2 } } }))
      local m1 = assert(client:receive_and_delete(q, { timeout = 5 }))
      local m2 = assert(client:receive_and_delete(q, { timeout = 5 }))
      assert.equal("a", m1.body)
      assert.equal("b", m2.body)
      assert.equal("second", m2.label)
      assert.equal(2, m2.properties.N)
      assert.equal("none", m1.lock_state)
      -- the service marks every message of a batch so
      assert.equal("application/xml; charset=utf-8", m1.content_type)
      local ok, err = m1:complete()
      assert.is_nil(ok)
      assert.equal("state", err.code)
      assert.equal(0, #emu:messages(q))
    end)

    it("refuses a batched message with a content type, which the service would drop", function()
      local q = queue()
      local ok, err = pcall(function()
        client:send_batch(q, { "a", { body = "{}", content_type = "application/json" } })
      end)
      assert.is_false(ok)
      assert.matches("peeklock_spec%.lua:%d+: bad message #2 to 'send_batch' %(message: a batched message "
        .. "cannot carry a content type .*one by one%)", tostring(err))
      assert.equal(0, #emu:messages(q))
      -- sent on its own, the content type arrives
      assert(client:send(q, "{}", { content_type = "application/json" }))
      local m = assert(client:receive_and_delete(q, { timeout = 5 }))
      assert.equal("application/json", m.content_type)
    end)

    it("refuses a datetime with a fraction of a second and keeps whole seconds", function()
      local q = queue()
      -- the core's rule (pl_check_datetime, pl_outgoing_add_datetime), in its words
      local ok, err = pcall(function() return peeklock.datetime(1700000000.25) end)
      assert.is_false(ok)
      assert.matches("peeklock_spec%.lua:%d+: bad argument #1 to 'datetime' %(DateTime keeps whole seconds; "
        .. "round it or send it as a string%)$", tostring(err))
      -- changed after peeklock.datetime took it: the send refuses it, at the caller's line
      local d = peeklock.datetime(1700000000)
      d.unix = 1700000000.25
      assert.equal("peeklock: send: property 'At': DateTime keeps whole seconds; round it or send it as a "
        .. "string (invalid_argument)", H.refused(client.send, client, q, "d", { properties = { At = d } }))
      assert.equal(0, #emu:messages(q))
      assert(client:send(q, "d", { properties = { At = peeklock.datetime(1700000001) } }))
      local m = assert(client:receive_and_delete(q, { timeout = 5 }))
      assert.equal("Tue, 14 Nov 2023 22:13:21 GMT", m.properties.At)
    end)

    it("abandon makes the message come back with a higher delivery count", function()
      local q = queue()
      assert(client:send(q, "again"))
      local m = assert(client:peek_lock(q, { timeout = 5 }))
      assert.is_true(m:abandon())
      assert.equal("settled", m.lock_state)
      local m2 = assert(client:peek_lock(q, { timeout = 5 }))
      assert.equal("again", m2.body)
      assert.equal(2, m2.delivery_count)
      assert.is_true(m2:complete())
    end)

    it("renews a lock, and a lock that expired is reported lost", function()
      local q = queue({ lock_duration = 5 })
      assert(client:send(q, "renew me"))
      local m = assert(client:peek_lock(q, { timeout = 5 }))
      assert.is_true(m:renew())
      assert.equal("held", m.lock_state)
      local token = peeklock.core.pl_message_lock_token(m._h)
      emu:advance(30)
      local ok, err = m:renew()
      assert.is_nil(ok)
      assert.equal("lock_lost", err.code)
      assert.is_nil(tostring(err):find(token, 1, true))
      assert.is_nil(tostring(m):find(token, 1, true))
      assert.equal(404, err.status)
      assert.equal("lost", m.lock_state)
      ok, err = m:complete()
      assert.is_nil(ok)
      assert.equal("lock_lost", err.code)
      assert.equal(0, emu:completed(q, m.message_id))
    end)

    it("receives from a subscription and from a dead-letter queue", function()
      local topic = H.unique("t"):lower()
      emu:create(topic, { kind = "topic" })
      emu:create(topic .. "/subscriptions/s1", { kind = "subscription" })
      assert(client:send(topic, "to all", { label = "fan-out" }))
      local m = assert(client:peek_lock(topic .. "/subscriptions/s1", { timeout = 5 }))
      assert.equal("to all", m.body)
      assert.equal("fan-out", m.label)
      assert.is_true(m:complete())

      local q = queue({ max_delivery_count = 1 })
      assert(client:send(q, "poison", { message_id = "p-1" }))
      local p = assert(client:peek_lock(q, { timeout = 5 }))
      assert.is_true(p:abandon()) -- the only delivery allowed: dead-lettered
      local d = assert(client:peek_lock(q .. "/$DeadLetterQueue", { timeout = 5 }))
      assert.equal("poison", d.body)
      assert.equal("p-1", d.message_id)
      assert.equal("MaxDeliveryCountExceeded", d.properties.DeadLetterReason)
      assert.is_true(d:complete())
    end)

    it("settles exactly once", function()
      local q = queue()
      assert(client:send(q, "once"))
      local m = assert(client:peek_lock(q, { timeout = 5 }))
      assert.is_true(m:complete())
      local ok, err = m:complete()
      assert.is_nil(ok)
      assert.equal("state", err.code)
      ok, err = m:abandon()
      assert.is_nil(ok)
      assert.equal("state", err.code)
      assert.equal(1, emu:completed(q, m.message_id))
    end)

    it("reports a missing entity as entity_not_found (410) with a printable error", function()
      local ok, err = client:send("no-such-queue", "x")
      assert.is_nil(ok)
      assert.equal("entity_not_found", err.code)
      assert.equal(410, err.status)
      assert.is_true(peeklock.is_error(err))
      local s = tostring(err)
      assert.matches("entity_not_found", s)
      assert.matches("410", s)
      assert.is_nil(s:find("SharedAccessSignature", 1, true))
      local msg
      msg, err = client:peek_lock("no-such-queue", { timeout = 0 })
      assert.is_nil(msg)
      assert.equal("entity_not_found", err.code)
    end)

    it("reports a bad key as auth without echoing it", function()
      local bad = emu.conn:gsub("SharedAccessKey=[^;]+", "SharedAccessKey=not-the-key")
      local c = assert(peeklock.client(bad))
      local ok, err = c:send("orders", "x")
      assert.is_nil(ok)
      assert.equal("auth", err.code)
      assert.equal(401, err.status)
      assert.is_nil(tostring(err):find("not-the-key", 1, true))
      c:close()
    end)

    it("parses connection strings and signs SAS tokens", function()
      local cs = assert(peeklock.parse_connection_string(emu.conn))
      assert.equal("http://127.0.0.1:" .. emu.port, cs.endpoint)
      assert.is_true(cs.development_emulator)
      assert.is_true(cs.has_key)
      local tok = assert(peeklock.sas_token("https://ns.servicebus.windows.net/q", "k", "secret", 2000000000))
      assert.matches("^SharedAccessSignature ", tok)
      assert.matches("se=2000000000", tok)
      -- the core's refusals raise at the caller's line, in its words
      assert.equal("peeklock: parse_connection_string: connection string: part 2 has no '=' (expected "
                   .. "Name=Value) (invalid_argument)", H.refused(peeklock.parse_connection_string, "Endpoint=;nonsense"))
      assert.equal("peeklock: sas_token: uri: must be a non-empty string (invalid_argument)",
                   H.refused(peeklock.sas_token, "", "k", "secret", 2000000000))
      -- an expiry that fits no int64_t (the C side's) is refused by the core's range
      -- (pl_check_expiry), in its words; Python's sas_token has the same edges
      for _, bad in ipairs({ math.huge, -math.huge, 0 / 0, 2 ^ 63, -(2 ^ 63) }) do
        local why = H.refused(peeklock.sas_token, "https://ns.servicebus.windows.net/q", "k", "secret", bad)
        assert.truthy(why:find("peeklock: sas_token: expiry: must be a 64-bit Unix time (seconds), got ", 1, true), why)
      end
      for _, edge in ipairs({ 9.21e18, 2 ^ 63 - 1024 }) do
        local t = assert(peeklock.sas_token("https://ns.servicebus.windows.net/q", "k", "secret", edge))
        assert.truthy(t:find("&se=" .. string.format("%.0f", edge) .. "&", 1, true), t)
      end
      assert.equal("bad argument #4 to 'sas_token' (number expected, got string)",
                   H.refused(peeklock.sas_token, "https://ns.servicebus.windows.net/q", "k", "secret", "1"))
    end)

    it("counts operations in client:stats()", function()
      local c = assert(peeklock.client(emu.conn))
      local q = queue()
      assert(c:send(q, "s"))
      local m = assert(c:peek_lock(q, { timeout = 5 }))
      assert(m:complete())
      local st = assert(c:stats())
      assert.equal(1, st.sent)
      assert.equal(1, st.received)
      assert.equal(1, st.completed)
      -- the renewer's figures, zeros before the client's first with_lock
      assert.same({ held = 0, renewals = 0, failures = 0, lost = 0, cap_reached = 0 },
                  { held = st.renewer.held, renewals = st.renewer.renewals, failures = st.renewer.failures,
                    lost = st.renewer.lost, cap_reached = st.renewer.cap_reached })
      if math.type then -- Lua 5.3+: counts are integers
        assert.equal("integer", math.type(st.sent))
        assert.equal("integer", math.type(st.renewer.renewals))
      end
      c:close()
    end)

    it("counts failed calls and failed renewals in client:stats()", function()
      local c = assert(peeklock.client({ connection_string = emu.conn, max_retries = 1, retry_base_ms = 5 }))
      local q = queue()
      emu:fault({ operation = "send", entity = q, status = 503, count = 2 })
      local ok, err = c:send(q, "s")
      assert.is_nil(ok)
      assert.equal("throttled", err.code)
      assert(c:send(q, "s"))
      local m = assert(c:peek_lock(q, { timeout = 5 }))
      emu:fault({ operation = "renew", entity = q, status = 503, count = 1 })
      assert(m:renew()) -- one failed attempt, then renewed
      assert(m:complete())
      local st = assert(c:stats())
      assert.equal(1, st.failed)
      assert.equal(1, st.renew_failures)
      assert.equal(2, st.retries)
      if math.type then assert.equal("integer", math.type(st.failed)) end
      c:close()
    end)
  end)

  describe("with_lock", function()
    it("completes when fn returns normally and passes its results through", function()
      local q = queue()
      local id = H.unique("wl")
      assert(client:send(q, "work", { message_id = id }))
      local seen
      local ok, a, b = client:with_lock(q, { timeout = 5 }, function(msg)
        seen = msg.body
        assert.equal("held", msg.lock_state)
        return "r1", 2
      end)
      assert.is_true(ok)
      assert.equal("r1", a)
      assert.equal(2, b)
      assert.equal("work", seen)
      assert.equal(1, emu:completed(q, id))
      assert.equal(0, #emu:messages(q))
    end)

    it("abandons and returns nil, err when fn raises", function()
      local q = queue()
      local id = H.unique("wl")
      assert(client:send(q, "fail", { message_id = id }))
      local ok, err = client:with_lock(q, { timeout = 5 }, function() error({ reason = "boom" }) end)
      assert.is_nil(ok)
      assert.equal("handler", err.code)
      assert.same({ reason = "boom" }, err.cause)
      assert.equal(0, emu:completed(q, id))
      local msgs = emu:messages(q)
      assert.equal(1, #msgs)
      assert.is_false(msgs[1].locked)
      local again = assert(client:peek_lock(q, { timeout = 5 }))
      assert.equal(2, again.delivery_count)
      assert(again:complete())
    end)

    it("completes nothing and says so when the lock is lost", function()
      local q = queue({ lock_duration = 5 })
      local id = H.unique("wl")
      assert(client:send(q, "lost", { message_id = id }))
      local ok, err = client:with_lock(q, { timeout = 5 }, function()
        emu:advance(60) -- the server-side lock expires; the message is available again
      end)
      assert.is_nil(ok)
      assert.equal("lock_lost", err.code)
      assert.matches("nothing was completed", err.message)
      -- the core's words (pl_finish_error), the same in every binding
      assert.truthy(err.message:find("lock on message %d+ in '" .. q:gsub("%p", "%%%0") .. "' was lost while"))
      assert.equal(0, emu:completed(q, id))
      assert.equal(1, #emu:messages(q))
    end)

    it("returns nil, nil without calling fn when no message arrives", function()
      local q = queue()
      local called = false
      local ok, err = client:with_lock(q, { timeout = 0 }, function() called = true end)
      assert.is_nil(ok)
      assert.is_nil(err)
      assert.is_false(called)
    end)

    it("lets fn settle the message itself", function()
      local q = queue()
      assert(client:send(q, "self"))
      local ok = client:with_lock(q, { timeout = 5 }, function(msg) assert(msg:abandon()) end)
      assert.is_true(ok)
      assert.equal(1, #emu:messages(q))
      local m = assert(client:receive_and_delete(q, { timeout = 5 }))
      assert.equal(2, m.delivery_count)
    end)

    it("says closed when the client closed (abandoning the message) while fn ran", function()
      local q = queue()
      local c = assert(peeklock.client(emu.conn))
      assert(c:send(q, "behind its back", { message_id = "bb" }))
      local ok, err = c:with_lock(q, { timeout = 5 }, function() c:close({ unlock_held = true }) end)
      assert.is_nil(ok)
      assert.equal("closed", err.code)
      assert.truthy(err.message:find("abandoned", 1, true))
      assert.equal(0, emu:completed(q, "bb"))            -- not completed ...
      local m = assert(client:receive_and_delete(q, { timeout = 5 })) -- ... and back at once
      assert.equal("bb", m.message_id)
    end)

    it("says unknown_outcome when fn's own complete had an unknown outcome", function()
      local q = queue()
      assert(client:send(q, "lost answer", { message_id = "lu" }))
      emu:fault({ operation = "complete", entity = q, drop = true, after = true, count = 1 })
      local inner
      local ok, err = client:with_lock(q, { timeout = 5 }, function(msg)
        local r, e = msg:complete()
        inner = e and e.code
        assert.is_nil(r)
      end)
      assert.equal("unknown_outcome", inner)
      assert.is_nil(ok)
      assert.equal("unknown_outcome", err.code)
      assert.truthy(err.message:find("had an unknown outcome; it may or may not have been completed", 1, true))
      assert.equal(1, emu:completed(q, "lu"))
    end)

    it("keeps a 5 s lock alive across several lock durations through the C renewer", function()
      -- its own emulator: the shared one's clock was advanced by other tests
      local emu2 = H.start_emulator({ "--queue", "orders" })
      local c = assert(peeklock.client(emu2.conn))
      local ok, err, renewals, id
      local done, perr = pcall(function()
        emu2:create("slow", { lock_duration = 5 })
        id = H.unique("wl")
        assert(c:send("slow", "long", { message_id = id }))
        ok, err = c:with_lock("slow", { timeout = 5, max_renew = 60 }, function(msg)
          -- hold the 5 s lock for over two lock durations, kept alive by the renewer
          local socket = require "socket"
          local start = socket.gettime()
          renewals = H.wait_for(function()
            local st = c:renewer_stats()
            return st.renewals >= 3 and socket.gettime() - start > 10.5 and st.renewals
          end, 30)
          assert.equal("held", msg.lock_state)
          local msgs = emu2:messages("slow")
          assert.is_true(msgs[1].locked)
          assert.is_true(msg.lock_remaining_ms > 0)
        end)
        assert.is_nil(err)
        assert.is_true(ok)
        assert.is_number(renewals, "the renewer did not renew 3 times within 30 s")
        assert.is_true(renewals >= 3)
        -- client:stats() counts the same renewals (its renewer's), each landing with time left
        local rs = c:stats().renewer
        assert.is_true(rs.renewals >= 3 and rs.failures == 0 and rs.held == 0, rs)
        local landed = 0
        for i = 1, peeklock.core.PL_SLACK_BUCKETS do landed = landed + rs.slack_buckets[i] end
        assert.equal(rs.renewals, landed)
        if math.type then assert.equal("integer", math.type(rs.renewals)) end
        local lost_before = rs.lost
        assert.equal(1, emu2:completed("slow", id))
        assert.equal(0, #emu2:messages("slow"))

        -- the renewer finds the lock gone (server clock jumps past it): nothing is completed
        local id2 = H.unique("wl")
        assert(c:send("slow", "lost later", { message_id = id2 }))
        local state_seen
        ok, err = c:with_lock("slow", { timeout = 5 }, function(msg)
          emu2:advance(60)
          state_seen = H.wait_for(function() return msg.lock_state ~= "held" and msg.lock_state end, 15)
        end)
        assert.equal("lost", state_seen)
        assert.is_nil(ok)
        assert.equal("lock_lost", err.code)
        assert.matches("nothing was completed %(.+%)", err.message) -- the renewer's reason
        assert.equal(0, emu2:completed("slow", id2))
        assert.equal(lost_before + 1, c:stats().renewer.lost)
      end)
      c:close()
      emu2:stop()
      assert(done, perr)
    end)
  end)

  if _VERSION == "Lua 5.4" and not jit then
    describe("<close>", function()
      it("abandons an unsettled message at scope exit and frees it", function()
        local q = queue()
        assert(client:send(q, "closing"))
        local chunk = assert(load([[
          local client, q = ...
          local kept
          do
            local m <close> = assert(client:peek_lock(q, { timeout = 5 }))
            kept = m
          end
          return kept
        ]]))
        local kept = chunk(client, q)
        assert.equal("peeklock.Message(freed)", tostring(kept))
        local ok, err = kept:complete()
        assert.is_nil(ok)
        assert.equal("state", err.code)
        local m2 = assert(client:peek_lock(q, { timeout = 5 }))
        assert.equal(2, m2.delivery_count)
        assert(m2:complete())
      end)

      it("leaves a settled message settled", function()
        local q = queue()
        assert(client:send(q, "closing2"))
        local chunk = assert(load([[
          local client, q = ...
          do
            local m <close> = assert(client:peek_lock(q, { timeout = 5 }))
            assert(m:complete())
          end
        ]]))
        chunk(client, q)
        assert.equal(0, #emu:messages(q))
      end)
    end)
  end

  describe("bad input", function()
    it("raises an error naming the argument, never crashes", function()
      assert.has_error(function() peeklock.client(42) end,
        "bad argument #1 to 'client' (connection string or options table expected, got number)")
      assert.has_error(function() client:send(42, "x") end,
        "bad argument #1 to 'send' (string expected, got number)")
      assert.has_error(function() client:send("q", { 1 }) end,
        "bad argument #2 to 'send' (string body expected, got table)")
      assert.has_error(function() client:send("q", "x", "opts") end,
        "bad argument #3 to 'send' (table or nil expected, got string)")
      assert.has_error(function() client:send("q", "x", { properties = { P = {} } }) end)
      assert.has_error(function() client:send("q", "x", { message_id = 5 }) end)
      assert.has_error(function() client:send("q", "x", { time_to_live = "soon" }) end)
      assert.has_error(function() client:send("q", "x", { messageid = "typo" }) end,
        "unknown option 'messageid' to 'send'")
      assert.has_error(function() client:peek_lock("q", { timeout = "x" }) end)
      assert.has_error(function() client:peek_lock("q", { timeout = 301 }) end)
      assert.has_error(function() client:send_batch("q", "x") end)
      assert.has_error(function() client:send_batch("q", { 1 }) end)
      assert.has_error(function() client:with_lock("q", {}, "nope") end)
      -- numbers the C side would cast to an integer are refused first, never cast when infinite
      assert.has_error(function() client:with_lock("q", { max_renew = math.huge }, function() end) end,
        "bad option 'max_renew' to 'with_lock' (must be a positive number of seconds, at most 1000000000)")
      assert.has_error(function() peeklock.datetime(math.huge) end,
        "bad argument #1 to 'datetime' (must be between 1970 and 9999)")
      assert.has_error(function() peeklock.datetime(0 / 0) end,
        "bad argument #1 to 'datetime' (must be between 1970 and 9999)")
      assert.has_error(function() peeklock.datetime("soon") end,
        "bad argument #1 to 'datetime' (number expected, got string)")
      assert.has_error(function() client.send("q", "x") end)
      assert.has_error(function() peeklock.Message.complete({}) end)
      assert.has_error(function() peeklock.client({ connection_string = 7 }) end)
      assert.has_error(function() peeklock.sas_token(1, 2, 3, 4) end)
      -- the raw SWIG layer checks types too
      assert.has_error(function() peeklock.core.pl_send("not a client", "q", nil) end)
      assert.has_error(function() peeklock.core.message_body({}) end)
      assert.has_error(function() peeklock.core.release("x") end)
    end)

    it("words every bad send option, points at the caller's line, and sends nothing", function()
      local q = queue()
      -- a datetime changed after peeklock.datetime checked it
      local function changed(v) local d = peeklock.datetime(0); d.unix = v; return d end
      local dt_range = "peeklock: send: property 'D': must be between 1970 and 9999 (invalid_argument)"
      local cases = {
        { { content_type = 5 }, "bad option 'content_type' to 'send' (string expected, got number)" },
        { { properties = { D = changed(math.huge) } }, dt_range },
        { { properties = { D = changed(1700000000.5) } }, "peeklock: send: property 'D': DateTime keeps whole "
          .. "seconds; round it or send it as a string (invalid_argument)" },
        { { properties = { D = changed(0 / 0) } }, dt_range },
        { { properties = { D = changed("soon") } }, "bad property 'D' in 'send' (peeklock.datetime of a number expected)" },
        -- the values are the core's to refuse (docs/c-api.md), in its words, raised as these are
        { { time_to_live = "soon" }, "bad option 'time_to_live' to 'send' (number expected, got string)" },
        { { time_to_live = 0 }, "bad option 'time_to_live' to 'send' (must be a positive number of seconds)" },
        { { time_to_live = -1 }, "bad option 'time_to_live' to 'send' (must be a positive number of seconds)" },
        { { time_to_live = 0 / 0 }, "bad option 'time_to_live' to 'send' (must be a positive number of seconds)" },
        { { content_type = "" }, "bad option 'content_type' to 'send' (must not be empty)" },
        { { scheduled_enqueue_time = -1 },
          "bad option 'scheduled_enqueue_time' to 'send' (must be between 1970 and 9999)" },
        { { scheduled_enqueue_time = "soon" },
          "bad option 'scheduled_enqueue_time' to 'send' (Unix time (number) expected, got string)" },
        { { scheduled_enqueue_time = math.huge },
          "bad option 'scheduled_enqueue_time' to 'send' (must be between 1970 and 9999)" },
        { { scheduled_enqueue_time = 0 / 0 },
          "bad option 'scheduled_enqueue_time' to 'send' (must be between 1970 and 9999)" },
        -- the core floors to the second the time falls in, as Python's binding does: 1969
        { { scheduled_enqueue_time = -0.5 },
          "bad option 'scheduled_enqueue_time' to 'send' (must be between 1970 and 9999)" },
        { { force_persistence = "yes" }, "bad option 'force_persistence' to 'send' (boolean expected, got string)" },
        { { properties = "P" }, "bad option 'properties' to 'send' (table expected, got string)" },
        { { label = false }, "bad option 'label' to 'send' (string expected, got boolean)" },
        { { reply_to_session_id = {} }, "bad option 'reply_to_session_id' to 'send' (string expected, got table)" },
        { { "positional" }, "unknown option '1' to 'send'" },
        { { ["label\0x"] = "v" }, "unknown option 'label\0x' to 'send'" }, -- not taken for label
        -- the C core would cut a string at a NUL byte: refused, never sent shortened
        { { label = "a\0b" }, "bad option 'label' to 'send' (string without NUL bytes expected, got string)" },
        { { content_type = "text/plain\0" },
          "bad option 'content_type' to 'send' (string without NUL bytes expected, got string)" },
        { { properties = { P = "a\0b" } }, "bad property 'P' in 'send' (name and value without NUL bytes expected)" },
        { { properties = { ["Q\0R"] = "v" } },
          "bad property 'Q\0R' in 'send' (name and value without NUL bytes expected)" },
        { { properties = { [1] = "x" } }, "bad property name in 'send' (string expected, got number)" },
        { { properties = { P = print } },
          "bad property 'P' in 'send' (string, number, boolean or peeklock.datetime expected, got function)" },
        { { properties = { P = {} } },
          "bad property 'P' in 'send' (string, number, boolean or peeklock.datetime expected, got table)" },
      }
      for _, c in ipairs(cases) do
        local ok, err = pcall(client.send, client, q, "x", c[1])
        assert.is_false(ok)
        assert.equal(c[2], (tostring(err):gsub("^[^:]*:%d+: ", "")))
        -- the position is the caller's (this spec), not a line inside peeklock
        ok, err = pcall(function() client:send(q, "x", c[1]) end)
        assert.matches("peeklock_spec%.lua:%d+: ", tostring(err))
      end
      assert.has_error(function() client:send_batch(q, { "a", { body = "b", ttl = 1 } }) end,
        "unknown option 'ttl' to 'send_batch'")
      local ok, err = pcall(function() client:send_batch(q, { "a", { body = "b", ttl = 1 } }) end)
      assert.is_false(ok)
      assert.matches("peeklock_spec%.lua:%d+: unknown option 'ttl' to 'send_batch'", tostring(err))
      ok, err = pcall(function() client:send_batch(q, { "a", 5 }) end)
      assert.is_false(ok)
      assert.matches("peeklock_spec%.lua:%d+: bad message #2 to 'send_batch' %(string or {body=string} expected, got number%)",
        tostring(err))
      -- nothing went out; the options that are right still work, every type of property
      local big = math.type and math.tointeger(2 ^ 62) or 2 ^ 52
      assert(client:send(q, "ok", { scheduled_enqueue_time = 0.5, force_persistence = true, reply_to = "r",
                                    properties = { Big = big, Neg = -7, Half = -0.5, Off = false } }))
      local msg = assert(client:peek_lock(q, { timeout = 5 }))
      assert.equal("ok", msg.body)
      assert.equal("r", msg.reply_to)
      assert.same({ Big = big, Neg = -7, Half = -0.5, Off = false }, msg.properties)
      assert(msg:complete())
      assert.is_nil((client:peek_lock(q, { timeout = 0 })))
    end)

    -- The argument error fn raises, without its position, which must be this spec's line.
    local function raised(fn)
      local ok, err = pcall(fn)
      assert.is_false(ok)
      err = tostring(err)
      assert.matches("^[^:]*peeklock_spec%.lua:%d+: ", err) -- this spec's line, never peeklock's
      return (err:gsub("^[^:]*:%d+: ", ""))
    end

    it("refuses what the core refuses in max_renew and broker strings, in its words", function()
      local q = queue()
      -- max_renew: pl_max_renew_ms's rule (0 no longer means the default), before any receive
      assert(client:send(q, "kept"))
      local held = assert(client:peek_lock(q, { timeout = 5 })) -- kept: a dropped message is abandoned
      local handle = assert(held:lock_handle())
      for _, v in ipairs({ 0, -1, 1e9 + 1, math.huge, -math.huge }) do
        local words = "(must be a positive number of seconds, at most 1000000000)"
        assert.equal("bad option 'max_renew' to 'with_lock' " .. words,
          raised(function() client:with_lock(q, { timeout = 0, max_renew = v }, function() end) end))
        assert.equal("bad option 'max_renew' to 'attach' " .. words,
          raised(function() client:attach(handle, { max_renew = v }) end))
        assert.equal("bad option 'max_renew' to 'process' " .. words,
          raised(function() client:process(q, function() end, { max_renew = v }) end))
      end
      -- the largest cap is taken, and a fraction of a ms is rounded up, never to the default
      local ok, seq = client:attach(handle, { max_renew = 1e9 }, function(m) return m.sequence_number end)
      assert.is_true(ok, tostring(seq))
      assert.equal(held.sequence_number, seq)
      held:free() -- completed through the attached copy
      assert.equal(1, peeklock.core.pl_max_renew_ms(0.0001))
      -- an empty broker string: refused for every field, by send and send_batch, nothing sent
      for i = 0, peeklock.core.pl_broker_field_count() - 1 do
        local f = peeklock.core.pl_broker_field_arg(i)
        local want = ("bad option '%s' to 'send' (must not be empty (leave it unset instead))"):format(f)
        assert.equal(want, raised(function() client:send(q, "x", { [f] = "" }) end))
        want = ("bad option '%s' to 'send_batch' (must not be empty (leave it unset instead))"):format(f)
        assert.equal(want, raised(function() client:send_batch(q, { "a", { body = "b", [f] = "" } }) end))
      end
      assert.equal("bad option 'partition_key' to 'send' (must be at most 128 characters)",
        raised(function() client:send(q, "x", { partition_key = ("p"):rep(129) }) end))
      assert.is_nil((client:peek_lock(q, { timeout = 0 })))
    end)

    it("argument errors are worded as documented and point at the caller's line", function()
      local q = queue()
      local cases = {
        { function() client:send(42, "x") end, "bad argument #1 to 'send' (string expected, got number)" },
        { function() client:send(q, 7) end, "bad argument #2 to 'send' (string body expected, got number)" },
        { function() client:send(q, "x", false) end, "bad argument #3 to 'send' (table or nil expected, got boolean)" },
        { function() client.send(q, "x") end,
          "bad self to 'send' (peeklock.Client expected, got string; use client:send(...))" },
        { function() client:peek_lock(nil) end, "bad argument #1 to 'peek_lock' (string expected, got nil)" },
        { function() client:send(q .. "\0x", "x") end,
          "bad argument #1 to 'send' (string without NUL bytes expected, got string)" },
        { function() client:peek_lock(q .. "\0x") end,
          "bad argument #1 to 'peek_lock' (string without NUL bytes expected, got string)" },
        { function() client:with_lock(q .. "\0x", {}, function() end) end,
          "bad argument #1 to 'with_lock' (string without NUL bytes expected, got string)" },
        -- checks a few calls deep in peeklock.lua point at this line too
        { function() client:with_lock(q, 5, function() end) end,
          "bad argument #2 to 'with_lock' (table or nil expected, got number)" },
        { function() client:with_lock(q, { max_renew = "long" }, function() end) end,
          "bad option 'max_renew' to 'with_lock' (number expected, got string)" },
        { function() client:send_batch(7, {}) end, "bad argument #1 to 'send_batch' (string expected, got number)" },
        { function() client:send_batch(q, "x") end,
          "bad argument #2 to 'send_batch' (table (list of messages) expected, got string)" },
        { function() peeklock.Client.send_batch({}, q, {}) end,
          "bad self to 'send_batch' (peeklock.Client expected, got table; use client:send_batch(...))" },
        { function() peeklock.sas_token(q, 1, "k", 0) end, "bad argument #2 to 'sas_token' (string expected, got number)" },
        { function() client:with_lock(q, { timeout = "x" }, function() end) end,
          "bad option 'timeout' to 'with_lock' (number expected, got string)" },
        { function() client:with_lock(q, { timeout = 500 }, function() end) end,
          "bad option 'timeout' to 'with_lock' (must be 0..300 seconds)" },
        { function() client:process(q, function() end, { poll_timeout = 301 }) end,
          "bad option 'poll_timeout' to 'process' (must be 0..300 seconds)" },
        -- through a C function (pcall) too: the line that made the call
        { function() local _, e = pcall(client.send, client, 42, "x"); error(e, 0) end,
          "bad argument #1 to 'send' (string expected, got number)" },
        { function() peeklock.client({ connection_string = emu.conn .. "\0x" }) end,
          "peeklock.client: client_new: option 'connection_string' must not contain NUL bytes" },
        { function() client:peek_lock(q, "x") end,
          "bad argument #2 to 'peek_lock' (table or nil expected, got string)" },
        { function() client:peek_lock(q, { timeout = "x" }) end,
          "bad option 'timeout' to 'peek_lock' (number expected, got string)" },
        { function() client:peek_lock(q, { timeout = 0 / 0 }) end,
          "bad option 'timeout' to 'peek_lock' (must be 0..300 seconds)" },
        { function() client:process(q, function() end, { poll_timeout = 0 / 0 }) end,
          "bad option 'poll_timeout' to 'process' (must be 0..300 seconds)" },
        { function() client:process(q, function() end, { max_wait = 0 / 0, batch = 2 }) end,
          "bad option 'max_wait' to 'process' (must be 0..3600 seconds)" },
        { function() client:process(q, function() end, { max_renew = 0 / 0 }) end,
          "bad option 'max_renew' to 'process' (must be a positive number of seconds, at most 1000000000)" },
        { function() client:peek_lock(q, { timeout = 301 }) end,
          "bad option 'timeout' to 'peek_lock' (must be 0..300 seconds)" },
        { function() client:peek_lock(q, { timeout = 1e300 }) end,
          "bad option 'timeout' to 'peek_lock' (must be 0..300 seconds)" },
        { function() client:receive_and_delete(q, { timeout = -1 }) end,
          "bad option 'timeout' to 'receive_and_delete' (must be 0..300 seconds)" },
        -- a misspelt option is refused, not ignored
        { function() client:peek_lock(q, { timout = 1 }) end, "unknown option 'timout' to 'peek_lock'" },
        { function() client:receive_and_delete(q, { 5 }) end, "unknown option '1' to 'receive_and_delete'" },
        { function() client:with_lock(q, { timout = 1 }, function() end) end,
          "unknown option 'timout' to 'with_lock'" },
        { function() client.receive_and_delete({}, q) end,
          "bad self to 'receive_and_delete' (peeklock.Client expected, got table; use client:receive_and_delete(...))" },
      }
      for _, c in ipairs(cases) do assert.equal(c[2], raised(c[1])) end
      assert.equal(0, #emu:messages(q))
      -- a fractional timeout is a number like any other; an option table's fields are read
      -- through its __index, as a Lua table read does
      assert.is_nil((client:peek_lock(q, { timeout = 0.5 })))
      assert.equal("bad option 'timeout' to 'receive_and_delete' (number expected, got string)",
        raised(function() client:receive_and_delete(q, setmetatable({}, { __index = { timeout = "x" } })) end))
      -- a table whose metatable marks it a client (as peeklock.resty's do) is one
      local Sub = setmetatable({ _peeklock_client = true }, { __index = peeklock.Client })
      Sub.__index = Sub
      local sub = setmetatable({ _h = client._h }, Sub)
      assert(sub:send(q, "from sub"))
      local m = assert(sub:receive_and_delete(q, { timeout = 5 }))
      assert.equal("from sub", m.body)
      assert.equal(sub, m._client)
      -- a closed client answers nil, err before looking at the arguments
      local c = assert(peeklock.client(emu.conn))
      c:close()
      for _, call in ipairs({ function() return c:send(42) end, function() return c:peek_lock(q) end,
                              function() return c:receive_and_delete(nil, 5) end }) do
        local ok, err = call()
        assert.is_nil(ok)
        assert.equal("closed", err.code)
      end
      local _, err = c:peek_lock(q)
      assert.equal("peek_lock", err.op)
      -- a client closed by Lua code the call itself runs (the options' __index) is closed
      -- when the request would go out: nil, err, nothing sent, no freed client used
      local c2 = assert(peeklock.client(emu.conn))
      local closing = setmetatable({}, { __index = function() c2:close(); return 0 end })
      local ok2, err2 = c2:peek_lock(q, closing)
      assert.is_nil(ok2)
      assert.equal("closed", err2.code)
      ok2, err2 = c2:receive_and_delete(q, { timeout = 0 })
      assert.is_nil(ok2)
      assert.equal("closed", err2.code)
    end)

    it("raises the core's refusal of a value at the caller's line", function()
      assert.equal("peeklock: client: connection string: Endpoint: has no host name (invalid_argument)",
                   H.refused(peeklock.client, "Endpoint=sb://;SharedAccessKeyName=x"))
      -- an empty ca_file is not "no file" (nil is the default bundle): refused by the core
      local err = H.refused(peeklock.client, { endpoint = "http://127.0.0.1:1", key_name = "k", key = "v",
                                               ca_file = "" })
      assert.equal("peeklock: client: ca_file: must not be empty (NULL: the default CA bundle) (invalid_argument)", err)
      -- renewer options: refused when the renewer is made, at the call that makes it
      local c = assert(peeklock.client({ endpoint = "http://127.0.0.1:1", key_name = "k", key = "v",
                                         renewer = { max_connections = 1000 } }))
      err = H.refused(c.with_lock, c, "orders", function() end)
      assert.matches("^peeklock: renewer: max_connections: must be .*%(invalid_argument%)$", err)
      c:close()
      local q = queue()
      assert.equal("peeklock: send: entity: must not contain '.' or '..' segments (invalid_argument)",
                   H.refused(client.send, client, "../etc", "x"))
      assert.matches("^peeklock: send: property name: must be an HTTP token .*%(invalid_argument%)$",
                     H.refused(client.send, client, q, "x", { properties = { ["bad name"] = 1 } }))
      assert.equal("peeklock: peek_lock: entity: must not contain '.' or '..' segments (invalid_argument)",
                   H.refused(client.peek_lock, client, "a/../b", { timeout = 0 }))
      assert.equal("peeklock: receive_and_delete: entity: must not contain '.' or '..' segments "
                   .. "(invalid_argument)", H.refused(client.receive_and_delete, client, "..", { timeout = 0 }))
      assert.equal("peeklock: send_batch: entity: must not contain '.' or '..' segments (invalid_argument)",
                   H.refused(client.send_batch, client, "../etc", { "x" }))
      assert.equal("peeklock: send_batch: messages: must not be empty (invalid_argument)",
                   H.refused(client.send_batch, client, q, {}))
      assert.equal("peeklock: process: entity: must not contain '.' or '..' segments (invalid_argument)",
                   H.refused(client.process, client, "../etc", function() end, { max_messages = 1 }))
      assert.equal(0, #emu:messages(q)) -- nothing sent
      -- what is not an argument error stays nil, err
      local ok, err2 = client:send("no-such-queue", "x")
      assert.is_nil(ok)
      assert.equal("entity_not_found", err2.code)
    end)

    it("refuses option numbers that fit no C integer before the cast", function()
      local base = { endpoint = "http://127.0.0.1:1", key_name = "k", key = "v" }
      local function with(k, v)
        local o = {}
        for kk, vv in pairs(base) do o[kk] = vv end
        o[k] = v
        return o
      end
      -- 2^32 + 5 would have become 5 in a C int; math.huge and 2^63 are undefined in a cast (NaN is
      -- refused as no number by the Lua layer)
      for _, case in ipairs({ { "pool_size", 2 ^ 32 + 5, "int" }, { "pool_size", math.huge, "int" },
                              { "max_retries", 1.5, "int" }, { "token_lifetime_s", 2 ^ 31, "int" },
                              { "connect_timeout_ms", 2 ^ 63, "long" }, { "retry_max_ms", -math.huge, "long" } }) do
        local err = H.refused(peeklock.client, with(case[1], case[2]))
        assert.matches(("^peeklock%%.client: client_new: option '%s' must be an integer that fits a C %s %%(got ")
          :format(case[1], case[3]), err)
      end
      -- renewer options the same, raised by the call that makes the renewer
      local c = assert(peeklock.client(with("renewer", { max_connections = 2 ^ 40 })))
      assert.matches("^peeklock%.client: renewer_new: option 'max_connections' must be an integer that fits a C int",
                     H.refused(c.with_lock, c, "orders", function() end))
      c:close()
      -- the raw natives, past the Lua layer's checks: each row's type and range (long rows
      -- that no spec above reaches: a fraction or 2^63 is refused; jitter must be a number)
      local core = peeklock.core
      local _, raw = core.client_new({ endpoint = "http://127.0.0.1:1", key_name = "k", key = "v" })
      for _, case in ipairs({ { "margin_floor_ms", 0.5, "must be an integer that fits a C long %(got 0%.5" },
                              { "default_max_renew_ms", 2 ^ 63, "must be an integer that fits a C long %(got " },
                              { "request_timeout_ms", "1", "must be a number$" },
                              { "jitter", "0.1", "must be a number$" } }) do
        local ok, e = pcall(core.renewer_new, raw, { [case[1]] = case[2] })
        assert.is_false(ok)
        assert.matches("renewer_new: option '" .. case[1] .. "' " .. case[3], e)
      end
      local threw, err = pcall(core.client_new, { endpoint = "http://127.0.0.1:1", retry_base_ms = -2 ^ 64 })
      assert.is_false(threw)
      assert.matches("client_new: option 'retry_base_ms' must be an integer that fits a C long", err)
      -- client_new refuses a key or a type first, in peeklock.client's words (it walks the table)
      for _, case in ipairs({ { { key_name = 7 }, "bad option 'key_name' to 'client' (string expected, got number)" },
                              { { bogus = 1 }, "unknown option 'bogus' to 'client'" },
                              { { [1] = "x" }, "unknown option '1' to 'client'" },
                              { { renewer = { jitter = "x" } },
                                "bad option 'jitter' to 'client' (number expected, got string)" } }) do
        threw, err = pcall(core.client_new, case[1])
        assert.is_false(threw)
        assert.equal(case[2], err)
      end
      -- a fitting value of every type is taken
      local rc, r = core.renewer_new(raw, { margin_floor_ms = 500, default_max_renew_ms = 2000, jitter = 0,
                                            max_connections = 1, request_timeout_ms = 1000 })
      assert.equal(0, rc)
      core.release(r)
      core.release(raw)
      -- the raw binding: an int64_t argument that fits none
      for _, bad in ipairs({ math.huge, 0 / 0, 2 ^ 63, 0.5 }) do
        local ok, e = pcall(peeklock.core.pl_sas_token, "https://ns/q", "k", "v", bad)
        assert.is_false(ok)
        assert.matches("pl_sas_token: argument 4 must be an integer that fits an int64_t", e, 1, true)
      end
      -- integral values in range are taken (as floats too)
      assert(peeklock.client(with("pool_size", 4.0))):close()
    end)

    it("close({ unlock_held = true }) hands held locks back", function()
      local c = assert(peeklock.client(emu.conn))
      local q = queue()
      assert(c:send(q, "held"))
      local co = coroutine.create(function()
        return c:with_lock(q, { timeout = 5 }, function() coroutine.yield("inside") end)
      end)
      assert.same({ true, "inside" }, { coroutine.resume(co) })
      assert.is_true(emu:messages(q)[1].locked)
      c:close({ unlock_held = true })
      local msgs = emu:messages(q)
      assert.equal(1, #msgs)
      assert.is_false(msgs[1].locked)
    end)

    it("refuses use after close or free", function()
      local c = assert(peeklock.client(emu.conn))
      local q = queue()
      assert(c:send(q, "x"))
      local m = assert(c:peek_lock(q, { timeout = 5 }))
      m:free()
      m:free()
      local ok, err = m:complete()
      assert.is_nil(ok)
      assert.equal("state", err.code)
      c:close()
      c:close()
      ok, err = c:send(q, "x")
      assert.is_nil(ok)
      assert.equal("closed", err.code)
    end)

    it("settles a live message of a closed client as closed, naming the operation", function()
      local c = assert(peeklock.client(emu.conn))
      local q = queue()
      assert(c:send(q, "x"))
      local m = assert(c:peek_lock(q, { timeout = 5 }))
      c:close()
      for _, op in ipairs({ "renew", "abandon", "complete" }) do
        local ok, err = m[op](m)
        assert.is_nil(ok)
        assert.equal("closed", err.code)
        assert.equal(op, err.op)
      end
      -- a freed message handed to the client's settle (as with_lock's finish may) is a state error
      local c2 = assert(peeklock.client(emu.conn))
      local ok, err = c2:_settle({ _h = false }, "complete")
      assert.is_nil(ok)
      assert.equal("state", err.code)
      assert.equal("peeklock: complete: message was freed (state)", tostring(err))
      assert.has_error(function() c2:_settle(m, "dead_letter") end)
      c2:close()
      m:free()
    end)
  end)

  describe("garbage collection", function()
    it("frees clients and messages in a loop", function()
      local q = queue()
      for i = 1, 20 do assert(client:send(q, "gc" .. i)) end
      collectgarbage("collect")
      local before = collectgarbage("count")
      for _ = 1, 20 do
        local c = assert(peeklock.client(emu.conn))
        local m = assert(c:receive_and_delete(q, { timeout = 5 }))
        assert.matches("^gc", m.body)
        c = nil ---@diagnostic disable-line: cast-local-type
        m = nil ---@diagnostic disable-line: cast-local-type
        collectgarbage("collect")
      end
      collectgarbage("collect")
      assert.is_true(collectgarbage("count") - before < 200)
    end)
  end)
end)
