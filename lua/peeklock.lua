--- peeklock: Azure Service Bus REST message locks for Lua 5.4 and LuaJIT.
--
--   local peeklock = require "peeklock"
--   local client = assert(peeklock.client(conn_str))
--   assert(client:send("orders", "payload", { properties = { Priority = "High" } }))
--   local ok, err = client:with_lock("orders", { timeout = 30 }, function(msg) ... end)
--
-- Conventions: `require` returns this table and sets no global; expected failures
-- return `nil, err` where err is a table with `code`, `status`, `message` (and a
-- `__tostring`); wrong argument types raise an error naming the argument.
-- Handles are freed once, by the collector or by `:free()`/`<close>`, whichever
-- comes first. Built on the C core through the SWIG module `peeklock.core`.

local core = require "peeklock.core" -- (loading it sets no global: bindings/lua/handles.c)
local I = require "peeklock.internal"

local type, tostring, error = type, tostring, error
local setmetatable, rawget, rawset, pcall, pairs = setmetatable, rawget, rawset, pcall, pairs
local floor = math.floor
local tointeger = math.tointeger -- Lua 5.3+: nil for a number with a fraction

local code_error, last_error, closed_error, raise = I.code_error, I.last_error, I.closed_error, I.raise
local fail = I.fail
local argerror, check_string, check_opts = I.argerror, I.check_string, I.check_opts
local check_options, check_client, check_message = I.check_options, I.check_client, I.check_message
local freed_error = I.freed_error
local outgoing_error, batch_from, settle_handles = I.outgoing_error, I.batch_from, I.settle_handles
local with_lock_args, run_held, process_args, new_summary = I.with_lock_args, I.run_held, I.process_args, I.new_summary
local Message, Client, DateTime = I.Message, I.Client, I.DateTime

-- argument errors point past this file's frames too, at the user's line
if debug and debug.getinfo then I.OWN_SOURCES[debug.getinfo(1, "S").source] = true end

local M = {
  _VERSION = core.pl_version(),
  version = core.pl_version(),
  core = core,
  codes = I.codes,
  Error = I.Error,
  is_error = I.is_error,
  datetime = I.datetime,
  Message = Message,
  Client = Client,
}

-- lock-state names from the core (pl_lock_state_name: nil past the last state)
local LOCK_STATES = {}
for st = core.PL_LOCK_NONE, core.PL_LOCK_UNKNOWN do LOCK_STATES[st] = core.pl_lock_state_name(st) end

-- ------------------------------------------------------------------ received messages

-- A getter of an optional count or time: f(h), nil for the core's -1 (one call: f is held
-- as an upvalue, not looked up in core per read).
local function optional(f)
  return function(h)
    local v = f(h)
    if v == -1 then return nil end
    return v
  end
end
local message_broker, message_time_to_live = core.pl_message_broker, core.pl_message_time_to_live
local message_lock_state, LOCK_HELD = core.pl_message_lock_state, core.PL_LOCK_HELD

-- (the natives that take just the handle are their own getters: no extra call)
local GETTERS = {
  body = core.message_body,
  content_type = core.pl_message_content_type,
  entity = core.pl_message_entity,
  message_id = core.pl_message_id,
  sequence_number = optional(core.pl_message_sequence_number),
  enqueued_sequence_number = optional(core.pl_message_enqueued_sequence_number),
  delivery_count = optional(core.pl_message_delivery_count),
  enqueued_time = optional(core.pl_message_enqueued_time),
  locked_until = optional(core.pl_message_locked_until),
  -- whole seconds as an integer (Lua 5.3+), as the other counts and times
  time_to_live = function(h)
    local v = message_time_to_live(h)
    if v < 0 then return nil end
    return tointeger and tointeger(v) or v
  end,
  properties = core.message_properties,
  state = function(h) return message_broker(h, "State") end,
}
for key, field in pairs(I.BROKER_FIELDS) do
  if key ~= "message_id" then GETTERS[key] = function(h) return message_broker(h, field) end end
end
-- Values that change over the message's life are not cached.
local LIVE = { lock_state = true, lock_remaining_ms = true, lock_duration_ms = true }

