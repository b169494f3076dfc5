-- core.schedule_*: the C renewer's schedule (csrc/schedule.c) as peeklock.resty's renewal
-- loop drives it: due times, backoff, give-up and cap come from C, on an injected clock.
local core = require "peeklock.core"

describe("core.schedule (" .. (jit and jit.version or _VERSION) .. ")", function()
  it("refuses a seed that is no count (checked before the C cast)", function()
    for _, bad in ipairs({ -1, 0 / 0, 2 ^ 64, math.huge }) do
      assert.has_error(function() core.schedule_new(bad) end)
    end
  end)

  it("renews at the round-trip margin before expiry when that comes before half-time", function()
    local s = core.schedule_new(1)
    assert.equal(1000, core.schedule_margin(s)) -- the floor, with no round trip measured
    -- 1.5 s left of a 60 s lock: half-time is 750 ms away, expiry - margin 500 ms
    assert.is_true(core.schedule_add(s, "a", 0, 1500, 60000))
    local key, wait = core.schedule_pop(s, 0)
    assert.is_nil(key)
    assert.is_true(wait <= 500 and wait > 0, wait)
    core.schedule_note_answer(s, 5000, false, false) -- never got through: not the server's pace
    assert.equal(1000, core.schedule_margin(s))
    core.schedule_note_answer(s, 300, true, false) -- answered (any status)
    assert.is_true(core.schedule_margin(s) >= 1290, core.schedule_margin(s))
    local what, late
    key, what, late = core.schedule_pop(s, 500)
    assert.equal("a", key)
    assert.equal("renew", what)
    assert.equal(500 - wait, late)
    -- popped: not queued until the result is reported
    assert.same({ nil, nil }, { core.schedule_pop(s, 10 ^ 9) })
    assert.is_true(core.schedule_renewed(s, "a", 500, 60500))
    key, wait = core.schedule_pop(s, 500)
    assert.is_nil(key)
    assert.is_true(wait > 20000 and wait <= 30000, wait) -- about half the fresh lock
  end)

  it("widens the margin on a renewal that timed out, not on one that never got through", function()
    local s = core.schedule_new(4)
    core.schedule_note_answer(s, 4000, false, false)
    assert.equal(1000, core.schedule_margin(s))
    core.schedule_note_answer(s, 2000, false, true)
    assert.equal(3000, core.schedule_margin(s))
  end)

  it("retries a failed renewal with growing backoff and gives up when no lock time is left", function()
    local s = core.schedule_new(2)
    core.schedule_add(s, 7, 0, 60000, 60000)
    local now, waits = 30000, {}
    assert.equal(7, (core.schedule_pop(s, now)))
    for i = 1, 4 do
      assert.is_true(core.schedule_failed(s, 7, now))
      local _, wait = core.schedule_pop(s, now)
      waits[i] = wait
      now = now + wait
      assert.equal(7, (core.schedule_pop(s, now)))
    end
    -- 100 ms doubling, each with up to half taken off
    for i = 1, 4 do
      local base = 100 * 2 ^ (i - 1)
      assert.is_true(waits[i] >= base / 2 and waits[i] <= base, table.concat(waits, " "))
    end
    assert.is_true(core.schedule_failed(s, 7, now, "2")) -- Retry-After: 2 s
    assert.equal(2000, select(2, core.schedule_pop(s, now)))
    assert.equal(7, (core.schedule_pop(s, 59990)))
    assert.is_false(core.schedule_failed(s, 7, 59990)) -- 10 ms left: lost, and no longer tracked
    assert.same({ nil, nil }, { core.schedule_pop(s, 10 ^ 9) })
    assert.has_error(function() core.schedule_failed(s, 7, 59990) end)
  end)

  it("stops at the cap and forgets a removed lock", function()
    local s = core.schedule_new(3)
    core.schedule_add(s, "c", 0, 60000, 60000, 1000)
    core.schedule_add(s, "r", 0, 60000, 60000)
    assert.same({ "c", "cap", 0 }, { core.schedule_pop(s, 1000) })
    core.schedule_remove(s, "c")
    core.schedule_remove(s, "r")
    core.schedule_remove(s, "r") -- (twice: a no-op)
    assert.same({ nil, nil }, { core.schedule_pop(s, 10 ^ 9) })
    assert.has_error(function() core.schedule_add(s, nil, 0, 1, 1) end)
  end)

  it("keeps its entries alive through a collection", function()
    local s = core.schedule_new(4)
    for i = 1, 200 do core.schedule_add(s, i, 0, 60000 + i, 60000) end
    collectgarbage()
    collectgarbage()
    local n = 0
    while core.schedule_pop(s, 10 ^ 9) ~= nil do n = n + 1 end
    assert.equal(200, n)
  end)
end)
