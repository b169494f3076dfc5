-- A complete OpenResty worker for peeklock (examples/openresty/nginx.conf loads it):
-- consumers started in init_worker_by_lua, drained on reload and exit, the messages of
-- requests that ended first handed back (log_by_lua), a stats endpoint, and metrics
-- (peeklock.metrics: served on /metrics by nginx.conf).
--
-- Copy it and replace handle() with the work. The nginx test runs it (tests/nginx).
local peeklock = require "peeklock.resty"

local W = {}

local ENTITY = os.getenv("PEEKLOCK_ENTITY") or "orders"
local CONCURRENCY = tonumber(os.getenv("PEEKLOCK_CONCURRENCY")) or 4
local HANDOFF_ENTITY = os.getenv("PEEKLOCK_HANDOFF_ENTITY") or "long-jobs"
-- Long polls: fewer requests while idle. A reload or exit cuts them short (cut_on_exit), so
-- a long one does not hold the old workers back; PEEKLOCK_CUT_ON_EXIT=0 lets them run out.
local POLL_TIMEOUT = tonumber(os.getenv("PEEKLOCK_POLL_TIMEOUT")) or 20
local CUT_ON_EXIT = os.getenv("PEEKLOCK_CUT_ON_EXIT") ~= "0"

-- The worker's client (made on first use inside the worker, never in the master).
local function client()
  return assert(peeklock.worker_client(os.getenv("PEEKLOCK_CONNECTION_STRING")))
end

-- The work for one message: return to complete it, error() to abandon it (redelivered).
local function handle(msg)
  ngx.sleep(0.01) -- stands for the real work (a cosocket call, say): it yields, the worker keeps serving
  local shm = ngx.shared.peeklock_example
  if shm then shm:incr("handled", 1, 0) end
  return msg.message_id
end

-- init_worker_by_lua: the consumers run in a timer (cosockets are not allowed in
-- init_worker itself); client:process drains when the worker exits or reloads.
function W.init_worker()
  -- every client made in this worker from now on counts into the shared dict
  require("peeklock.metrics").init("peeklock_metrics")
  local ok, err = ngx.timer.at(0, function(premature)
    if premature then return end
    local s, err = client():process(ENTITY, handle, { concurrency = CONCURRENCY, max_renew = 300,
                                                     poll_timeout = POLL_TIMEOUT, cut_on_exit = CUT_ON_EXIT })
    if s and not s.error then
      ngx.log(ngx.NOTICE, "peeklock example: drained: processed ", s.processed,
              ", failed ", s.failed, ", lost ", s.lost)
    else -- an error waiting cannot mend (a missing entity, a refused key) ended the run, or it never began
      ngx.log(ngx.ERR, "peeklock example: the consumers stopped: ", tostring(s and s.error or err))
    end
  end)
  if not ok then ngx.log(ngx.ERR, "peeklock example: cannot start the consumers: ", err) end
end

-- log_by_lua: hands back the messages of with_lock calls whose request ended first.
function W.log()
  peeklock.request_done()
end

-- exit_worker_by_lua: locks still held (a handler cut off at exit) go back at once.
function W.exit_worker()
  local c = peeklock.worker_client(os.getenv("PEEKLOCK_CONNECTION_STRING"))
  if c then c:close({ unlock_held = true }) end
end

-- GET /stats: the client's counters and the worker's renewals, as JSON.
function W.stats()
  local c = client()
  local st, rn = c:stats(), c:renewer_stats()
  local shm = ngx.shared.peeklock_example
  local parts = { ('"pid":%d'):format(ngx.worker.pid()),
                  ('"handled":%d'):format(shm and shm:get("handled") or 0) }
  for k, v in pairs(st) do -- (st.renewer, a table, is the renewer_stats() below)
    if type(v) == "number" then parts[#parts + 1] = ('"%s":%s'):format(k, tostring(v)) end
  end
  for k, v in pairs(rn) do
    if type(v) == "number" then parts[#parts + 1] = ('"renewer_%s":%s'):format(k, tostring(v)) end
  end
  ngx.header["Content-Type"] = "application/json"
  ngx.say("{", table.concat(parts, ","), "}")
end

-- GET /handoff: peek-locks a message of HANDOFF_ENTITY and answers its lock handle, for a
-- process outside nginx to renew and complete (examples/openresty/finish.py, in Python):
-- a long job leaves the worker and its lock goes with it. The handle is a secret (it
-- carries the lock token): serve it to your own workers only (this server listens on
-- 127.0.0.1), never log it. 204 when no message came within 5 s.
function W.handoff()
  local msg, err = client():peek_lock(HANDOFF_ENTITY, { timeout = 5 })
  if not msg then
    ngx.status = err and 502 or 204
    if err then ngx.say(tostring(err)) end
    return
  end
  local lock_handle
  lock_handle, err = msg:lock_handle()
  msg:release() -- not renewed, not abandoned here: the taker owns the lock now
  if not lock_handle then
    ngx.status = 502
    ngx.say(tostring(err))
    return
  end
  ngx.header["Content-Type"] = "text/plain"
  ngx.header["Cache-Control"] = "no-store"
  ngx.say(lock_handle)
end

return W