-- Message.__index (core.message_indexer) answers methods, and body, message_id and
-- properties of a live message, in C; every other field comes here (error level 3: the
-- indexer's caller).
local function index_fields(self, k)
  if LIVE[k] then
    local h = rawget(self, "_h")
    if not h then return nil end
    if k == "lock_state" then
      return LOCK_STATES[message_lock_state(h)]
    end
    if k == "lock_remaining_ms" then return core.pl_message_lock_remaining_ms(h) end
    return core.pl_message_lock_duration_ms(h)
  end
  local g = GETTERS[k]
  if not g then return nil end
  -- (_h is always a raw field of a message, a handle or false: plain reads and writes
  -- never come back here, and cost no call as rawget/rawset do on Lua 5.4)
  local h = self._h
  if not h then error("peeklock: message field '" .. tostring(k) .. "' read after the message was freed", 3) end
  local v = g(h)
  self[k] = v
  return v
end
Message.__index = core.message_indexer(Message, index_fields)

function Message.__tostring(self)
  local h = rawget(self, "_h")
  if not h then return "peeklock.Message(freed)" end
  return ("peeklock.Message(entity=%s, sequence_number=%s, message_id=%s, lock=%s)"):format(
    tostring(self.entity), tostring(self.sequence_number), tostring(self.message_id),
    tostring(self.lock_state))
end

-- The one free for a message: idempotent; __close ends here too. A message the program
-- drops is freed by the collector through its handle (whose __gc is this same release),
-- so the table itself needs no finalizer (none runs on LuaJIT tables anyway).
function Message.free(self)
  local h = self._h
  if h then
    self._h = false
    core.release(h)
  end
end

-- Lua 5.4 `local m <close> = ...`: abandoned unless settled, then freed.
function Message.__close(self)
  local h = rawget(self, "_h")
  if h and message_lock_state(h) == LOCK_HELD then
    self._client:_settle(self, "abandon")
  end
  Message.free(self)
end

-- msg:<op>() through its client's _settle (the blocking client's is a native, peeklock.resty's
-- settles over cosockets), after check_message's checks.
local function settle_method(op)
  return function(self)
    local h, err = check_message(self, op)
    if not h then return nil, err end
    return self._client:_settle(self, op)
  end
end
--- msg:renew() -> true | nil, err: renews the lock.
Message.renew = settle_method("renew")
--- msg:abandon() -> true | nil, err: abandons (unlocks) the message so it is redelivered.
Message.abandon = settle_method("abandon")
--- msg:complete() -> true | nil, err: completes (deletes) the message.
Message.complete = settle_method("complete")

--- msg:lock_handle() -> string | nil, err
-- The message's lock as a string that client:attach (in this or any other process, Lua,
-- Python or C) turns back into a held message. SECRET: it carries the lock token, and
-- whoever holds it and a credential for the namespace may settle the message.
function Message:lock_handle()
  local h, err = check_message(self, "lock_handle")
  if not h then return nil, err end
  local rc, s = core.pl_message_lock_handle(h)
  if rc < 0 then return nil, last_error(rc, "lock_handle") end
  return s
end

--- msg:release() -> true | nil, err
-- Lets go of the lock without settling it (after handing it over with lock_handle): its
-- renewal here stops and the message object is freed, so neither <close>, the collector
-- nor with_lock abandons or completes it. The lock runs out unless a holder of the handle
-- renews or settles it.
function Message:release()
  local h, err = check_message(self, "release")
  if not h then return nil, err end
  if core.pl_message_lock_state(h) == core.PL_LOCK_SETTLING then
    return nil, code_error(core.PL_ESTATE, { op = "release", message = "the message is being settled" })
  end
  local c = self._client
  local r = rawget(c, "_renewer")
  if r then c:_renew_remove(r, h) end
  Message.free(self)
  return true
end

-- ------------------------------------------------------------------ blocking client

