--- peeklock.resty: the peeklock calls inside OpenResty / nginx (lua-nginx-module)
-- without blocking the worker.
--
--   local peeklock = require "peeklock.resty"
--   local client = assert(peeklock.client(conn_str))        -- in a handler (or cached per worker)
--   local ok, err = client:with_lock("orders", { timeout = 20 }, function(msg) ... end)
--
-- Every HTTP exchange goes over ngx.socket.tcp (cosockets): the C core builds the
-- request (URL, headers with the SAS Authorization, body) and interprets the
-- response (status codes, BrokerProperties, lock bookkeeping); this file only moves
-- bytes. Lock renewal while a handler runs is done by the C renewer (one thread
-- per worker, created on first use inside the worker, never in the master): adding
-- and removing a lock are non-blocking calls, and its events are drained without
-- waiting. docs/lua.md explains the choice.
--
-- The same method names and results as require "peeklock": send, send_batch,
-- peek_lock, receive_and_delete, with_lock, msg:renew/abandon/complete.

local peeklock = require "peeklock"
local core = peeklock.core
local ngx = ngx ---@diagnostic disable-line: undefined-global
if type(ngx) ~= "table" or not ngx.socket then
  error("peeklock.resty needs OpenResty / lua-nginx-module (use require 'peeklock' elsewhere)", 2)
end

local tcp = ngx.socket.tcp
local type, tonumber, tostring, setmetatable, rawget, floor = type, tonumber, tostring, setmetatable, rawget, math.floor
local concat, lower, find, sub, byte = table.concat, string.lower, string.find, string.sub, string.byte
local new_error, last_error = peeklock._new_error, peeklock._last_error
local check_client, check_string, check_opts = peeklock._check_client, peeklock._check_string, peeklock._check_opts
local opt_number = peeklock._opt_number
local request_send_from, batch_from = peeklock._request_send_from, peeklock._batch_from
-- argument errors raised through peeklock's checks point past this file too, at the caller
if debug and debug.getinfo then peeklock._own_sources[debug.getinfo(1, "S").source] = true end

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

local TRANSPORT_ERRNO = { timeout = core.PL_ETIMEOUT, connection = core.PL_ECONNECT, protocol = core.PL_EPROTOCOL }

local function transport_error(code, op, what, detail)
  return new_error({ code = code, errno = TRANSPORT_ERRNO[code], retryable = code ~= "protocol",
                     message = what .. ": " .. tostring(detail), op = op })
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

-- One request (a pl_request handle) -> status, headers { name, value, name, value, ... }, body | nil, err
local function http_exchange(self, req, op, read_timeout_ms)
  -- the header lines come joined (an empty Expect left out), with whether Host and
  -- Content-Length are among them
  local method, url, body, head, has_host, has_len = core.request_head(req)
  local scheme, host, port, path = parse_url(url)
  if not scheme then
    return nil, new_error({ code = "invalid_argument", errno = core.PL_EINVAL, op = op,
                            message = "unsupported endpoint URL for cosockets" })
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
  local pool = scheme .. ":" .. host .. ":" .. port
  local ok, err = sock:connect(host, port, { pool = pool })
  if not ok then return nil, transport_error("connection", op, "connect failed", err), UNSENT end
  if scheme == "https" and sock:getreusedtimes() == 0 then
    ok, err = sock:sslhandshake(nil, host, self._ssl_verify)
    if not ok then sock:close(); return nil, transport_error("connection", op, "TLS handshake failed", err), UNSENT end
  end
  local sent_ms = core.pl_now_mono_ms()
  ok, err = sock:send(lines)
  if not ok then sock:close(); return nil, transport_error("connection", op, "send failed", err), UNANSWERED end

  local line
  line, err = sock:receive("*l")
  if not line then
    sock:close()
    return nil, transport_error(err == "timeout" and "timeout" or "connection", op, "no response", err), UNANSWERED
  end
  local status = tonumber(line:match("^HTTP/1%.%d (%d%d%d)"))
  if not status then sock:close(); return nil, transport_error("protocol", op, "bad status line", ""), MALFORMED end
  local headers, length, chunked, close = {}, nil, false, false
  while true do
    line, err = sock:receive("*l")
    if not line then
      sock:close()
      if err == "timeout" then return nil, transport_error("timeout", op, "headers cut short", err), UNANSWERED end
      return nil, transport_error("protocol", op, "headers cut short", err), MALFORMED -- the status line came
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
    if err == "timeout" then return nil, transport_error("timeout", op, "body cut short", err), UNANSWERED end
    if err == TOO_BIG then
      return nil, transport_error("protocol", op, "response exceeded a size limit",
                                  "its body is over " .. MAX_BODY .. " bytes"), MALFORMED
    end
    return nil, transport_error("protocol", op, "body cut short", err), MALFORMED -- as libcurl's partial file
  end
  reusable = err -- second value of read_body: whether the connection can be reused
  if reusable and not close then sock:setkeepalive(self._keepalive_ms, self._pool_size)
  else sock:close() end
  return status, headers, data, sent_ms
end

