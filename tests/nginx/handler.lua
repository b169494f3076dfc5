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

local function get_client()
  return assert(peeklock.worker_client(os.getenv("PEEKLOCK_CONNECTION_STRING")))
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

-- /lock?entity=&timeout=&renewals=N&hold=S&fail=1&until_lost=1&max_renew=S : with_lock, holding the
-- lock for S seconds and until the C renewer has renewed it N times (ngx.sleep yields:
-- the worker keeps serving); failures: the renewals that failed meanwhile; wakeups: the
-- renewal loop's while the handler ran, held: the worker's held locks when it started.
function H.lock()
  local a = ngx.req.get_uri_args()
  local c = get_client()
  local want = tonumber(a.renewals) or 0
  local got, body, id, wakeups, held = 0, nil, nil, nil, nil
  local fbase = c:renewer_stats().failures
  local ok, err = c:with_lock(a.entity,
                             { timeout = tonumber(a.timeout) or 10, max_renew = tonumber(a.max_renew) or 120 },
    function(msg)
      body, id = msg.body, msg.message_id
      local st = c:renewer_stats()
      local base, wbase = st.renewals, st.wakeups
      held = st.held
      local start = ngx.now()
      local hold = tonumber(a.hold) or 0
      local deadline = start + 60
      while (got < want or ngx.now() - start < hold) and ngx.now() < deadline do
        ngx.sleep(0.05)
        got = c:renewer_stats().renewals - base
      end
      wakeups = c:renewer_stats().wakeups - wbase
      if a.until_lost then -- wait for the renewer to find the lock gone (the test expires it)
        while msg.lock_state == "held" and ngx.now() < deadline do ngx.sleep(0.05) end
        return "after " .. tostring(msg.lock_state)
      end
      if msg.lock_state ~= "held" then error("lock not held: " .. tostring(msg.lock_state)) end
      if a.fail then error("handler failure requested") end
      return "done"
    end)
  reply(err_fields({ ok = ok == true, renewals = got, body = body, id = id, wakeups = wakeups, held = held,
                     failures = c:renewer_stats().failures - fbase,
                     lateness_max_ms = c:renewer_stats().lateness_max_ms }, err))
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

-- /say?entity= : an error written as lua-resty code writes strings
function H.say()
  local a = ngx.req.get_uri_args()
  local ok, err = get_client():send(a.entity, "x")
  if not ok then ngx.say("failed: ", err) ngx.say("concat: " .. err) return end
  ngx.say("sent")
end

-- /readme_assert : the README's idiom with a connection string that cannot work (the core
-- refuses it: peeklock.client raises that at this line, a string nginx logs)
function H.readme_assert()
  local client, err = peeklock.client("Endpoint=sb://;SharedAccessKeyName=k")
  assert(client, tostring(err))
end

-- /options?entity= : an option of the wrong type is refused before anything is sent;
-- the client's stats count the cosocket requests of a send
function H.options()
  local a = ngx.req.get_uri_args()
  local conn = os.getenv("PEEKLOCK_CONNECTION_STRING")
  local ok, e = pcall(peeklock.client, { connection_string = conn, keepalive_ms = "60s" })
  local ok2, e2 = pcall(peeklock.client, { connection_string = conn, bogus_opt = 1 })
  local c = assert(peeklock.client({ connection_string = conn, keepalive_ms = 1000 }))
  -- the cosocket timeouts are the C client's: its defaults, or the options (0: the default)
  -- and so is the pool of kept connections
  local c2 = assert(peeklock.client({ connection_string = conn, connect_timeout_ms = 0, request_timeout_ms = 7000,
                                      pool_size = 3 }))
  local timeouts = ("%d/%d/%d %d/%d/%d"):format(c._connect_timeout_ms, c._send_timeout_ms, c._request_timeout_ms,
                                                c2._connect_timeout_ms, c2._send_timeout_ms, c2._request_timeout_ms)
  local pools = ("%d %d"):format(c._pool_size, c2._pool_size)
  c2:close()
  -- a misspelt receive option is refused before anything is sent
  local ok3, e3 = pcall(c.peek_lock, c, a.entity, { timout = 1 })
  local before = c:stats().requests
  assert(c:send(a.entity, "counted"))
  assert(c:send(a.entity, "counted"))
  local st = c:stats()
  c:close()
  reply({ refused = not ok, err = tostring(e), refused_unknown = not ok2, err_unknown = tostring(e2),
          refused_receive = not ok3, err_receive = tostring(e3),
          requests = st.requests - before, reused = st.reused_connections, sent = st.sent,
          timeouts = timeouts, pools = pools })
