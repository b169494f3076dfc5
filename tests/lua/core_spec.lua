-- The raw SWIG layer (peeklock.core) must turn any wrong argument into a Lua error or
-- an error code, never a crash: every function is called with argument lists of
-- every wrong kind, with freed handles, and with live handles of the wrong type.
local peeklock = require "peeklock"
local core = peeklock.core

local CONN = "Endpoint=sb://127.0.0.1:9;SharedAccessKeyName=k;SharedAccessKey=v;UseDevelopmentEmulator=true"
-- calls that would really block or do I/O with valid-looking arguments are fine here:
-- nothing listens on port 9, and every handle argument below is wrong anyway.

local function functions()
  local names = {}
  for name, f in pairs(core) do
    local natives = { message_body = true, request_body = true, key = true, alive = true, release = true,
                      renewer_new = true, message_properties = true, request_parts = true,
                      request_head = true, response_from = true, outgoing_from = true, last_error = true,
                      request_send_from = true, result_from = true,
                      message_indexer = true, message_wrapper = true, message_ref = true,
                      stat_request = true, set_drop_hook = true, mark_lost = true, run_new = true }
    if type(f) == "function" and (name:match("^pl_") or natives[name]) then
      names[#names + 1] = name
    end
  end
  table.sort(names)
  return names
end

describe("peeklock.core (" .. (jit and jit.version or _VERSION) .. ")", function()
  it("wraps the public C API", function()
    for _, name in ipairs({ "pl_send", "pl_peek_lock", "pl_complete", "pl_renewer_add",
                            "pl_request_settle", "pl_response_result", "pl_message_property_int" }) do
      assert.is_function(core[name], name)
    end
  end)

  it("gives the default renewal cap the bindings use", function()
    assert.equal(300000, core.PL_DEFAULT_MAX_RENEW_MS)
  end)

  it("is where the client's and process's defaults come from", function()
    -- options left out are what pl_client_options_init leaves: the core's
    local c = assert(peeklock.client(CONN))
    assert.equal(core.PL_DEFAULT_CONNECT_TIMEOUT_MS, core.pl_client_connect_timeout_ms(c._h))
    assert.equal(core.PL_DEFAULT_REQUEST_TIMEOUT_MS, core.pl_client_request_timeout_ms(c._h))
    local given = assert(peeklock.client({ connection_string = CONN, connect_timeout_ms = 2500 }))
    assert.equal(2500, core.pl_client_connect_timeout_ms(given._h))
    assert.equal(core.PL_DEFAULT_POOL_SIZE, core.pl_client_pool_size(c._h))
    local pooled = assert(peeklock.client({ connection_string = CONN, pool_size = 3 }))
    assert.equal(3, core.pl_client_pool_size(pooled._h))
    -- process's poll_timeout and max_wait, left out, are the core's PL_DEFAULT_*
    local I = require "peeklock.internal"
    local o = assert(I.process_args(c, "q", function() end, nil, 1))
    assert.equal(core.PL_DEFAULT_POLL_TIMEOUT_S, o.poll_timeout)
    assert.equal(core.PL_DEFAULT_MAX_WAIT_S, o.max_wait)
    -- no renewer yet: the core's renewer fields, zeros
    local rc, zeros = core.pl_renewer_stats_get(nil)
    assert.equal(0, rc)
    local none = {} -- the header's PL_SLACK_BUCKETS sizes the list
    for i = 1, core.PL_SLACK_BUCKETS do none[i] = 0 end
    assert.is_true(#none > 0)
    assert.same(none, zeros.slack_buckets)
    assert.same(zeros, assert(c:stats()).renewer)
    c:close()
    given:close()
  end)

  it("names its operations, which errors recognise from the core's list", function()
    local I = require "peeklock.internal"
    local names, i = {}, 0
    while core.pl_op_name(i) do
      names[#names + 1] = core.pl_op_name(i)
      i = i + 1
    end
    assert.equal("request", names[1])
    assert.truthy(#names >= 8, #names)
    for _, name in ipairs(names) do
      -- a message the core opens with an operation's name is not given the Lua op again
      local e = I.new_error({ op = "other", code = "invalid_argument", message = name .. " on 'q': gone" })
      assert.equal("peeklock: " .. name .. " on 'q': gone (invalid_argument)", tostring(e))
      e = I.new_error({ op = "other", code = "invalid_argument", message = name .. ": gone" })
      assert.equal("peeklock: other: gone (invalid_argument)", tostring(e))
    end
  end)

  it("survives wrong argument kinds for every function", function()
    local _, client = core.client_new({ connection_string = CONN })
    local _, out = core.pl_outgoing_new("x")
    local freed_rc, freed = core.pl_outgoing_new("y")
    assert.equal(0, freed_rc)
    core.release(freed)
    local run_rc, run = core.run_new(0, { max_messages = 2, idle_timeout = 1 })
    assert.equal(0, run_rc)
    local kinds = {
      {},
      { nil, nil, nil, nil, nil, nil, nil },
      { 1, 2, 3, 4, 5, 6, 7 },
      { "a", "b", "c", "d", "e", "f", "g" },
      { {}, {}, {}, {}, {}, {}, {} },
      { true, false, true, false, true, false, true },
      { io.stdout, io.stdout, io.stdout, io.stdout, io.stdout, io.stdout, io.stdout }, -- foreign userdata
      { core.key(out), core.key(out), core.key(out), core.key(out), core.key(out), core.key(out) }, -- light
      { freed, freed, freed, freed, freed, freed, freed },
      { out, out, out, out, out, out, out },        -- live, but the wrong type for most
      { client, client, client, client, client, client, client },
      { run, run, run, run, run, run, run },        -- a live pl_run: the wrong type but for pl_run_*
      { run, 1, 2, 3, 4, 5, 6 },
      { client, "q", nil, 0, 1, 0, 0 },
      { out, "Label", nil, 0, 0, 0, 0 },
      { out, nil, nil, 0, 0, 0, 0 },               -- NULL strings reach C: it must refuse them
      { client, nil, nil, 0, 0, 0, 0 },
    }
    local n = 0
    for _, name in ipairs(functions()) do
      for _, args in ipairs(kinds) do
        if not (name == "pl_renewer_wait_event" or name == "pl_renewer_close") then
          local ok, err = pcall(core[name], unpack and unpack(args, 1, 7) or table.unpack(args, 1, 7))
          if not ok then assert.is_string(err, name) end
          n = n + 1
        end
      end
    end
    assert.is_true(n > 500)
    core.release(out)
    core.release(client)
    core.release(run)
  end)

  it("takes a run's times at the ends of int64 without overflow", function()
    if not math.mininteger then return end -- (LuaJIT's numbers are doubles: no such integers)
    local rc, run = core.run_new(math.mininteger, { idle_timeout = 1 })
    assert.equal(0, rc)
    assert.equal(0, core.pl_run_idle_ms(run, math.maxinteger)) -- the span saturates: idle
    core.release(run)
    rc, run = core.run_new(math.maxinteger, { idle_timeout = 1 })
    assert.equal(1000, core.pl_run_idle_ms(run, math.mininteger)) -- a clock gone back: no time passed
    core.release(run)
  end)

  it("refuses an integer argument that fits no C int, long or size_t, before any cast", function()
    local function refused(pattern, f, ...)
      local ok, err = pcall(f, ...)
      assert.is_false(ok, pattern)
      assert.matches(pattern, err, 1, true)
    end
    -- int: an infinity, 2^40 (a plain cast would keep its low bits: 0), a fraction, just past INT_MAX
    for _, bad in ipairs({ math.huge, -math.huge, 0 / 0, 2 ^ 40, 0.5, 2 ^ 31, -2 ^ 31 - 1 }) do
      refused("pl_check_timeout: argument 1 must be an integer that fits an int", core.pl_check_timeout, bad)
    end
    -- a fitting integer reaches the core, which judges its value
    assert.equal(0, core.pl_check_timeout(30))
    assert.equal(0, core.pl_check_timeout(30.0))
    assert.equal(core.PL_EINVAL, core.pl_check_timeout(2 ^ 31 - 1))
    assert.equal(core.PL_EINVAL, core.pl_check_timeout(-2 ^ 31))
    -- long and size_t the same (refused before the call: nothing waits, nothing is read)
    local _, client = core.client_new({ connection_string = CONN })
    local _, r = core.renewer_new(client)
    for _, bad in ipairs({ math.huge, 2 ^ 63, 0.5 }) do
      refused("pl_renewer_wait_event: argument 2 must be an integer that fits a long", core.pl_renewer_wait_event,
              r, bad)
    end
    local _, req = core.pl_request_receive(client, "q", 0, 1)
    for _, bad in ipairs({ -1, 2 ^ 64, 1.5, math.huge }) do
      refused("pl_request_header_name: argument 2 must be an integer that fits a size_t", core.pl_request_header_name,
              req, bad)
    end
    assert.is_string(core.pl_request_header_name(req, 0))
    core.release(req)
    core.release(r)
    core.release(client)
  end)

  it("request_head joins the headers request_parts lists, as a raw HTTP/1.1 request needs them", function()
    local _, client = core.client_new({ connection_string = CONN })
    local _, m = core.pl_outgoing_new("body\0bytes")
    assert.equal(0, core.pl_outgoing_add_string(m, "Priority", "High"))
    local _, req = core.pl_request_send(client, "q", m)
    local method, url, body, parts = core.request_parts(req)
    local method2, url2, body2, head, has_host, has_len = core.request_head(req)
    assert.equal(method, method2)
    assert.equal(url, url2)
    assert.equal("body\0bytes", body2)
    assert.equal(body, body2)
    local lines, host, len = {}, false, false
    for _, h in ipairs(parts) do
      local lname = h[1]:lower()
      if lname == "host" then host = true elseif lname == "content-length" then len = true end
      if not (lname == "expect" and h[2] == "") then lines[#lines + 1] = h[1] .. ": " .. h[2] .. "\r\n" end
    end
    assert.equal(table.concat(lines), head)
    assert.equal(host, has_host)
    assert.equal(len, has_len)
    assert.matches("Priority: \"High\"\r\n", head, 1, true)
    core.release(req)
    core.release(m)
    core.release(client)
  end)

  it("response_from takes headers as pairs or as a flat name, value list, alike", function()
    local _, client = core.client_new({ connection_string = CONN })
    local bp = '{"LockToken":"0f8fad5b-d9cb-469f-a165-70867728950e","MessageId":"m1","SequenceNumber":7,'
      .. '"DeliveryCount":1,"LockedUntilUtc":"Sun, 22 Nov 2026 14:01:00 GMT"}'
    local location = core.pl_client_endpoint(client) .. "/q/messages/7/0f8fad5b-d9cb-469f-a165-70867728950e"
    local date = "Sun, 22 Nov 2026 14:00:00 GMT"
    local got = {}
    for i, headers in ipairs({
      { { "Date", date }, { "BrokerProperties", bp }, { "Location", location }, { "Priority", '"High"' },
        { "Attempt", "3" } },
      { "Date", date, "BrokerProperties", bp, "Location", location, "Priority", '"High"', "Attempt", "3" },
    }) do
      local _, req = core.pl_request_receive(client, "q", 0, 1)
      local rc, resp = core.response_from(201, headers, "payload")
      assert.equal(0, rc)
      local rc2, msg = core.pl_response_result(client, req, nil, resp, core.pl_now_mono_ms())
      assert.equal(0, rc2, select(4, core.last_error()))
      got[i] = { core.pl_message_id(msg), core.message_body(msg), core.message_properties(msg) }
      core.release(msg)
      core.release(resp)
      core.release(req)
    end
    assert.same({ "m1", "payload", { Priority = "High", Attempt = 3 } }, got[1])
    assert.same(got[1], got[2])
    -- result_from: the two calls in one, no response handle
    local _, req = core.pl_request_receive(client, "q", 0, 1)
    local rc, msg, answered = core.result_from(client, req, nil, 201,
      { "Date", date, "BrokerProperties", bp, "Location", location, "Priority", '"High"', "Attempt", "3" },
      "payload", core.pl_now_mono_ms())
    assert.equal(0, rc, select(4, core.last_error()))
    assert.is_true(answered)
    assert.same(got[1], { core.pl_message_id(msg), core.message_body(msg), core.message_properties(msg) })
    core.release(msg)
    -- header values given as numbers are taken as tostring() writes them
    rc, msg = core.result_from(client, req, nil, 201,
      { "Date", date, "BrokerProperties", bp, "Location", location, "Attempt", 3, "Ratio", 0.5 },
      "payload", core.pl_now_mono_ms())
    assert.equal(0, rc, select(4, core.last_error()))
    assert.same({ Attempt = 3, Ratio = 0.5 }, core.message_properties(msg))
    core.release(msg)
    -- an answer the core refuses: answered, a negative rc, no message
    rc, msg, answered = core.result_from(client, req, nil, 201, { "Date", date }, "", core.pl_now_mono_ms())
    assert.is_true(rc < 0)
    assert.is_nil(msg)
    assert.is_true(answered)
    core.release(req)
    core.release(client)
  end)

  it("reports nil and freed handles by name", function()
    local _, m = core.pl_outgoing_new("x")
    core.release(m)
    assert.has_error(function() core.pl_outgoing_set_content_type(m, "text/plain") end,
      "pl_outgoing_set_content_type: argument 1 must be a live pl_outgoing (got nil or a freed handle)")
    assert.has_error(function() core.pl_send(nil, "q", nil) end)
    assert.is_false(core.alive(m))
    core.release(m) -- idempotent
  end)

  it("takes nil only for the header's <x>_or_null handle parameters", function()
    local _, client = core.pl_client_new_from_connection_string(CONN)
    local _, req = core.pl_request_receive(client, "q", 0, 1)
    local _, resp = core.response_from(204, { "Date", "Sat, 25 Oct 2014 00:56:48 GMT" }, "")
    -- m_or_null: nil is no message (a receive's answer)
    assert.equal(core.PL_EMPTY, core.pl_response_result(client, req, nil, resp, core.pl_now_mono_ms()))
    -- every other handle parameter of the same call refuses nil by name (the C
    -- parameter's number: out, the first, is a result here)
    local refused = "pl_response_result: argument %d must be a live %s (got nil or a freed handle)"
    assert.has_error(function() core.pl_response_result(nil, req, nil, resp, 0) end, refused:format(2, "pl_client"))
    assert.has_error(function() core.pl_response_result(client, nil, nil, resp, 0) end,
      refused:format(3, "pl_request"))
    assert.has_error(function() core.pl_response_result(client, req, nil, nil, 0) end,
      refused:format(5, "pl_response"))
    -- r_or_null: nil is no renewer (zeros); the message of a finish is no option
    assert.equal(0, (core.pl_renewer_stats_get(nil)))
    assert.has_error(function() core.pl_renewer_finish(nil, nil, 1) end,
      "pl_renewer_finish: argument 2 must be a live pl_message (got nil or a freed handle)")
    core.release(resp)
    core.release(req)
    core.release(client)
  end)

  it("refuses a freed handle for an <x>_or_null parameter (nil is not the same)", function()
    local _, client = core.pl_client_new_from_connection_string(CONN)
    local _, req = core.pl_request_receive(client, "q", 0, 1)
    local date = "Sun, 22 Nov 2026 14:00:00 GMT"
    local bp = '{"LockToken":"0f8fad5b-d9cb-469f-a165-70867728950e","MessageId":"m1","SequenceNumber":7,'
      .. '"DeliveryCount":1,"LockedUntilUtc":"Sun, 22 Nov 2026 14:01:00 GMT"}'
    local location = core.pl_client_endpoint(client) .. "/q/messages/7/0f8fad5b-d9cb-469f-a165-70867728950e"
    local rc, m = core.result_from(client, req, nil, 201, { "Date", date, "BrokerProperties", bp,
      "Location", location }, "", core.pl_now_mono_ms())
    assert.equal(0, rc, select(4, core.last_error()))
    core.release(m)
    local _, resp = core.response_from(204, { "Date", date }, "")
    assert.has_error(function() core.pl_response_result(client, req, m, resp, 0) end,
      "pl_response_result: argument 4 must be a live pl_message or nil (got a freed handle)")
    local _, r = core.renewer_new(client)
    core.release(r)
    assert.has_error(function() core.pl_renewer_stats_get(r) end,
      "pl_renewer_stats_get: argument 1 must be a live pl_renewer or nil (got a freed handle)")
    assert.has_error(function() core.pl_renewer_finish(r, nil, 1) end,
      "pl_renewer_finish: argument 1 must be a live pl_renewer or nil (got a freed handle)")
    core.release(resp)
    core.release(req)
    core.release(client)
  end)
end)