-- One attempt: send req, feed the answer to the C core.
-- how (UNSENT...ANSWERED), rc (its PL_* code), message handle | nil, err (a transport
-- error) | nil, status, the Retry-After header value | nil
local function attempt(self, req, op, msg_h, read_timeout_ms)
  local status, headers, body, sent_ms = http_exchange(self, req, op, read_timeout_ms)
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
-- when it says so. Runs req: rc, out | nil, err.
local function exchange(self, req, op, msg_h, read_timeout_ms, entity)
  local call = core.outcome_new(self._h, req, math.random(1, 2147483647))
  while true do
    local how, rc, out, err, status, retry_after = attempt(self, req, op, msg_h, read_timeout_ms)
    if not how then return nil, err end -- the request could not even be written (bad URL)
    local again, v, orphaned = core.outcome_report(call, how, status, rc, retry_after,
                                                   err and err.message or nil, msg_h)
    if not again and orphaned and orphaned > 0 then
      ngx.log(ngx.WARN, "peeklock: peek_lock on ", tostring(entity), ": an answer was lost after the server may have locked a message; that message stays ",
              "locked until its lock expires, then comes back (stats().orphaned_locks)")
    end
    if again then
      ngx.sleep(v / 1000)
    elseif v >= 0 then
      return v, out
    else
      return nil, last_error(v, op)
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
function M.client(opts)
  local c, err = peeklock.client(opts)
  if not c then return nil, err end
  if type(opts) ~= "table" then opts = {} end
  c._connect_timeout_ms = opts.connect_timeout_ms or 10000
  c._send_timeout_ms = opts.request_timeout_ms or 30000
  c._request_timeout_ms = opts.request_timeout_ms or 30000
  c._keepalive_ms = opts.keepalive_ms or 60000
  c._pool_size = opts.pool_size or 32
  c._ssl_verify = opts.ssl_verify ~= false
  -- (max_retries, retry_base_ms, retry_max_ms: the C client's, which the outcome module uses)
  return setmetatable(c, Client)
end

-- The answer to a send or send_batch request (rc, req of the native that made it):
-- true, or nil, err.
local function exchange_sent(self, op, rc, req)
  if rc < 0 then return nil, last_error(rc, op) end
  local ok, err = exchange(self, req, op, nil, self._request_timeout_ms)
  core.release(req)
  if not ok then return nil, err end
  return true
end

function Client:send(entity, body, opts)
  local h, err = check_client(self, "send")
  if not h then return nil, err end
  local rc, req = request_send_from("send", h, entity, body, opts)
  if not rc then return nil, req end
  return exchange_sent(self, "send", rc, req)
end

function Client:send_batch(entity, list)
  local rc, req = batch_from(core.pl_request_send_batch, self, entity, list)
  if not rc then return nil, req end
  return exchange_sent(self, "send_batch", rc, req)
end

local function receive(self, op, entity, opts, peek)
  local h, err = check_client(self, op)
  if not h then return nil, err end
  check_string(op, 1, entity)
  opts = check_opts(op, 2, opts)
  local timeout = floor(opt_number(op, opts, "timeout", 30, 0, 300))
  local rc, req = core.pl_request_receive(h, entity, timeout, peek and 1 or 0)
  if rc < 0 then return nil, last_error(rc, op) end
  local out
  rc, out = exchange(self, req, op, nil, timeout * 1000 + self._request_timeout_ms, entity)
  core.release(req)
  if not rc then return nil, out end
  if rc == core.PL_EMPTY or not out then return nil, nil end
  return peeklock._wrap_message(self, out)
end

function Client:peek_lock(entity, opts) return receive(self, "peek_lock", entity, opts, true) end
function Client:receive_and_delete(entity, opts) return receive(self, "receive_and_delete", entity, opts, false) end

local SETTLE_OPS = { renew = core.PL_SETTLE_RENEW, abandon = core.PL_SETTLE_UNLOCK, complete = core.PL_SETTLE_COMPLETE }

-- The settle fence is the C core's (held -> settling before the first yield, then settled,
-- lost, unknown, or held again), as for the blocking settles: a second settle or a renew
-- of a message being settled, or one whose earlier settle had an unknown outcome, gets
-- the error the C core words.
function Client:_settle(msg, op)
  local h, mh = peeklock._settle_handles(self, msg, op)
  if not h then return nil, mh end
  -- (PL_LOCK_NONE, a receive-and-delete message: pl_request_settle says there is no lock)
  if core.pl_message_lock_state(mh) ~= core.PL_LOCK_NONE then
    local frc = core.fence_enter(mh, SETTLE_OPS[op])
    if frc < 0 then return nil, last_error(frc, op) end
  end
  local settling = op ~= "renew"
  -- Renewal stops before settling starts, so a renew never races a complete/unlock.
  if settling and self._renewer then core.pl_renewer_remove(self._renewer, mh) end
  local rc, req = core.pl_request_settle(h, mh, SETTLE_OPS[op])
  if rc < 0 then
    local err = last_error(rc, op)
    if settling then core.fence_leave(mh, rc) end
    return nil, err
  end
  local ok, err = exchange(self, req, op, mh, self._request_timeout_ms)
  core.release(req)
  if settling then core.fence_leave(mh, ok and 0 or err.errno) end
  if not ok then return nil, err end
  return true
end

-- with_lock, poll_events, stats, renewer_stats, close: inherited from peeklock.Client;
-- they only call the methods above and non-blocking renewer functions.

return M
