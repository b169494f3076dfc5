--- peeklock.resty: the peeklock calls inside OpenResty / nginx (lua-nginx-module)
-- without blocking the worker.
--
--   local peeklock = require "peeklock.resty"
--   local client = assert(peeklock.worker_client(conn_str))  -- the worker's client
--   local ok, err = client:with_lock("orders", { timeout = 20 }, function(msg) ... end)
--
-- Every HTTP exchange goes over ngx.socket.tcp (cosockets): the C core builds the
-- request (URL, headers with the SAS Authorization, body) and interprets the
-- response (status codes, BrokerProperties, lock bookkeeping); this file moves the
-- bytes and reports each attempt to the core's outcome module, which decides whether
-- and when to send it again (core.outcome_report). Lock renewal while a handler runs
-- goes over cosockets too, from one loop per worker (below, "renewals over
-- cosockets"), so it obeys the same resolver and TLS settings; when each lock is renewed,
-- retried or given up is the C renewer's schedule's decision (core.schedule_*), and what a
-- finish sends is pl_finish_action's. docs/lua.md explains the choice.
--
-- The same method names and results as require "peeklock": send, send_batch,
-- peek_lock, receive_and_delete, with_lock, msg:renew/abandon/complete, and the lock
-- hand-over (msg:lock_handle, msg:release, client:attach: an attached lock is renewed by
-- the loop below and settled over cosockets).

local peeklock = require "peeklock"
local I = require "peeklock.internal" -- what this file shares with peeklock.lua
local core = require "peeklock.core"
local ngx = ngx ---@diagnostic disable-line: undefined-global
if type(ngx) ~= "table" or not ngx.socket then
  error("peeklock.resty needs OpenResty / lua-nginx-module (use require 'peeklock' elsewhere)", 2)
end
local semaphore = require "ngx.semaphore" -- (lua-resty-core, which lua-nginx-module loads)

local tcp = ngx.socket.tcp
local type, tonumber, tostring, setmetatable, rawget = type, tonumber, tostring, setmetatable, rawget
local concat, lower, find, sub, byte = table.concat, string.lower, string.find, string.sub, string.byte
local code_error, last_error, fail = I.code_error, I.last_error, I.fail
local check_client, check_string, check_opts = I.check_client, I.check_string, I.check_opts
local opt_timeout, check_options = I.opt_timeout, I.check_options
local request_send_from, batch_from = I.request_send_from, I.batch_from
local wrap_message = I.wrap_message
-- argument errors raised through peeklock's checks point past this file too, at the caller
if debug and debug.getinfo then I.OWN_SOURCES[debug.getinfo(1, "S").source] = true end

local M = {
  _VERSION = peeklock._VERSION,
  version = peeklock.version,
  codes = peeklock.codes,
  Error = peeklock.Error,
  is_error = peeklock.is_error,
  datetime = peeklock.datetime,
  sas_token = peeklock.sas_token,
  parse_connection_string = peeklock.parse_connection_string,
  lock_states = peeklock.lock_states,
  core = core,
}

-- ------------------------------------------------------------------ HTTP/1.1 over a cosocket

-- How far a failed exchange got (the third result of http_exchange and attempt):
local UNSENT = "unsent"          -- the request never went out (connect or TLS failed)
local UNANSWERED = "unanswered"  -- it went out (or partly), no complete answer: maybe applied
local MALFORMED = "malformed"    -- an answer came that cannot be read (never retried)
local ANSWERED = "answered"      -- the C core interpreted an answer (status error)
local CUT = "cut"                -- a long poll cut at worker exit before any answer came

local RESTY_POOL_SIZE = 32 -- (pool_size absent or 0; see Client.new below)
local TIMEOUT, CONNECTION, PROTOCOL = core.PL_ETIMEOUT, core.PL_ECONNECT, core.PL_EPROTOCOL

-- A failed exchange's error (errno: TIMEOUT, CONNECTION or PROTOCOL); a malformed answer
-- (PROTOCOL) is not retried.
local function transport_error(errno, op, what, detail)
  return code_error(errno, { retryable = errno ~= PROTOCOL, message = what .. ": " .. tostring(detail), op = op })
end

local function parse_url(url)
  local scheme, host, port, path = url:match("^(https?)://([^/:]+):?(%d*)(.*)$")
  if not scheme then return nil end
  if host:sub(1, 1) == "[" then return nil end -- IPv6 literals are not used by Service Bus
  port = tonumber(port) or (scheme == "https" and 443 or 80)
  if path == "" then path = "/" end
  return scheme, host, port, path
end

local function is_space(b) return b == 32 or (b and b >= 9 and b <= 13) end

-- "Name: value" -> name, value without the whitespace around it; nil when there is no
-- name before a colon. What line:match("^([^:]+):%s*(.-)%s*$") gives, in one pass
-- (that pattern backtracks at every byte of the value: ~80k instructions for a
-- BrokerProperties header).
local function split_header(line)
  local c = find(line, ":", 1, true)
  if not c or c == 1 then return nil end
  local s, e = c + 1, #line
  while is_space(byte(line, s)) do s = s + 1 end
  while e >= s and is_space(byte(line, e)) do e = e - 1 end
  return sub(line, 1, c - 1), sub(line, s, e)
end

local MAX_BODY = core.max_body_bytes -- the core's limit, enforced here as the body streams in
local TOO_BIG = "body over the limit"

-- Reads the body: Content-Length, chunked, or until the server closes; never more than
-- MAX_BODY bytes (refused as it streams in, not buffered whole and checked after).
local function read_body(sock, status, method, length, chunked)
  if method == "HEAD" or status == 204 or status == 304 or (status >= 100 and status < 200) then
    return "", true
  end
  if chunked then
    local parts, total = {}, 0
    while true do
      local line, err = sock:receive("*l")
      if not line then return nil, err end
      local size = tonumber(line:match("^%s*(%x+)"), 16)
      if not size then return nil, "bad chunk size" end
      total = total + size
      if total > MAX_BODY then return nil, TOO_BIG end
      if size == 0 then
        repeat -- trailers, up to the empty line
          line, err = sock:receive("*l")
          if not line then return nil, err end
        until line == ""
        return concat(parts), true
      end
      local data
      data, err = sock:receive(size)
      if not data then return nil, err end
      parts[#parts + 1] = data
      line, err = sock:receive("*l")
      if not line then return nil, err end
    end
  end
  if length then
    if length == 0 then return "", true end
    if length > MAX_BODY then return nil, TOO_BIG end
    local data, err = sock:receive(length)
    if not data then return nil, err end
    return data, true
  end
  local parts, total = {}, 0
  while true do
    local data, err, partial = sock:receive(65536)
    data = data or partial
    if data and #data > 0 then
      total = total + #data
      if total > MAX_BODY then return nil, TOO_BIG end
      parts[#parts + 1] = data
    end
    if err == "closed" then return concat(parts), false end
    if err then return nil, err end
  end
end

-- A long poll cut at worker exit (cut_on_exit) waits in slices this long: a worker that starts
-- exiting stops waiting within one.
local CUT_SLICE_MS = 500
local exiting = ngx.worker.exiting

-- Reads the status line of a long poll's answer in slices of CUT_SLICE_MS, up to
-- read_timeout_ms in all: line, or nil, err, or nil, CUT when the worker began to exit
-- before any byte of the answer came (sock is then closed: whatever the server answers
-- is never read, see docs/lua.md).
local function receive_status_cut(self, sock, read_timeout_ms)
  local deadline = core.pl_now_mono_ms() + read_timeout_ms
  local got = ""
  while true do
    local left = deadline - core.pl_now_mono_ms()
    if got == "" and exiting() then sock:close(); return nil, CUT end
    if left <= 0 then return nil, "timeout" end
    sock:settimeouts(self._connect_timeout_ms, self._send_timeout_ms, left < CUT_SLICE_MS and left or CUT_SLICE_MS)
    local line, err, partial = sock:receive("*l")
    if line then
      sock:settimeouts(self._connect_timeout_ms, self._send_timeout_ms,
                       math.max(deadline - core.pl_now_mono_ms(), 1))
      return got .. line
    end
    if err ~= "timeout" then return nil, err end -- (the cosocket closed itself)
    got = got .. (partial or "")
  end
end

-- One request (a pl_request handle) -> status, headers { name, value, name, value, ... }, body | nil, err
-- cut: a long poll that a worker exit may cut (nil, nil, CUT).
local function http_exchange(self, req, op, read_timeout_ms, cut)
  if cut and exiting() then return nil, nil, CUT end -- not even sent
  -- the header lines come joined (an empty Expect left out), with whether Host and
  -- Content-Length are among them
  local method, url, body, head, has_host, has_len = core.request_head(req)
  local scheme, host, port, path = parse_url(url)
  if not scheme then
    return nil, code_error(core.PL_EINVAL, { op = op, message = "unsupported endpoint URL for cosockets" })
  end
  local lines = { method, " ", path, " HTTP/1.1\r\n", head }
  if not has_host then
    local default = (scheme == "https" and port == 443) or (scheme == "http" and port == 80)
    lines[#lines + 1] = "Host: " .. host .. (default and "" or (":" .. port)) .. "\r\n"
  end
  if not has_len then lines[#lines + 1] = "Content-Length: " .. #body .. "\r\n" end
  lines[#lines + 1] = "\r\n"
  lines[#lines + 1] = body

  local sock = tcp()
  sock:settimeouts(self._connect_timeout_ms, self._send_timeout_ms, read_timeout_ms)
  -- (a connection made without verifying the certificate is never handed to a client that verifies)
  local pool = scheme .. ":" .. host .. ":" .. port .. (self._ssl_verify and "" or ":unverified")
  local ok, err = sock:connect(host, port, { pool = pool })
  if not ok then return nil, transport_error(CONNECTION, op, "connect failed", err), UNSENT end
  if scheme == "https" and sock:getreusedtimes() == 0 then
    -- (false: no session object back; lua-resty-core 0.1.25 asserts fetching one after a
    -- verified handshake that had to wait)
    ok, err = sock:sslhandshake(false, host, self._ssl_verify)
    if not ok then sock:close(); return nil, transport_error(CONNECTION, op, "TLS handshake failed", err), UNSENT end
  end
  core.stat_request(self._h, 1, sock:getreusedtimes() > 0 and 1 or 0, 0)
  local sent_ms = core.pl_now_mono_ms()
  ok, err = sock:send(lines)
  if not ok then sock:close(); return nil, transport_error(CONNECTION, op, "send failed", err), UNANSWERED end

  local line
  if cut then
    line, err = receive_status_cut(self, sock, read_timeout_ms)
    if err == CUT then return nil, nil, CUT end
  else
    line, err = sock:receive("*l")
  end
  if not line then
    sock:close()
    return nil, transport_error(err == "timeout" and TIMEOUT or CONNECTION, op, "no response", err), UNANSWERED
  end
  local status = tonumber(line:match("^HTTP/1%.%d (%d%d%d)"))
  if not status then sock:close(); return nil, transport_error(PROTOCOL, op, "bad status line", ""), MALFORMED end
  local headers, length, chunked, close = {}, nil, false, false
  while true do
    line, err = sock:receive("*l")
    if not line then
      sock:close()
      if err == "timeout" then return nil, transport_error(TIMEOUT, op, "headers cut short", err), UNANSWERED end
      return nil, transport_error(PROTOCOL, op, "headers cut short", err), MALFORMED -- the status line came
    end
    if line == "" then break end
    local name, value = split_header(line)
    if name then
      local n = #headers
      headers[n + 1], headers[n + 2] = name, value
      local lname = lower(name)
      if lname == "content-length" then length = tonumber(value)
      elseif lname == "transfer-encoding" and lower(value):find("chunked", 1, true) then chunked = true
      elseif lname == "connection" and lower(value):find("close", 1, true) then close = true end
    end
  end
  local data, reusable
  data, err = read_body(sock, status, method, length, chunked)
  if not data then
    sock:close()
    if err == "timeout" then return nil, transport_error(TIMEOUT, op, "body cut short", err), UNANSWERED end
    if err == TOO_BIG then
      return nil, transport_error(PROTOCOL, op, "response exceeded a size limit",
                                  "its body is over " .. MAX_BODY .. " bytes"), MALFORMED
    end
    return nil, transport_error(PROTOCOL, op, "body cut short", err), MALFORMED -- as libcurl's partial file
  end
  reusable = err -- second value of read_body: whether the connection can be reused
  if reusable and not close then sock:setkeepalive(self._keepalive_ms, self._pool_size)
  else sock:close() end
  return status, headers, data, sent_ms
end

-- One attempt: send req, feed the answer to the C core.
-- how (UNSENT...ANSWERED), rc (its PL_* code), message handle | nil, err (a transport
-- error) | nil, status, the Retry-After header value | nil
local function attempt(self, req, op, msg_h, read_timeout_ms, cut)
  local status, headers, body, sent_ms = http_exchange(self, req, op, read_timeout_ms, cut)
  if body == CUT then return CUT end
  if not status then return body, headers.errno, nil, headers end
  local rc, out, answered = core.result_from(self._h, req, msg_h, status, headers, body, sent_ms)
  if not answered then return MALFORMED, rc, nil, nil, status end
  local retry_after
  if rc < 0 then
    for i = 1, #headers, 2 do
      if lower(headers[i]) == "retry-after" then retry_after = headers[i + 1] end
    end
  end
  return ANSWERED, rc, out, nil, status, retry_after
end

-- ------------------------------------------------------------------ outcomes
-- What a failed exchange means (retry after a delay, done, or outcome unknown) is decided
-- by the C core's outcome module (csrc/outcome.c, the table in docs/lua.md): this loop
-- only reports each attempt to it and sleeps (ngx.sleep, so the worker keeps serving)
-- when it says so. Runs req: rc, out | nil, err. cut: a peek-lock's long poll that a worker
-- exit cuts short (PL_EMPTY: nothing received). once: a single attempt (the renewal loop's
-- renew, whose retries the schedule times): nil, err, the answer's Retry-After when it fails,
-- and how far its last attempt got (UNSENT ... ANSWERED).
local function exchange(self, req, op, msg_h, read_timeout_ms, entity, cut, once)
  local call = core.outcome_new(self._h, req, math.random(1, 2147483647), once)
  while true do
    local how, rc, out, err, status, retry_after = attempt(self, req, op, msg_h, read_timeout_ms, cut)
    if not how then return nil, err end -- the request could not even be written (bad URL)
    if how == CUT then
      ngx.log(ngx.NOTICE, "peeklock: peek_lock on ", tostring(entity), ": long poll cut at worker exit")
      return core.PL_EMPTY
    end
    local again, v, orphaned = core.outcome_report(call, how, status, rc, retry_after,
                                                   err and err.message or nil, msg_h)
    if not again and orphaned and orphaned > 0 then
      ngx.log(ngx.WARN, "peeklock: peek_lock on ", tostring(entity), ": an answer was lost after the ",
              "server may have locked a message; that message stays locked until its lock ",
              "expires, then comes back (stats().orphaned_locks)")
    end
    if again then -- (counted as a retry by outcome_report)
      ngx.sleep(v / 1000)
    elseif v >= 0 then
      return v, out
    else
      return nil, last_error(v, op), retry_after, how
    end
  end
end

-- ------------------------------------------------------------------ client

local Client = setmetatable({}, { __index = peeklock.Client })
Client.__index = Client
Client.__name = "peeklock.resty.Client"
Client._peeklock_client = true
Client.__gc = peeklock.Client.__gc
Client.__tostring = peeklock.Client.__tostring
M.Client = Client

--- peeklock.resty.client(connection_string | options) -> client | nil, err
-- Options as for peeklock.client, plus keepalive_ms (default 60000), pool_size
-- (cosocket keep-alive pool per endpoint, default 32), ssl_verify (default true).
-- metrics = { dict = name of a lua_shared_dict [, sync_interval = s] }: this client counts into
-- peeklock.metrics (else into peeklock.metrics.init's, when it was called before).
local RESTY_OPTIONS = { keepalive_ms = "number", ssl_verify = "boolean", metrics = "table" }
local metrics_module -- peeklock.metrics, loaded when metrics are first asked for
-- (durations, timed only when metrics are on: peeklock.metrics' sub-millisecond clock)
local function now_ms() return metrics_module.now_ms() end

-- The peeklock.metrics this client counts into, or false (nothing counted, at no cost).
local function client_metrics(opts)
  local m = opts.metrics
  if m == nil then
    local mm = package.loaded["peeklock.metrics"]
    metrics_module = metrics_module or mm
    return mm and mm.default() or false
  end
  if type(m.dict) ~= "string" then
    error("bad option 'metrics' to 'client' ({ dict = name of a lua_shared_dict } expected)", 3)
  end
  metrics_module = metrics_module or require "peeklock.metrics"
  return metrics_module.new(m.dict, m)
end

function M.client(opts)
  if type(opts) == "table" and opts.renewer ~= nil then
    error("bad option 'renewer' to 'client' (peeklock.resty renews over cosockets: no renewer options)", 2)
  end
  local c, err = peeklock.client(opts, RESTY_OPTIONS)
  if not c then return nil, err end
  if type(opts) ~= "table" then opts = {} end
  if opts.keepalive_ms and opts.keepalive_ms < 0 then
    error("bad option 'keepalive_ms' to 'client' (out of range 0..)", 2)
  end
  -- the C client's timeouts: its options' or its defaults
  c._connect_timeout_ms = core.pl_client_connect_timeout_ms(c._h)
  c._send_timeout_ms = core.pl_client_request_timeout_ms(c._h)
  c._request_timeout_ms = c._send_timeout_ms
  c._keepalive_ms = opts.keepalive_ms or 60000
  -- the cosockets kept: pool_size when given (the core checked it); else RESTY_POOL_SIZE, larger
  -- than the C client's default because nginx shares one pool per worker and host among every
  -- light thread of every client, where the C client keeps a pool of its own
  c._pool_size = (opts.pool_size or 0) > 0 and core.pl_client_pool_size(c._h) or RESTY_POOL_SIZE
  c._ssl_verify = opts.ssl_verify ~= false
  c._metrics = client_metrics(opts)
  if c._metrics then -- (server.address: the endpoint's host)
    c._server = tostring(core.pl_client_endpoint(c._h)):match("^%a+://([^/:]+)") or ""
  end
  -- (max_retries, retry_base_ms, retry_max_ms: the C client's, which the outcome module uses)
  return setmetatable(c, Client)
end

-- The worker's clients, by worker_client's key.
local worker_clients = {}

--- peeklock.resty.worker_client(connection_string | options [, name]) -> client | nil, err
-- The worker's client for these options: made on the first call inside the worker
-- (init_worker_by_lua, a timer or a handler; never in init_by_lua, the master) and the
-- same one afterwards, for every request of the worker (made again if it was closed).
-- Keyed by name, else by the connection string or endpoint. All clients share the
-- worker's one renewer thread either way.
function M.worker_client(opts, name)
  if ngx.get_phase() == "init" then
    error("peeklock.resty.worker_client: not in init_by_lua (the master): call it inside the worker", 2)
  end
  local key = name
  if key == nil then
    if type(opts) == "table" then key = opts.connection_string or opts.endpoint else key = opts end
  end
  if type(key) ~= "string" then
    error("bad argument #2 to 'worker_client' (a name expected for these options)", 2)
  end
  local c = worker_clients[key]
  if c and rawget(c, "_h") then return c end
  local err
  c, err = M.client(opts)
  if not c then return nil, err end
  worker_clients[key] = c
  return c
end

-- The answer to a send or send_batch request (rc, req of the native that made it):
-- true, or nil, err.
-- (entity and n, the number of messages, for the metrics)
local function exchange_sent(self, op, rc, req, entity, n)
  if rc < 0 then return fail(rc, op) end
  local m = self._metrics
  local t0 = m and now_ms()
  local ok, err = exchange(self, req, op, nil, self._request_timeout_ms)
  core.release(req)
  if m then
    local et = not ok and err.code or nil
    m:operation("send", "send", entity, self._server, (now_ms() - t0) / 1000, et)
    m:sent(entity, self._server, n, et)
  end
  if not ok then return nil, err end
  return true
end

function Client:send(entity, body, opts)
  local h, err = check_client(self, "send")
  if not h then return nil, err end
  local rc, req = request_send_from("send", h, entity, body, opts)
  if not rc then return nil, req end
  return exchange_sent(self, "send", rc, req, entity, 1)
end

function Client:send_batch(entity, list)
  local rc, req = batch_from(core.pl_request_send_batch, self, entity, list)
  if not rc then return nil, req end
  return exchange_sent(self, "send_batch", rc, req, entity, #list)
end

-- (_cut_on_exit: process's, for its own polls)
local RECEIVE_OPTIONS = { timeout = "number?", _cut_on_exit = "boolean" }

local function receive(self, op, entity, opts, peek)
  local h, err = check_client(self, op)
  if not h then return nil, err end
  check_string(op, 1, entity)
  opts = check_opts(op, 2, opts)
  check_options(op, opts, RECEIVE_OPTIONS)
  local timeout = opt_timeout(op, opts, "timeout", core.PL_DEFAULT_RECEIVE_TIMEOUT_S)
  local rc, req = core.pl_request_receive(h, entity, timeout, peek and 1 or 0)
  if rc < 0 then return fail(rc, op) end
  local m = self._metrics
  local t0 = m and now_ms()
  local out
  -- (only a peek-lock's poll is ever cut: a receive-and-delete answered as it was cut would lose
  -- its message)
  rc, out = exchange(self, req, op, nil, timeout * 1000 + self._request_timeout_ms, entity,
                     peek and timeout > 0 and opts._cut_on_exit == true)
  core.release(req)
  if m then
    m:operation(op, "receive", entity, self._server, (now_ms() - t0) / 1000, not rc and out.code or nil)
    if rc and rc ~= core.PL_EMPTY and out then m:consumed(op, entity, self._server, 1) end
  end
  if not rc then return nil, out end
  if rc == core.PL_EMPTY or not out then return nil, nil end
  return wrap_message(self, out)
end

function Client:peek_lock(entity, opts) return receive(self, "peek_lock", entity, opts, true) end
function Client:receive_and_delete(entity, opts) return receive(self, "receive_and_delete", entity, opts, false) end

local SETTLE_OPS = { renew = core.PL_SETTLE_RENEW, abandon = core.PL_SETTLE_UNLOCK, complete = core.PL_SETTLE_COMPLETE }
-- the conventions' operation name and type of each (for the metrics)
local SETTLE_METRIC = { renew = { "renew_message_lock", "renew" }, abandon = { "abandon", "settle" },
                        complete = { "complete", "settle" } }

-- The settle fence is the C core's (held -> settling before the first yield, then settled,
-- lost, unknown, or held again), as for the blocking settles: a second settle or a renew
-- of a message being settled, or one whose earlier settle had an unknown outcome, gets
-- the error the C core words.
function Client:_settle(msg, op, once)
  local h, mh = I.settle_handles(self, msg, op)
  if not h then return nil, mh end
  -- (PL_LOCK_NONE, a receive-and-delete message: pl_request_settle says there is no lock)
  if core.pl_message_lock_state(mh) ~= core.PL_LOCK_NONE then
    local frc = core.fence_enter(mh, SETTLE_OPS[op])
    if frc < 0 then return nil, last_error(frc, op) end
  end
  local settling = op ~= "renew"
  -- Renewal stops before settling starts, so a renew never races a complete/unlock.
  if settling and self._renewer then self:_renew_remove(self._renewer, mh) end
  local rc, req = core.pl_request_settle(h, mh, SETTLE_OPS[op])
  if rc < 0 then
    local err = last_error(rc, op)
    if settling then core.fence_leave(mh, rc) end
    return nil, err
  end
  local m = self._metrics
  local t0 = m and now_ms()
  local ok, err, retry_after, how = exchange(self, req, op, mh, self._request_timeout_ms, nil, nil, once)
  core.release(req)
  if settling then core.fence_leave(mh, ok and 0 or err.errno) end
  if m then
    local name = SETTLE_METRIC[op]
    m:operation(name[1], name[2], core.pl_message_entity(mh), self._server, (now_ms() - t0) / 1000,
                not ok and err.code or nil)
  end
  if not ok then return nil, err, retry_after, how end
  return true
end

-- A held message dropped to the collector: its renewal stops now, and it is abandoned over
-- a cosocket from a zero-delay timer (a finalizer cannot yield) through a second
-- reference to it.
function Client:_dropped(mh)
  local r = rawget(self, "_renewer")
  if r then self:_renew_remove(r, mh) end
  if not rawget(self, "_h") then return end
  local h2 = core.message_ref(mh)
  local ok = ngx.timer.at(0, function()
    local msg = wrap_message(self, h2)
    self:_settle(msg, "abandon")
    msg:free()
  end)
  if not ok then core.release(h2) end
end

-- ------------------------------------------------------------------ renewals over cosockets

-- Locks held by with_lock are renewed over cosockets, like every other request of the
-- worker, so they obey the same resolver, lua_ssl_trusted_certificate / ssl_verify and
-- keep-alive pool, and a failure says what failed (TLS included). One loop per worker (a
-- zero-delay timer, started by the first lock and ending when none is left) follows the
-- C core's renewal schedule (csrc/schedule.c through core.schedule_*, the rules the C
-- renewer thread follows): it asks the schedule which lock is due -- at the earlier of
-- expiry minus the measured p99 renew round trip plus a margin, and half the remaining
-- time, with jitter --, sends each renewal in a light thread of its own (through
-- _settle: the C core builds the request, reads the answer, extends or loses the lock),
-- reports the result back, and waits until the next is due or something changes what is
-- due (a lock added, a renewal answered: ngx.semaphore, posted then). A failed renewal is retried
-- when the schedule says (backoff, or Retry-After), and a lock the schedule gives up on
-- (no lock time left to retry in) is marked lost, as the C renewer does. docs/lua.md.
local RENEWER = setmetatable({}, { __name = "peeklock.resty.renewer", __tostring = function()
  return "peeklock.resty.renewer(cosockets)" end })
local RN = { entries = {}, handles = setmetatable({}, { __mode = "v" }), n = 0, running = false,
             renewals = 0, failures = 0, lost = 0, cap_reached = 0, lateness_max_ms = 0, inflight = 0,
             wakeups = 0, sched = nil, -- (made by the first lock, in the worker: its jitter seed is the worker's)
             sema = nil } -- (the loop waits on it; made with the schedule)
M._renewals = RN
local HELD = core.PL_LOCK_HELD
-- The loop's wait when no lock is queued (all renewals in flight): until posted, in slices
-- that fit ngx.semaphore's millisecond int.
local RN_IDLE_WAIT_S = 3600

-- Something changed what is due (a lock added, a renewal rescheduled or given up, the last
-- lock gone): wakes the loop if it waits. (The loop is the semaphore's only waiter, and when
-- it is not waiting it asks the schedule again before it does: no post is needed then.)
local function rn_wake()
  local sema = RN.sema
  if sema and sema:count() < 0 then sema:post(1) end
end

local function rn_forget(key)
  local e = RN.entries[key]
  if e then
    RN.entries[key], RN.handles[key] = nil, nil
    RN.n = RN.n - 1
    core.schedule_remove(RN.sched, key)
    local m = e.client._metrics
    if m then m:locks_held(RN.n) end
    if RN.n == 0 then rn_wake() end -- (the loop ends now rather than when its wait runs out)
  end
end

-- What with_lock reports when the lock was lost (kept only for a with_lock holding it).
local function rn_lost(e, key, err, why, mh)
  RN.lost = RN.lost + 1
  local c = e.client
  local m = c._metrics
  if m then m:lost(core.pl_message_entity(mh), c._server) end
  if c._active[key] then
    c._lost[key] = { type = "lost", errno = err and err.errno or core.PL_ELOCKLOST,
                     status = err and err.status or 0, reason = why }
  end
end

local function rn_renew(e, key, mh)
  local m = e.client._metrics
  -- (the slack: the lock time left when the renewal lands, from what was left when it went out)
  local t0, left0 = core.pl_now_mono_ms(), m and core.pl_message_lock_remaining_ms(mh)
  local done, ok, err, retry_after, how = pcall(e.client._settle, e.client, { _h = mh }, "renew", true)
  local now = core.pl_now_mono_ms()
  RN.inflight = RN.inflight - 1
  if not done then -- (a bug, not a failed renewal: logged, and the lock tried again)
    ngx.log(ngx.ERR, "peeklock: renewal failed: ", tostring(ok))
    ok, err = nil, nil
  end
  if m then
    local slack = ok and (left0 - (now - t0)) or nil
    m:renewal(core.pl_message_entity(mh), e.client._server, ok, slack and (slack > 0 and slack / 1000 or 0),
              err and err.code)
  end
  -- (whether this round trip counts is the schedule's rule, the C renewer's)
  core.schedule_note_answer(RN.sched, now - t0, ok or how == ANSWERED,
                            not ok and err ~= nil and err.errno == TIMEOUT)
  if RN.entries[key] ~= e then return end -- taken out meanwhile (settled, dropped, released)
  rn_wake() -- (what follows queues it again or drops it)
  if ok then
    RN.renewals = RN.renewals + 1
    if core.schedule_renewed(RN.sched, key, now, core.pl_message_lock_expiry_mono_ms(mh)) then return end
    err = nil -- (no memory to queue it again: as a failure)
  end
  RN.failures = RN.failures + 1
  local st = core.pl_message_lock_state(mh)
  if st == core.PL_LOCK_LOST then
    rn_forget(key)
    rn_lost(e, key, err, "lock lost: " .. tostring(err and err.message), mh)
  elseif st ~= HELD then
    rn_forget(key)
  elseif not core.schedule_failed(RN.sched, key, now, retry_after) then
    rn_forget(key) -- no lock time left to retry in
    core.mark_lost(mh, err and err.errno or core.PL_ELOCKLOST)
    rn_lost(e, key, err, core.PL_REASON_GAVE_UP .. (err and (" (" .. tostring(err.message) .. ")") or ""), mh)
  end
end

-- The lock of key, due now (what: "renew" or "cap"); spawns its renewal.
local function rn_due(key, what, late)
  local e, mh = RN.entries[key], RN.handles[key]
  if not e then core.schedule_remove(RN.sched, key) return end
  if not mh or core.pl_message_lock_state(mh) ~= HELD then
    rn_forget(key) -- collected (its drop hook abandons it), settled or lost meanwhile
  elseif what == "cap" then
    rn_forget(key)
    RN.cap_reached = RN.cap_reached + 1
    local m = e.client._metrics
    if m then m:cap_reached(core.pl_message_entity(mh), e.client._server) end
  else
    if late > RN.lateness_max_ms then RN.lateness_max_ms = late end
    RN.inflight = RN.inflight + 1
    local t, err = ngx.thread.spawn(rn_renew, e, key, mh)
    if not t then
      RN.inflight = RN.inflight - 1
      ngx.log(ngx.ERR, "peeklock: cannot start a renewal: ", err)
      if not core.schedule_failed(RN.sched, key, core.pl_now_mono_ms()) then
        rn_forget(key)
        core.mark_lost(mh, core.PL_EINTERNAL)
        rn_lost(e, key, nil, "no renewal could be started before the lock expired", mh)
      end
    end
  end
end

local function rn_loop(premature)
  if premature then RN.running = false return end
  -- (it goes on while the worker exits: handlers still running as it drains keep their locks)
  while RN.n > 0 do
    RN.wakeups = RN.wakeups + 1
    local key, what, late = core.schedule_pop(RN.sched, core.pl_now_mono_ms())
    while key ~= nil do -- (a spawned renewal runs until it yields, and may add or drop locks)
      rn_due(key, what, late)
      key, what, late = core.schedule_pop(RN.sched, core.pl_now_mono_ms())
    end
    -- (what: after nil, the ms until the next is due, at least 1; + 0.5: ngx.semaphore truncates
    -- the seconds * 1000 it is given to whole ms; nil: none queued, until posted)
    if RN.n > 0 then RN.sema:wait(what and (what + 0.5) / 1000 or RN_IDLE_WAIT_S) end
  end
  RN.running = false
end

local function rn_start()
  if RN.running then return true end
  local ok, err = ngx.timer.at(0, rn_loop)
  if not ok then return nil, err end
  RN.running = true
  return true
end

function Client:_get_renewer()
  self._renewer = RENEWER
  return RENEWER
end

function Client:_renew_add(_, mh, max_renew_ms)
  if core.pl_message_lock_state(mh) ~= HELD then return core.PL_ESTATE end
  local key = core.key(mh)
  local now = core.pl_now_mono_ms()
  if RN.entries[key] then rn_forget(key) end
  if not RN.sched then
    RN.sema = semaphore.new()
    RN.sched = core.schedule_new(ngx.worker.pid() * 1000003 + now % 1000003)
  end
  if not core.schedule_add(RN.sched, key, now, core.pl_message_lock_expiry_mono_ms(mh),
                           core.pl_message_lock_duration_ms(mh), now + max_renew_ms) then
    return core.PL_ENOMEM
  end
  RN.n = RN.n + 1
  RN.entries[key] = { client = self }
  if self._metrics then self._metrics:locks_held(RN.n) end
  RN.handles[key] = mh
  rn_wake() -- (it may be due before the loop's wait ends)
  local ok, err = rn_start()
  if not ok then
    rn_forget(key)
    ngx.log(ngx.ERR, "peeklock: cannot start the renewal timer: ", err)
    return core.PL_EINTERNAL
  end
  return 0
end

function Client:_renew_remove(_, mh) rn_forget(core.key(mh)) end

-- The end of a held message's handler (peeklock.lua's finish), over cosockets: the
-- blocking pl_renewer_finish would stall the worker, so the settle the core chooses
-- (pl_finish_action: complete or abandon while the lock is held, nothing otherwise) is
-- sent here, and pl_finish_outcome reads what became of the message from its own state.
local FINISH_OPS = { [core.PL_SETTLE_COMPLETE] = "complete", [core.PL_SETTLE_UNLOCK] = "abandon" }
function Client:_finish_held(r, msg, mh, ok)
  if r then self:_renew_remove(r, mh) end
  local op = FINISH_OPS[core.pl_finish_action(mh, ok and 1 or 0)]
  local sent = false
  if op then
    local sok, serr = self:_settle(msg, op)
    if not sok and core.pl_message_lock_state(mh) == HELD then return core.PL_FINISH_HELD, serr end
    sent = sok or serr.errno ~= core.PL_ESTATE -- (PL_ESTATE: the handler's settle came first, as hold.c reads it)
  end
  return core.pl_finish_outcome(mh, sent and 1 or 0)
end

-- (no C renewer, no events: lost locks are recorded as they are found)
function Client.poll_events() return 0 end

--- The worker's renewals: held, renewals, failures, lost, cap_reached, lateness_max_ms
-- (the most any renewal went out after its due time), wakeups (the times the
-- loop woke up to ask the schedule what is due), threads (0).
function Client:renewer_stats()
  return { held = RN.n, renewals = RN.renewals, failures = RN.failures, lost = RN.lost,
           cap_reached = RN.cap_reached, lateness_max_ms = RN.lateness_max_ms, wakeups = RN.wakeups,
           threads = 0 }
end

-- ------------------------------------------------------------------ processor

--- client:process(entity, handler, opts) -> summary | nil, err
-- As peeklock's, with concurrency light threads (default 1, at most 256) each taking
-- message after message (or batch after batch: opts.batch); run it in a timer
-- (init_worker_by_lua: ngx.timer.at) or a request. Drains when the worker exits or reloads
-- (ngx.worker.exiting()): no new receive starts, running handlers finish, a batch being
-- collected is given back, and a long poll in flight is cut within half a second
-- (cut_on_exit, default true; false: it runs out, up to poll_timeout). docs/lua.md.
local PROCESS_RESTY_OPTIONS = { cut_on_exit = "boolean" }
function Client:process(entity, handler, opts)
  local o, err = I.process_args(self, entity, handler, opts, core.PL_MAX_CONCURRENCY, PROCESS_RESTY_OPTIONS)
  if not o then return nil, err end
  o.cut_on_exit = not (type(opts) == "table" and opts.cut_on_exit == false)
  local s, serr = I.new_summary(o)
  if not s then return nil, serr end
  local stop = o.stop
  local function stopping()
    if s.stopped then return true end
    if ngx.worker.exiting() then I.stop_run(s, core.PL_RUN_SIGNAL); return true end
    return I.stop_asked(s, stop)
  end
  local loop = o.batch and I.batch_loop or I.process_loop
  local threads = {}
  for i = 1, o.concurrency do
    local t, terr = ngx.thread.spawn(loop, self, entity, handler, o, s, stopping, ngx.sleep)
    if not t then
      s.stopped = true
      s.error = code_error(core.PL_EINTERNAL, { op = "process",
                             message = "cannot start consumer " .. i .. ": " .. tostring(terr) })
      I.stop_run(s, core.PL_RUN_ERROR)
      break
    end
    threads[#threads + 1] = t
  end
  for i = 1, #threads do
    local ok, terr = ngx.thread.wait(threads[i])
    if not ok then -- (the others stop too: none waits on a message this one held)
      I.end_with(s, code_error(core.PL_EINTERNAL, { op = "process",
                                 message = "a consumer failed: " .. tostring(terr) }))
    end
  end
  s.drained = ngx.worker.exiting()
  return I.end_summary(s)
end

-- ------------------------------------------------------------------ messages whose request ended

-- A with_lock inside a request (rewrite, access, content) records its message in the
-- request's ngx.ctx while the handler runs. If the request ends first -- the handler
-- called ngx.exit, the client went away (lua_check_client_abort), the light thread was
-- killed -- with_lock never gets to settle it: M.request_done, from log_by_lua (which
-- runs for every request however it ended), takes those messages out of the renewer and
-- abandons them from a zero-delay timer (no cosockets in the log phase). A message that
-- client:attach(handle) gave a request is recorded the same way: still held (neither
-- settled nor released) when its request ends, it is abandoned too.
local REQUEST_PHASES = { rewrite = true, access = true, content = true }
local CTX_KEY = "peeklock.held"

function Client:_holding(key, msg)
  local phase = ngx.get_phase()
  if not REQUEST_PHASES[phase] then return end
  local ctx = ngx.ctx
  local held = ctx[CTX_KEY]
  if msg then
    if not held then held = {}; ctx[CTX_KEY] = held end
    held[key] = { self, msg }
  elseif held then
    held[key] = nil
  end
end

-- Abandons msg of client self from a zero-delay timer (its renewal stopped first).
local function abandon_later(self, msg, key)
  self._active[key], self._held[key], self._lost[key] = nil, nil, nil
  local r = rawget(self, "_renewer")
  local mh = rawget(msg, "_h")
  if not mh then return end
  if r then self:_renew_remove(r, mh) end
  if not rawget(self, "_h") or core.pl_message_lock_state(mh) ~= core.PL_LOCK_HELD then return end
  local ok, err = ngx.timer.at(0, function()
    self:_settle(msg, "abandon")
    msg:free()
  end)
  if not ok then ngx.log(ngx.ERR, "peeklock: cannot abandon a message whose request ended: ", err) end
end

--- peeklock.resty.request_done(): in log_by_lua (http level covers every location):
-- hands back the messages of this request's with_lock calls that never returned, and
-- those it attached and left held.
function M.request_done()
  local held = ngx.ctx[CTX_KEY]
  if not held then return 0 end
  ngx.ctx[CTX_KEY] = nil
  local n = 0
  for key, e in pairs(held) do
    n = n + 1
    abandon_later(e[1], e[2], key)
  end
  return n
end

-- with_lock, poll_events, stats, renewer_stats, close: inherited from peeklock.Client;
-- they only call the methods above and non-blocking renewer functions.

return M