-- with_lock's bookkeeping, by message key, for every client (the renewer is shared):
-- the messages a with_lock holds now, and the lost events found for them.
local ACTIVE, LOST = {}, {}
-- (a client's held handles, weakly: a message whose coroutine was dropped stays collectable)
local WEAK_VALUES = { __mode = "v" }

-- Inside nginx the blocking client stops the whole worker for each call: say so once.
local warned = false
local function warn_in_nginx()
  local ngx = rawget(_G, "ngx")
  if warned or type(ngx) ~= "table" or not ngx.socket or not ngx.log then return end
  warned = true
  ngx.log(ngx.WARN, "peeklock: require \"peeklock\" is the blocking client: inside nginx each of its calls ",
          "blocks the whole worker; use require \"peeklock.resty\" (cosockets) instead")
end

--- peeklock.client(connection_string | options) -> client | nil, err
-- options: connection_string | endpoint + key_name + key | sas_token, and
-- connect_timeout_ms, request_timeout_ms, max_retries, retry_base_ms, retry_max_ms,
-- pool_size, ca_file, token_lifetime_s; renewer = { margin_floor_ms=..., ... }.
-- An unknown option or one of the wrong type raises an error, as does a value the core
-- refuses (its words, at the caller's line). extra_options: the caller's own (name -> type).
function M.client(opts, extra_options)
  if type(opts) == "string" then opts = { connection_string = opts }
  elseif type(opts) ~= "table" then argerror("client", 1, "connection string or options table", opts)
  end
  -- the core's refusal of a key or a value's type (bindings/lua/options.c: "unknown option ...",
  -- "bad option ...") in its words; of a number that fits no C type, named as the native's
  local ok, rc, h = pcall(core.client_new, opts, extra_options)
  if not ok then
    rc = tostring(rc)
    raise(rc:find("^client_new: ") and "peeklock.client: " .. rc or rc)
  end
  if not extra_options then warn_in_nginx() end
  if rc < 0 then return fail(rc, "client") end
  return setmetatable({ _h = h, _renewer_opts = opts.renewer, _lost = LOST, _active = ACTIVE,
                         _held = setmetatable({}, WEAK_VALUES) }, Client)
end

function Client:endpoint()
  local h, err = check_client(self, "endpoint")
  if not h then return nil, err end
  return core.pl_client_endpoint(h)
end

--- client:send_batch(entity, { body | {body=..., ...}, ... }) -> true | nil, err
function Client:send_batch(entity, list)
  local rc, err = batch_from(core.pl_send_batch, self, entity, list)
  if not rc then return nil, err end
  if rc < 0 then return fail(rc, "send_batch") end
  return true
end

-- client:send(entity, body, opts) -> true | nil, err
-- client:peek_lock(entity, {timeout=s}) -> msg | nil, nil (nothing in time) | nil, err
-- client:receive_and_delete(entity, {timeout=s}) -> msg | nil, nil | nil, err
-- Natives (core.client_methods): each is one C call from the caller's line to the core,
-- with check_client's, request_send_from's and the timeout option's checks and wording. They call
-- back here for error values (fail: nil, err, or the core's refusal raised; last_error,
-- closed_error, freed_error) and to raise (raise, outgoing_error: at the user's line).
-- client:_settle(msg, op) -> true | nil, err: op ("renew", "abandon", "complete") on msg,
-- its renewal by this client's renewer dropped first unless op renews; nil, err when the
-- client was closed or the message freed. On Lua 5.4 a native too (one C call to
-- pl_renew_lock, pl_unlock or pl_complete); LuaJIT runs the Lua version below, compiled into
-- its traces (there the native's C API calls cost more than the Lua frames they save).
local native_settle
Client.send, Client.peek_lock, Client.receive_and_delete, native_settle =
  core.client_methods(Client, Message, DateTime, fail, outgoing_error, closed_error, raise, last_error,
                      freed_error)

local SETTLE = { renew = core.pl_renew_lock, abandon = core.pl_unlock, complete = core.pl_complete }

local function lua_settle(self, msg, op)
  local h, mh = settle_handles(self, msg, op)
  if not h then return nil, mh end
  if self._renewer and op ~= "renew" then core.pl_renewer_remove(self._renewer, mh) end
  local rc = SETTLE[op](h, mh)
  if rc < 0 then return nil, last_error(rc, op) end
  return true
end
Client._settle = jit and lua_settle or native_settle

-- One renewer (one thread) per process, shared by every client made without renewer
-- options: inside nginx each worker has its own Lua state, so one per worker, made on
-- its first with_lock (never in the master). Each message is renewed through the client
-- it came through (csrc/renewer.c), so a client per request costs no thread. A client
-- given renewer options has a renewer of its own, freed with it. Events are kept by
-- message identity for whichever with_lock holds the message (ACTIVE, LOST).
local shared_renewer

function Client:_get_renewer()
  local r = self._renewer
  if r then return r end
  local rc
  if self._renewer_opts then
    local ok
    ok, rc, r = pcall(core.renewer_new, self._h, self._renewer_opts)
    if not ok then raise("peeklock.client: " .. tostring(rc)) end -- (an option's number that fits no C type)
    if rc < 0 then return fail(rc, "renewer") end
    self._own_renewer = true
  else
    r = shared_renewer
    if not r then
      rc, r = core.renewer_new(self._h, nil)
      if rc < 0 then return nil, last_error(rc, "renewer") end
      shared_renewer = r
    end
  end
  self._renewer = r
  return r
end

-- with_lock tells whoever runs it which message it holds (key, msg) and when it is done
-- (key, nil): peeklock.resty ties it to the request, to hand it back if the request ends
-- first. Nothing to do in a plain Lua process (the collector's drop hook is enough there).
function Client._holding() end

-- Renewal of a message while with_lock holds it (peeklock.resty renews over cosockets).
function Client._renew_add(_, r, mh, max_renew_ms) return core.pl_renewer_hold(r, mh, max_renew_ms) end
function Client._renew_remove(_, r, mh) core.pl_renewer_remove(r, mh) end

-- The end of a held message's handler (r: its renewer, or nil when gone): renewal stops
-- and, if still held, the message is completed (ok) or abandoned (pl_renewer_finish).
-- Returns what became of it (core.PL_FINISH_*), and the error of the settle this call
-- made, if it failed. (peeklock.resty settles over cosockets instead.)
function Client._finish_held(_, r, _msg, mh, ok)
  local rc, outcome = core.pl_renewer_finish(r, mh, ok and 1 or 0)
  if rc < 0 then return outcome, last_error(rc, ok and "complete" or "abandon") end
  return outcome
end

-- Drains the renewer's event queue (never blocks). Lost events are kept by
-- message identity for with_lock to report; returns the number of events.
function Client:poll_events()
  local r = self._renewer
  if not r then return 0 end
  local n = 0
  while true do
    local rc, ev = core.pl_renewer_next_event(r)
    if rc ~= 0 or not ev then break end
    n = n + 1
    local ty = core.pl_event_type(ev)
    if ty == core.PL_EVENT_LOST or ty == core.PL_EVENT_CAP_REACHED then
      local key = core.key(core.pl_event_message(ev))
      if key and self._active[key] then -- only messages a with_lock is holding now
        self._lost[key] = { type = ty == core.PL_EVENT_LOST and "lost" or "cap_reached",
                            errno = core.pl_event_code(ev), status = core.pl_event_http_status(ev),
                            reason = core.pl_event_reason(ev) }
      end
    end
    core.release(ev)
  end
  return n
end

--- Renewer statistics (nil before the first with_lock).
function Client:renewer_stats()
  if not self._renewer then return nil end
  local rc, st = core.pl_renewer_stats_get(self._renewer)
  if rc < 0 then return nil, last_error(rc, "renewer_stats") end
  return st
end

--- Client counters: requests, sent, received, completed, abandoned, renewed, lost, ...,
-- and the renewer's figures under "renewer" (held, renewals, failures, lost, cap_reached,
-- slack_buckets, ...: the renewer's, shared by the process's clients; zeros before this
-- client's first with_lock), all counts integers on Lua 5.3+.
function Client:stats()
  local h, err = check_client(self, "stats")
  if not h then return nil, err end
  local rc, st = core.pl_client_stats_get(h)
  if rc < 0 then return nil, last_error(rc, "stats") end
  local rs = rawget(self, "_renewer") and self:renewer_stats()
  if not rs then -- no renewer yet: the core's fields, zeros (pl_renewer_stats_get(nil))
    rc, rs = core.pl_renewer_stats_get(nil)
    if rc < 0 then return nil, last_error(rc, "stats") end
  end
  st.renewer = rs
  return st
end


--- client:with_lock(entity, opts, fn) -> true, ...fn results | nil, nil (no message) | nil, err
-- Peek-locks one message and calls fn(msg) while the C renewer keeps the lock
-- (for up to opts.max_renew seconds, default 300). A normal return completes the
-- message; an error abandons it and returns nil, err (err.code == "handler",
-- err.cause the error value); a lock lost meanwhile completes nothing and returns
-- nil, err with err.code == "lock_lost". fn may settle msg itself.
function Client:with_lock(entity, opts, fn)
  local h, err = check_client(self, "with_lock")
  if not h then return nil, err end
  local max_renew
  opts, fn, max_renew = with_lock_args("with_lock", entity, opts, fn)
  local r
  r, err = self:_get_renewer()
  if not r then return nil, err end
  local msg
  msg, err = self:peek_lock(entity, opts.timeout ~= nil and { timeout = opts.timeout } or nil)
  if not msg then return nil, err end
  return run_held(self, r, msg, max_renew, fn, "with_lock")
end

local ATTACH_OPTIONS = { max_renew = "number", renew = "boolean" }

--- client:attach(handle [, opts]) -> msg | nil, err
--- client:attach(handle, opts, fn) -> true, ...fn results | nil, err (as with_lock)
-- The message whose lock handle (msg:lock_handle(), from any process) describes, held by
-- this client and renewed by its renewer for up to opts.max_renew seconds (default 300;
-- renew = false: not renewed). It has its entity, sequence number and message id, not its
-- body or properties. Settle it with complete / abandon (or <close>: abandoned unless
-- settled) with the usual outcomes: a lock that expired is lost, and of two holders the
-- first to settle wins, the other gets lock_lost. With fn, fn(msg) runs as with_lock's
-- handler does: completed when it returns, abandoned when it raises, lock_lost when the
-- lock was lost. A string that is not a handle for this client's namespace raises the
-- core's refusal (invalid_argument) at the caller's line; no error quotes the handle.
function Client:attach(handle, opts, fn)
  local h, err = check_client(self, "attach")
  if not h then return nil, err end
  check_string("attach", 1, handle)
  if fn == nil and type(opts) == "function" then opts, fn = nil, opts end
  opts = check_opts("attach", 2, opts)
  check_options("attach", opts, ATTACH_OPTIONS)
  if fn ~= nil and type(fn) ~= "function" then argerror("attach", 3, "function or nil", fn) end
  local max_renew = I.opt_max_renew("attach", opts)
  local r
  if fn or opts.renew ~= false then
    r, err = self:_get_renewer()
    if not r then return nil, err end
  end
  local rc, mh = core.pl_client_attach(h, handle)
  if rc < 0 then return fail(rc, "attach") end
  local msg = I.wrap_message(self, mh)
  if fn then return run_held(self, r, msg, max_renew, fn, "attach") end
  if r then
    rc = self:_renew_add(r, mh, core.pl_max_renew_ms(max_renew))
    if rc < 0 then
      err = last_error(rc, "attach")
      msg:free() -- not settled: the handle stays good
      return nil, err
    end
    self._held[core.key(mh)] = mh
  end
  self:_holding(core.key(mh), msg) -- (peeklock.resty: handed back if its request ends first)
  return msg
end

--- client:process(entity, handler, opts) -> summary | nil, err
-- Runs handler(msg) for message after message of entity, each inside with_lock (completed
-- when it returns, abandoned when it raises, its lock renewed for up to max_renew seconds).
-- The blocking client runs one handler at a time (concurrency = 1; peeklock.resty runs
-- several). Options: poll_timeout (long poll per receive, 5 s), max_messages, idle_timeout
-- (seconds without a message in flight), stop (a function: true ends the run between messages).
-- summary: the core's counts (pl_run_tallies: received, redelivered, processed,
-- settled_by_handler, failed, lost, unknown, abandoned_on_drain, left_to_expire, errors,
-- in_flight; Python's ProcessSummary fields), last_error, error (the one that ended it),
-- stopped_by (why it ended, the core's word: pl_run_stop_word; "closed": closed under the run).
function Client:process(entity, handler, opts)
  local o, err = process_args(self, entity, handler, opts, 1)
  if not o then return nil, err end
  local s, serr = new_summary(o)
  if not s then return nil, serr end
  local stop = o.stop
  local function stopping()
    if s.stopped then return true end
    return I.stop_asked(s, stop)
  end
  local loop = o.batch and I.batch_loop or I.process_loop
  -- (a failed receive's pause, the core's rule: this client blocks, so it sleeps)
  loop(self, entity, handler, o, s, stopping, function(seconds) core.pl_sleep_ms(math.ceil(seconds * 1000)) end)
  return I.end_summary(s)
end

--- Frees the client (and its renewer). Idempotent; also run by the collector.
-- client:close({ unlock_held = true }) first unlocks every lock the renewer still
-- holds, so those messages are redelivered at once (blocking: e.g. for
-- exit_worker_by_lua in OpenResty, or at the end of a script).
function Client:close(opts)
  local r = rawget(self, "_renewer")
  local h = rawget(self, "_h")
  if r then
    rawset(self, "_renewer", false)
    local unlock = type(opts) == "table" and opts.unlock_held
    if rawget(self, "_own_renewer") then
      if unlock then core.pl_renewer_close(r, 1) end
      core.release(r)
    else -- the shared renewer: stop renewing this client's locks (and hand them back)
      for _, mh in pairs(self._held) do
        if core.alive(mh) then -- (an attached message may have been freed since)
          self:_renew_remove(r, mh)
          if unlock and h and core.pl_message_lock_state(mh) == core.PL_LOCK_HELD then core.pl_unlock(h, mh) end
        end
      end
    end
  end
  if h then
    rawset(self, "_h", false)
    core.release(h)
  end
end
local function close_only(self) return Client.close(self) end
Client.free = close_only
Client.__gc = close_only
Client.__close = close_only
function Client.__tostring(self)
  local h = rawget(self, "_h")
  if not h then return "peeklock.Client(closed)" end
  return "peeklock.Client(" .. tostring(core.pl_client_endpoint(h)) .. ")"
end

-- ------------------------------------------------------------------ helpers

--- peeklock.sas_token(uri, key_name, key, expiry) -> token
-- (arguments the core refuses raise at the caller's line)
function M.sas_token(uri, key_name, key, expiry)
  check_string("sas_token", 1, uri)
  check_string("sas_token", 2, key_name)
  check_string("sas_token", 3, key)
  -- a number of seconds (rounded down) that fits the C side's int64_t: the core's range
  if type(expiry) ~= "number" then argerror("sas_token", 4, "number", expiry) end
  local rc = core.pl_check_expiry("expiry", expiry)
  if rc < 0 then return fail(rc, "sas_token") end
  local tok
  rc, tok = core.pl_sas_token(uri, key_name, key, floor(expiry))
  if rc < 0 then return fail(rc, "sas_token") end
  return tok
end

--- peeklock.parse_connection_string(s) -> { endpoint, key_name, entity_path,
-- development_emulator, has_key, has_sas_token } | nil, err (never echoes a key)
function M.parse_connection_string(s)
  check_string("parse_connection_string", 1, s)
  local rc, cs = core.pl_connstr_parse(s)
  if rc < 0 then return fail(rc, "parse_connection_string") end
  local t = {
    endpoint = core.pl_connstr_endpoint(cs),
    key_name = core.pl_connstr_key_name(cs),
    entity_path = core.pl_connstr_entity_path(cs),
    development_emulator = core.pl_connstr_development_emulator(cs) == 1,
    has_key = core.pl_connstr_key(cs) ~= nil,
    has_sas_token = core.pl_connstr_sas_token(cs) ~= nil,
  }
  core.release(cs)
  return t
end

-- A held message the program dropped (never settled, never freed) stops being renewed
-- and is abandoned when the collector takes it, as <close> does (the handles' __gc,
-- bindings/lua/handles.c, calls this with the handle and the message's client).
function Client:_dropped(mh)
  local r = rawget(self, "_renewer")
  if r then core.pl_renewer_remove(r, mh) end
  local h = rawget(self, "_h")
  if h then core.pl_unlock(h, mh) end
end
core.set_drop_hook(function(mh, client)
  local f = client._dropped
  if f then f(client, mh) end
end)

M.lock_states = LOCK_STATES
return M
