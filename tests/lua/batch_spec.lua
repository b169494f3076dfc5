-- busted specs for batch handlers: client:process(entity, handler, { batch = N, max_wait = S }),
-- run under Lua 5.4 and LuaJIT by tests/lua/run.sh against the real emulator (its state
-- dump says what was completed, abandoned or left locked).
local H = require "helpers"
local peeklock = require "peeklock"
local socket = require "socket"

local emu, client

local function queue(settings) return emu:queue("bq", settings) end

local function send_all(q, n, prefix)
  for i = 1, n do assert(client:send(q, prefix .. i, { message_id = prefix .. i })) end
end

-- The emulator's messages of q by message id.
local function by_id(q)
  local out = {}
  for _, m in ipairs(emu:messages(q)) do out[m.message_id] = m end
  return out
end

describe("batch handlers (" .. (jit and jit.version or _VERSION) .. ")", function()
  H.suite({}, function(e, c) emu, client = e, c end)

  it("hands up to N held messages to the handler; a returned table settles by message or sequence number",
     function()
    local q = queue()
    send_all(q, 5, "r")
    local batches = {}
    local s = assert(client:process(q, function(msgs)
      batches[#batches + 1] = #msgs
      -- every message of the batch is held (renewed) while the handler runs
      for _, m in ipairs(msgs) do assert.equal("held", m.lock_state) end
      assert.equal(5, client:renewer_stats().held)
      assert(msgs[3]:complete()) -- settled by the handler itself
      -- r1 abandoned, r2 completed (by its sequence number); r4, r5 left: completed on return
      return { [msgs[1]] = "abandon", [msgs[2].sequence_number] = "complete" }
    end, { batch = 5, max_wait = 1, max_messages = 5, poll_timeout = 2 }))
    assert.same({ 5 }, batches)
    assert.equal(3, s.processed)
    assert.equal(1, s.failed)
    assert.equal(1, s.settled_by_handler)
    assert.equal(0, s.lost)
    assert.equal(0, s.errors)
    assert.equal(0, s.abandoned_on_drain)
    for _, id in ipairs({ "r2", "r3", "r4", "r5" }) do assert.equal(1, emu:completed(q, id)) end
    local left = by_id(q)
    assert.equal(0, emu:completed(q, "r1"))
    assert.is_false(left.r1.locked) -- abandoned: available again at once
    assert.equal(1, left.r1.delivery_count)
    assert.equal(0, client:renewer_stats().held)
  end)

  it("a batch that closes at its deadline counts toward max_messages; the run stops by it", function()
    local q = queue()
    send_all(q, 2, "c")
    local sizes = {}
    local s = assert(client:process(q, function(msgs)
      sizes[#sizes + 1] = #msgs
      if #sizes == 1 then assert(client:send(q, "c3", { message_id = "c3" })) end
    end, { batch = 10, max_wait = 1, max_messages = 3, poll_timeout = 2 }))
    -- the first batch closed at its deadline with 2 of 10; the second took the last claim
    assert.same({ 2, 1 }, sizes)
    assert.equal(3, s.processed)
    assert.equal(3, s.received)
    assert.equal("max_messages", s.stopped_by)
    assert.equal(0, s.in_flight)
    for _, id in ipairs({ "c1", "c2", "c3" }) do assert.equal(1, emu:completed(q, id)) end
  end)

  it("a max_wait longer than the longest receive asks for the longest (several make it up)", function()
    local q = queue()
    send_all(q, 2, "w")
    -- the batch's second receive waits what is left of 400 s, at most 300 s (pl_timeout_seconds
    -- refused 400 as a timeout: an argument error in the middle of the batch)
    assert.equal(300, peeklock.core.PL_MAX_RECEIVE_TIMEOUT_S)
    local batches = {}
    local s = assert(client:process(q, function(msgs) batches[#batches + 1] = #msgs end,
      { batch = 2, max_wait = 400, max_messages = 2, poll_timeout = 2 }))
    assert.same({ 2 }, batches)
    assert.equal(2, s.processed)
    assert.equal(0, s.errors)
  end)

  it("a handler that raises: what it settled stays settled, the rest is abandoned", function()
    local q = queue()
    send_all(q, 4, "f")
    local s = assert(client:process(q, function(msgs)
      assert(msgs[1]:complete())
      error("downstream is down")
    end, { batch = 4, max_wait = 1, max_messages = 4, poll_timeout = 2 }))
    assert.equal(0, s.processed)
    assert.equal(3, s.failed)
    assert.equal(1, s.settled_by_handler)
    assert.equal(1, emu:completed(q, "f1"))
    local left = by_id(q)
    for _, id in ipairs({ "f2", "f3", "f4" }) do
      assert.is_false(left[id].locked, id)
      assert.equal(0, emu:completed(q, id))
    end
    assert.is_nil(left.f1)
  end)

  it("a returned table that names a stranger or a wrong action abandons the batch", function()
    local q = queue()
    send_all(q, 2, "w")
    local s = assert(client:process(q, function(msgs)
      return { [msgs[1]] = "complete", [msgs[2]] = "done" }
    end, { batch = 2, max_wait = 1, max_messages = 2, poll_timeout = 2 }))
    assert.equal(2, s.failed)
    assert.equal(0, s.processed)
    s = assert(client:process(q, function() return { [123456789] = "complete" } end,
                              { batch = 2, max_wait = 1, max_messages = 2, poll_timeout = 2 }))
    assert.equal(2, s.failed)
    local left = by_id(q)
    assert.is_false(left.w1.locked)
    assert.is_false(left.w2.locked)
    assert.equal(2, left.w1.delivery_count)
    assert.equal(0, emu:completed(q, "w1") + emu:completed(q, "w2"))
  end)

  it("max_wait: fewer than N after max_wait; 0 takes only what is there at once; max_messages counts messages",
     function()
    local q = queue()
    send_all(q, 2, "m")
    local sizes, waited, t0 = {}, {}, nil
    local function handler(msgs)
      sizes[#sizes + 1] = #msgs
      waited[#waited + 1] = socket.gettime() - t0
    end
    local function after(n) return function() return #sizes >= n end end
    t0 = socket.gettime()
    local s = assert(client:process(q, handler, { batch = 10, max_wait = 0, poll_timeout = 5, stop = after(1) }))
    assert.equal(2, s.processed)
    assert.same({ 2 }, sizes)
    assert.is_true(waited[1] < 0.9, tostring(waited[1]))
    send_all(q, 2, "n")
    t0 = socket.gettime()
    s = assert(client:process(q, handler, { batch = 10, max_wait = 1, poll_timeout = 5, stop = after(2) }))
    -- 2 of 10 came: the handler ran once max_wait had passed after the first, not poll_timeout
    assert.equal(2, s.processed)
    assert.same({ 2, 2 }, sizes)
    assert.is_true(waited[2] >= 0.9 and waited[2] < 3, tostring(waited[2]))
    assert.equal(0, #emu:messages(q))
    send_all(q, 5, "x")
    s = assert(client:process(q, handler, { batch = 10, max_wait = 0, poll_timeout = 5, max_messages = 3 }))
    assert.equal(3, s.processed)
    assert.same({ 2, 2, 3 }, sizes)
    assert.equal(2, #emu:messages(q))
  end)

  it("renews every lock of the batch while the handler runs (emulator clock past the first locks)", function()
    local q = queue({ lock_duration = 5 })
    send_all(q, 3, "k")
    local first, renewed
    local s = assert(client:process(q, function(msgs)
      first = {}
      for id, m in pairs(by_id(q)) do first[id] = m.locked_until end
      -- wait (real time: the renewer schedules by the client's clock) until each lock was renewed
      renewed = H.wait_for(function()
        local now = by_id(q)
        for _, m in ipairs(msgs) do
          local e = now[m.message_id]
          if not (e and e.locked and e.locked_until > first[m.message_id]) then return nil end
        end
        return now
      end, 15)
      -- past every lock as first taken, within the renewed ones: completes only if renewed
      emu:advance(3)
      for _, m in ipairs(msgs) do assert.equal("held", m.lock_state) end
    end, { batch = 3, max_wait = 1, max_messages = 3, poll_timeout = 2 }))
    assert.is_table(renewed, "not every lock of the batch was renewed within 15 s")
    assert.equal(3, s.processed)
    assert.equal(0, s.lost)
    for i = 1, 3 do assert.equal(1, emu:completed(q, "k" .. i)) end
    assert.equal(0, #emu:messages(q))
  end)

  it("a stop while collecting gives the batch back: nothing runs on it, its messages are available",
     function()
    local q = queue()
    send_all(q, 2, "d")
    local ran = false
    -- stops (for good) once the first message is held: the collection of the batch is under way
    local stopped = false
    local s = assert(client:process(q, function() ran = true end, {
      batch = 5, max_wait = 5, poll_timeout = 2,
      stop = function() stopped = stopped or client:renewer_stats().held >= 1; return stopped end }))
    assert.is_false(ran)
    assert.equal(1, s.abandoned_on_drain)
    assert.equal(0, s.processed)
    local left = by_id(q)
    assert.is_false(left.d1.locked)
    assert.is_false(left.d2.locked)
    assert.equal(0, emu:completed(q, "d1") + emu:completed(q, "d2"))
    assert.equal(0, client:renewer_stats().held)
  end)

  it("a batch given back whose lock was lost meanwhile counts as lost, not abandoned on drain", function()
    local q = queue()
    send_all(q, 2, "g")
    local ran, stopped = false, false
    -- once the first message is held its lock runs out (the emulator's clock), then the run stops
    local s = assert(client:process(q, function() ran = true end, {
      batch = 5, max_wait = 5, poll_timeout = 2,
      stop = function()
        if not stopped and client:renewer_stats().held >= 1 then
          emu:advance(400) -- past any lock duration
          stopped = true
        end
        return stopped
      end }))
    assert.is_false(ran)
    assert.equal(1, s.received)
    assert.equal(1, s.lost)
    assert.equal(0, s.abandoned_on_drain)
    assert.equal(0, s.in_flight)
    assert.equal(0, emu:completed(q, "g1"))
    assert.equal(0, client:renewer_stats().held)
  end)

  it("a stop function that raises while a batch is collected ends the run; the batch is given back",
     function()
    local q = queue()
    send_all(q, 2, "x")
    local ran = false
    local s = assert(client:process(q, function() ran = true end, {
      batch = 5, max_wait = 5, poll_timeout = 2,
      stop = function() if client:renewer_stats().held >= 1 then error("stop broke") end end }))
    assert.is_false(ran)
    assert.equal("internal", s.error.code)
    assert.truthy(tostring(s.error):find("stop broke", 1, true))
    assert.equal("error", s.stopped_by)
    assert.equal(0, s.in_flight) -- nothing left in flight (other consumers would wait on it)
    assert.equal(1, s.received)
    assert.equal(1, s.abandoned_on_drain)
    assert.is_false(by_id(q).x1.locked)
    assert.equal(0, client:renewer_stats().held)
  end)

  it("checks batch and max_wait", function()
    for _, bad in ipairs({ { batch = 0 }, { batch = "2" }, { max_wait = -1 }, { max_wait = 4000 } }) do
      local ok, e = pcall(client.process, client, "q", function() end, bad)
      assert.is_false(ok)
      assert.truthy(e:find("to 'process'", 1, true), e)
    end
    local ok, e = pcall(client.process, client, "q", function() end, { batch = 2, cut_on_exit = false })
    assert.is_false(ok)
    assert.truthy(e:find("unknown option 'cut_on_exit' to 'process'", 1, true), e)
  end)
end)
