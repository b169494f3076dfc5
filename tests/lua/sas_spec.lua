-- peeklock.sas_token against the core's rule on its expiry (pl_sas_token): an expiry in
-- 1970-2001 is a lifetime passed by mistake, refused with the core's message.
local peeklock = require "peeklock"

-- The message of a call that fails (returned as nil, err or raised), or nil when it succeeds.
local function failure(f, ...)
  local ok, a, b = pcall(f, ...)
  if ok and a ~= nil then return nil end
  return tostring(ok and b or a)
end

describe("peeklock.sas_token (" .. (jit and jit.version or _VERSION) .. ")", function()
  local uri = "https://ns.servicebus.windows.net/q"

  it("refuses a lifetime passed as the expiry with the core's message", function()
    local why = failure(peeklock.sas_token, uri, "k", "secret", 3600)
    assert.is_string(why)
    assert.truthy(why:find("expiry: is an absolute time (Unix seconds) and 3600 is in 1970-2001; "
                           .. "for a token valid 3600 seconds from now pass now + 3600", 1, true), why)
    assert.is_string(failure(peeklock.sas_token, uri, "k", "secret", 999999999))
  end)

  it("signs an expiry from 2001-09-09 on", function()
    local tok = assert(peeklock.sas_token(uri, "k", "secret", 1000000000))
    assert.truthy(tok:find("se=1000000000&", 1, true), tok)
  end)
end)
