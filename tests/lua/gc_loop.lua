-- Short GC loop run under valgrind by tests/lua/run.sh: clients, messages,
-- batches, with_lock (renewer thread) and attached locks created and dropped to the
-- collector.
-- Exits non-zero on any failure; valgrind reports leaks and memory errors.
local H = require "helpers"
local peeklock = require "peeklock"

local emu = H.start_emulator({ "--queue", "gc" })
local ok, err = pcall(function()
  local n = tonumber(arg and arg[1]) or 25
  for i = 1, n do
    local c = assert(peeklock.client(emu.conn))
    assert(c:send("gc", "body" .. i, { properties = { I = i, S = "s" }, message_id = "id" .. i }))
    assert(c:send_batch("gc", { "b1", { body = "b2", label = "L" } }))
    local m = assert(c:peek_lock("gc", { timeout = 5 }))
    local _ = m.body, m.properties, m.message_id, tostring(m)
    if i % 2 == 0 then assert(m:complete()) end -- odd ones are dropped while held
    local w = assert(c:with_lock("gc", { timeout = 5 }, function(msg) return msg.body end))
    assert(w == true)
    -- a lock handed over: the handle, the released original, the attached message
    local held = assert(c:peek_lock("gc", { timeout = 5 }))
    local handle = assert(held:lock_handle())
    assert(held:release())
    local a = assert(c:attach(handle))
    if i % 2 == 0 then assert(a:complete()) end -- odd ones are dropped while held (and renewed)
    -- values the core refuses raise (from Lua, and from inside the C methods)
    assert(not pcall(c.attach, c, "plh1.e30"))
    assert(not pcall(c.send, c, "../gc", "x", { properties = { I = i } }))
    assert(not pcall(c.peek_lock, c, "../gc", { timeout = 0 }))
    local r = c:receive_and_delete("gc", { timeout = 0 })
    local e = select(2, c:send("missing-queue", "x"))
    assert(e and e.code == "entity_not_found")
    c, m, r, a = nil, nil, nil, nil
    if i % 5 == 0 then collectgarbage("collect") end
  end
  collectgarbage("collect")
  collectgarbage("collect")
end)
emu:stop()
if not ok then io.stderr:write(tostring(err), "\n"); os.exit(1) end
print("gc loop: ok")