end

-- /blocking : the blocking client inside nginx (warns once in the error log)
function H.blocking()
  local blocking = require "peeklock"
  local c = assert(blocking.client(os.getenv("PEEKLOCK_CONNECTION_STRING")))
  c:close()
  ngx.say("made")
end

-- /per_request?entity= : a client made for this request alone (never closed), one send
-- and one with_lock; answers the worker's thread count
function H.per_request()
  local a = ngx.req.get_uri_args()
  local c = assert(peeklock.client(os.getenv("PEEKLOCK_CONNECTION_STRING")))
  assert(c:send(a.entity, "per request"))
  local ok, err = c:with_lock(a.entity, { timeout = 5 }, function(msg) return msg.body end)
  local f = assert(io.open("/proc/self/status"))
  local threads = tonumber(f:read("*a"):match("Threads:%s*(%d+)"))
  f:close()
  reply(err_fields({ ok = ok == true, threads = threads }, err))
end

-- /worker_client : which client the worker's accessor gives (its handle's address)
function H.worker_client()
  local c = get_client()
  reply({ id = tostring(peeklock.core.key(c._h)), same = c == get_client() })
end

-- The abort paths: a with_lock whose light thread dies before it returns.
-- /abort_exit?entity= : the handler calls ngx.exit
function H.abort_exit()
  local a = ngx.req.get_uri_args()
  get_client():with_lock(a.entity, { timeout = 5 }, function()
    ngx.say("exiting")
    ngx.exit(200)
  end)
  ngx.say("not reached")
end

-- /abort_client?entity= (lua_check_client_abort on): the handler runs until the client goes
function H.abort_client()
  local a = ngx.req.get_uri_args()
  get_client():with_lock(a.entity, { timeout = 5 }, function()
    local deadline = ngx.now() + 30
    while ngx.now() < deadline do ngx.sleep(0.05) end
  end)
end

-- /abort_kill?entity= : the light thread running with_lock is killed while its handler runs
function H.abort_kill()
  local a = ngx.req.get_uri_args()
  local inside = false
  local t = ngx.thread.spawn(function()
    get_client():with_lock(a.entity, { timeout = 5 }, function()
      inside = true
      local deadline = ngx.now() + 30
      while ngx.now() < deadline do ngx.sleep(0.05) end
    end)
  end)
  local deadline = ngx.now() + 10
  while not inside and ngx.now() < deadline do ngx.sleep(0.02) end
  local killed, err = ngx.thread.kill(t)
  reply({ inside = inside, killed = killed ~= nil, err = tostring(err) }) -- (1 on success)
end

-- /held : locks the worker's renewer keeps now
-- /attach_left?entity= : peek-locks a message, hands its lock over to itself (lock_handle,
-- release, attach) and ends the request with the attached message still held
function H.attach_left()
  local a = ngx.req.get_uri_args()
  local c = get_client()
  local msg, err = c:peek_lock(a.entity, { timeout = 5 })
  if not msg then return reply(err_fields({ ok = false }, err)) end
  local handle = assert(msg:lock_handle())
  assert(msg:release())
  local m2, aerr = c:attach(handle, { max_renew = 120 })
  if not m2 then return reply(err_fields({ ok = false }, aerr)) end
  reply({ ok = true, state = m2.lock_state, held = c:renewer_stats().held })
end

-- /retries?entity= : one send by a client made for this request; its stats' retries
function H.retries()
  local a = ngx.req.get_uri_args()
  local c = assert(peeklock.client(os.getenv("PEEKLOCK_CONNECTION_STRING")))
  local ok, err = c:send(a.entity, "retried")
  local st = c:stats()
  c:close()
  reply(err_fields({ ok = ok == true, retries = st.retries, requests = st.requests, failed = st.failed }, err))
end

function H.held()
  local st = get_client():renewer_stats()
  reply({ held = st and st.held or 0 })
end

-- /tls_lock?verify=0|1&hold=S : over HTTPS (the TLS emulator), send one message and hold
-- it in with_lock for S seconds; answers how many renewals went out meanwhile
function H.tls_lock()
  local a = ngx.req.get_uri_args()
  local c = assert(peeklock.client({ connection_string = os.getenv("PEEKLOCK_TLS_CONNECTION_STRING"),
                                     ssl_verify = a.verify == "1" }))
  local sent, serr = c:send("tlsq", "over tls")
  if not sent then return reply(err_fields({ ok = false, step = "send" }, serr)) end
  local base = c:renewer_stats().renewals
  local body, id
  local ok, err = c:with_lock("tlsq", { timeout = 5 }, function(msg)
    body, id = msg.body, msg.message_id
    local deadline = ngx.now() + (tonumber(a.hold) or 0)
    while ngx.now() < deadline do ngx.sleep(0.1) end
    if msg.lock_state ~= "held" then error("lock not held: " .. tostring(msg.lock_state)) end
  end)
  local st = c:renewer_stats()
  reply(err_fields({ ok = ok == true, body = body, id = id, renewals = st.renewals - base,
                     lateness_max_ms = st.lateness_max_ms }, err))
