-- Handlers for the nginx test (tests/nginx/run.sh): one peeklock.resty client per
-- worker, created on first use inside the worker.
local peeklock = require "peeklock.resty"
local cjson_ok, cjson = pcall(require, "cjson")
local encode = cjson_ok and cjson.encode or function(t)
  local parts = {}
  for k, v in pairs(t) do
    local vs = type(v) == "string" and ('"' .. v:gsub('[%c"\\]', " ") .. '"') or tostring(v)
    parts[#parts + 1] = '"' .. k .. '":' .. vs
  end
  return "{" .. table.concat(parts, ",") .. "}"
end

local H = {}
local client

local function get_client()
  if not client then client = assert(peeklock.client(os.getenv("PEEKLOCK_CONNECTION_STRING"))) end
  return client
end

local function reply(t)
  ngx.header["Content-Type"] = "application/json"
  ngx.say(encode(t))
end

local function err_fields(t, err)
  if err then
    t.err_code, t.err_status, t.err = err.code, err.status, tostring(err)
  end
  return t
end

-- /send?entity=&body=&id=
function H.send()
  local a = ngx.req.get_uri_args()
  local ok, err = get_client():send(a.entity, a.body or "", { message_id = a.id })
  reply(err_fields({ ok = ok == true }, err))
end

-- /lock?entity=&timeout=&renewals=N&hold=S&fail=1&until_lost=1 : with_lock, holding the
-- lock for S seconds and until the C renewer has renewed it N times (ngx.sleep yields:
-- the worker keeps serving).
function H.lock()
  local a = ngx.req.get_uri_args()
  local c = get_client()
  local want = tonumber(a.renewals) or 0
  local got, body, id = 0, nil, nil
  local ok, err = c:with_lock(a.entity, { timeout = tonumber(a.timeout) or 10, max_renew = 120 },
    function(msg)
      body, id = msg.body, msg.message_id
      local st = c:renewer_stats()
      local base = st and st.renewals or 0
      local start = ngx.now()
      local hold = tonumber(a.hold) or 0
      local deadline = start + 60
      while (got < want or ngx.now() - start < hold) and ngx.now() < deadline do
        ngx.sleep(0.05)
        got = c:renewer_stats().renewals - base
      end
      if a.until_lost then -- wait for the renewer to find the lock gone (the test expires it)
        while msg.lock_state == "held" and ngx.now() < deadline do ngx.sleep(0.05) end
        return "after " .. tostring(msg.lock_state)
      end
      if msg.lock_state ~= "held" then error("lock not held: " .. tostring(msg.lock_state)) end
      if a.fail then error("handler failure requested") end
      return "done"
    end)
  reply(err_fields({ ok = ok == true, renewals = got, body = body, id = id }, err))
end

-- /peek?entity=&timeout= : peek-lock, renew once, abandon or complete (&complete=1)
function H.peek()
  local a = ngx.req.get_uri_args()
  local c = get_client()
  local msg, err = c:peek_lock(a.entity, { timeout = tonumber(a.timeout) or 0 })
  if not msg then return reply(err_fields({ ok = false, empty = err == nil }, err)) end
  local r, rerr = msg:renew()
  if not r then return reply(err_fields({ ok = false, step = "renew" }, rerr)) end
  local s, serr
  if a.complete then s, serr = msg:complete() else s, serr = msg:abandon() end
  reply(err_fields({ ok = s == true, body = msg.body, delivery_count = msg.delivery_count,
                     state = msg.lock_state }, serr))
end

-- /batch?entity= : send_batch of two, then receive_and_delete both
function H.batch()
  local a = ngx.req.get_uri_args()
  local c = get_client()
  local ok, err = c:send_batch(a.entity, { "one", { body = "two", label = "L2", properties = { N = 2 } } })
  if not ok then return reply(err_fields({ ok = false, step = "send_batch" }, err)) end
  local m1, e1 = c:receive_and_delete(a.entity, { timeout = 5 })
  local m2, e2 = c:receive_and_delete(a.entity, { timeout = 5 })
  if not (m1 and m2) then return reply(err_fields({ ok = false, step = "receive" }, e1 or e2)) end
  local s, serr = m1:complete() -- nothing to settle after receive_and_delete
  reply({ ok = true, bodies = m1.body .. "," .. m2.body, label = m2.label, n = m2.properties.N,
          settle_code = serr and serr.code or tostring(s) })
end

-- /rd?entity=&timeout= : one receive_and_delete
function H.rd()
  local a = ngx.req.get_uri_args()
  local msg, err = get_client():receive_and_delete(a.entity, { timeout = tonumber(a.timeout) or 0 })
  reply(err_fields({ ok = msg ~= nil, empty = msg == nil and err == nil, body = msg and msg.body,
                     id = msg and msg.message_id }, err))
end

-- /race?entity=&ops=complete,abandon&again=1 : peek-lock one message, then settle it from
-- one light thread per op (spawned in order: each runs until its first yield); with
-- again=1, one more complete once they are done. Reports each result and the lock state.
function H.race()
  local a = ngx.req.get_uri_args()
  local msg, err = get_client():peek_lock(a.entity, { timeout = tonumber(a.timeout) or 5 })
  if not msg then return reply(err_fields({ ok = false, empty = err == nil }, err)) end
  local threads, out = {}, { ok = true, id = msg.message_id }
  local ops = {}
  for op in (a.ops or "complete,complete"):gmatch("[^,]+") do ops[#ops + 1] = op end
  for i, op in ipairs(ops) do
    threads[i] = ngx.thread.spawn(function() return msg[op](msg) end)
    out["state" .. i] = msg.lock_state -- right after thread i yielded (or finished)
  end
  local function record(prefix, done, r, e)
    out[prefix .. "_ok"] = done and r == true
    if not done then out[prefix .. "_err"] = tostring(r) return end
    if e then
      out[prefix .. "_code"], out[prefix .. "_errno"], out[prefix .. "_err"] = e.code, e.errno, tostring(e)
    end
  end
  for i = 1, #threads do record("r" .. i, ngx.thread.wait(threads[i])) end
  if a.again then record("again", true, msg:complete()) end
  out.state = msg.lock_state
  out.estate = peeklock.codes.state
  reply(out)
end

function H.ping()
  ngx.say("pong")
end

return H