end

-- /tls_fail : https to the plain-HTTP emulator: the handshake fails, and the error says TLS
function H.tls_fail()
  local conn = os.getenv("PEEKLOCK_CONNECTION_STRING"):gsub(";?UseDevelopmentEmulator=true", "")
  local c = assert(peeklock.client({ connection_string = conn, max_retries = 0 }))
  local ok, err = c:send("orders", "never")
  reply(err_fields({ ok = ok == true }, err))
end

-- /process?entity=&n=[&batch=N] : client:process with 3 light threads over n messages; answers
-- the summary and how many handlers ran at once at most. batch: batch handlers of up to N
-- (max_wait 1 s), each message held while its handler runs; the message whose body is p0 is
-- abandoned through the returned table on its first delivery. Also answers the code of the
-- error that ended the run (error), of the last one (last_error), why it stopped (stopped_by)
-- and the seconds it took. idle: idle_timeout (no max_messages unless n); relay: the handler of
-- the message whose body is r0 sends r1 to the entity 1.5 s in, then runs until r1's handler
-- has started (at most 10 s: r1_started says whether it did).
function H.process()
  local a = ngx.req.get_uri_args()
  ngx.update_time()
  local t0 = ngx.now()
  local running, most, largest, batches = 0, 0, 0, 0
  local r1 = a.relay and require("ngx.semaphore").new() -- (posted when r1's handler starts)
  local r1_started = false
  local function enter()
    running = running + 1
    if running > most then most = running end
  end
  local handler = function(msg)
    enter()
    if a.relay and msg.body == "r1" then r1:post(1) end
    if a.relay and msg.body == "r0" then
      ngx.sleep(1.5) -- longer than the idle_timeout: the run's rule is what keeps it going
      assert(get_client():send(a.entity, "r1"))
      r1_started = r1:wait(10) == true
    else
      ngx.sleep(0.2)
    end
    running = running - 1
  end
  if a.batch then
    handler = function(msgs)
      enter()
      batches = batches + 1
      if #msgs > largest then largest = #msgs end
      for _, m in ipairs(msgs) do
        if m.lock_state ~= "held" then error("message not held: " .. tostring(m.lock_state)) end
      end
      ngx.sleep(0.2)
      local out = {}
      for _, m in ipairs(msgs) do
        if m.body == "p0" and m.delivery_count == 1 then out[m] = "abandon" end
      end
      running = running - 1
      return out
    end
  end
  local s = get_client():process(a.entity, handler, { concurrency = 3, max_renew = 60, poll_timeout = 1,
                                                      max_messages = tonumber(a.n), batch = tonumber(a.batch),
                                                      max_wait = 1, idle_timeout = tonumber(a.idle) })
  ngx.update_time()
  reply({ processed = s.processed, failed = s.failed, lost = s.lost, errors = s.errors, most = most,
          largest = largest, batches = batches, settled_by_handler = s.settled_by_handler,
          error = s.error and s.error.code, last_error = s.last_error and s.last_error.code,
          stopped_by = s.stopped_by, r1_started = r1_started, elapsed = ngx.now() - t0 })
end

-- The fields of a process summary the core counts (pl_run_tallies), as in Python's.
local TALLIED = { "received", "redelivered", "processed", "settled_by_handler", "failed", "lost", "unknown",
                  "abandoned_on_drain", "left_to_expire", "errors", "in_flight" }

local function tallies(s)
  local out = { stopped_by = s.stopped_by, error = s.error and s.error.code }
  for _, k in ipairs(TALLIED) do out[k] = s[k] end
  return out
end

-- /tallies?entity= : one light thread over 4 messages of 0, 1, 2: 1 is completed by its handler,
-- 2 raises on its first delivery (abandoned, delivered again): the summary's counts, the same
-- run as tests/python and tests/lua make. closed=1 instead: a client of its own, closed (by
-- stop) once a message was handled: the run ends as "closed".
function H.tallies()
  local a = ngx.req.get_uri_args()
  if a.closed then
    local c = assert(peeklock.client(os.getenv("PEEKLOCK_CONNECTION_STRING")))
    local n = 0
    local s = c:process(a.entity, function() n = n + 1 end, {
      poll_timeout = 1, stop = function() if n >= 1 then c:close() end return false end })
    return reply(tallies(s))
  end
  local s = get_client():process(a.entity, function(msg)
    if msg.body == "1" then assert(msg:complete())
    elseif msg.body == "2" and msg.delivery_count == 1 then error("once") end
  end, { concurrency = 1, max_messages = 4, poll_timeout = 1 })
  reply(tallies(s))
end

function H.ping()
  ngx.say("pong")
end

-- /matrix?op=&entity=&port=&warm=&settle= : one case of the fault matrix
-- (tests/faults/matrix.json) over cosockets, with a client of its own whose endpoint is
-- 127.0.0.1:port (the fault proxy, or a port nothing listens on) and a 1 s request timeout.
-- settle=1: peek-lock the message first (renew/unlock/complete); warm: an empty entity to
-- make one request to first, so the faulted one goes on a reused connection.
function H.matrix()
  local a = ngx.req.get_uri_args()
  local conn = os.getenv("PEEKLOCK_CONNECTION_STRING"):gsub("Endpoint=sb://[^;]+",
    "Endpoint=sb://127.0.0.1:" .. a.port)
  local c = assert(peeklock.client({ connection_string = conn, request_timeout_ms = 1000 }))
  local op, q, out, msg = a.op, a.entity, {}, nil
  if a.settle == "1" then
    msg = c:peek_lock(q, { timeout = 5 })
    if not msg then return reply({ setup_failed = true }) end
  elseif a.warm and a.warm ~= "" then
    -- (a peek-lock, unless that is the operation under test: the proxy cuts by operation)
    if op == "peek_lock" then c:receive_and_delete(a.warm, { timeout = 0 })
    else c:peek_lock(a.warm, { timeout = 0 }) end
  end
  local res, err
  if op == "send" then res, err = c:send(q, "s", { message_id = "s1" })
  elseif op == "send_batch" then
    res, err = c:send_batch(q, { { body = "b", message_id = "b1" }, { body = "b", message_id = "b2" } })
  elseif op == "receive_and_delete" then res, err = c:receive_and_delete(q, { timeout = 0 })
  elseif op == "peek_lock" then res, err = c:peek_lock(q, { timeout = 0 })
  elseif op == "renew" then res, err = msg:renew()
  elseif op == "unlock" then res, err = msg:abandon()
  else res, err = msg:complete() end
  out.ok = res ~= nil and not err
  err_fields(out, err)
  if type(res) == "table" then
    out.id = res.message_id
    if op == "peek_lock" then res:complete() end
  end
  if msg then
    out.state = msg.lock_state
    if out.state == "unknown" then
      local again, err2 = msg:complete() -- remembered: unknown again
      out.again_code = not again and err2 and err2.code or "none"
    end
  end
  out.orphaned = c:stats().orphaned_locks
  c:close()
  reply(out)
end

-- /handoff?entity= : peek-locks a message and answers its lock handle, released here (not
-- renewed, not abandoned): whoever attaches the handle renews and settles it.
function H.handoff()
  local a = ngx.req.get_uri_args()
  local msg, err = get_client():peek_lock(a.entity, { timeout = tonumber(a.timeout) or 5 })
  if not msg then return reply(err_fields({ ok = false, empty = err == nil }, err)) end
  local id = msg.message_id
  local handle, herr = msg:lock_handle()
  assert(msg:release())
  reply(err_fields({ ok = handle ~= nil, handle = handle, id = id }, herr))
end

-- POST /attach?renewals=N, the body a lock handle: attaches it, holds it until the worker's
-- renewals over cosockets renewed it N times, then completes it (attach with a function).
function H.attach()
  ngx.req.read_body()
  local handle = ngx.req.get_body_data() or ""
  local want = tonumber(ngx.req.get_uri_args().renewals) or 0
  local c = get_client()
  local got = 0
  -- (a string that is no handle for this namespace is the core's refusal: raised, here)
  local called, ok, res = pcall(c.attach, c, handle, { max_renew = 120 }, function(msg)
    local base = c:renewer_stats().renewals
    local deadline = ngx.now() + 60
    while got < want and ngx.now() < deadline do
      ngx.sleep(0.05)
      got = c:renewer_stats().renewals - base
    end
    return msg.message_id
  end)
  if not called then return reply({ ok = false, refused = tostring(ok) }) end
  if ok then return reply({ ok = true, id = res, renewals = got }) end
  reply(err_fields({ ok = false }, res))
end

return H
