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

-- SWIG's Lua runtime sets globals when its module loads (swig_type, swig_equals
-- and, on Lua 5.2+, the module table itself); keep the global table as it was.
local G = _G
local SWIG_GLOBALS = { "swig_type", "swig_equals", "peeklock_core" }
local saved = {}
for i = 1, #SWIG_GLOBALS do saved[i] = rawget(G, SWIG_GLOBALS[i]) end
local core = require "peeklock.core"
for i = 1, #SWIG_GLOBALS do rawset(G, SWIG_GLOBALS[i], saved[i]) end

local type, tostring, error, select = type, tostring, error, select
local setmetatable, getmetatable, rawget, pcall, xpcall = setmetatable, getmetatable, rawget, pcall, xpcall
-- The self checks compare metatables by identity: debug.getmetatable gives the same
-- answer as getmetatable for them (none of ours has a __metatable field) without
-- looking that field up on every call.
local metatable_of = debug and debug.getmetatable or getmetatable
local floor = math.floor
local tointeger = math.tointeger -- Lua 5.3+: nil for a number with a fraction
local find = string.find
local unpack = table.unpack or unpack ---@diagnostic disable-line: deprecated
local traceback = debug.traceback

local M = {
  _VERSION = core.pl_version(),
  version = core.pl_version(),
  core = core,
}

-- ------------------------------------------------------------------ codes

-- Lua's word for each error code of the core, by its C name. The codes themselves are
-- the core's one list (pl_code_at, csrc/error.c): a code the core adds needs a word here
-- (tests/lua/peeklock_spec.lua checks that every one has).
local CODE_WORDS = {
  PL_EINVAL = "invalid_argument",
  PL_ENOMEM = "no_memory",
  PL_EAUTH = "auth",
  PL_ENOTFOUND = "entity_not_found",
  PL_ELOCKLOST = "lock_lost",
  PL_ETOOLARGE = "too_large",
  PL_ETHROTTLED = "throttled",
  PL_ESERVER = "server",
  PL_ETIMEOUT = "timeout",
  PL_ECONNECT = "connection",
  PL_EPROTOCOL = "protocol",
  PL_EUNKNOWN = "unknown_outcome",
  PL_EBADREQUEST = "bad_request",
  PL_ECONFLICT = "conflict",
  PL_ESTATE = "state",
  PL_ECLOSED = "closed",
  PL_EHTTP = "http",
  PL_EINTERNAL = "internal",
  PL_ECANCELED = "cancelled",
}
local CODE_NAMES = {} -- error code -> word
M.codes = {}          -- word -> error code
for i = 0, core.pl_code_count() - 1 do
  local num = core.pl_code_at(i)
  local word = num < 0 and CODE_WORDS[core.pl_code_name(num)]
  if word then CODE_NAMES[num], M.codes[word] = word, num end
end

local LOCK_STATES = {
  [core.PL_LOCK_NONE] = "none",
  [core.PL_LOCK_HELD] = "held",
  [core.PL_LOCK_SETTLING] = "settling",
  [core.PL_LOCK_SETTLED] = "settled",
  [core.PL_LOCK_LOST] = "lost",
  [core.PL_LOCK_UNKNOWN] = "unknown",
}

-- ------------------------------------------------------------------ errors

-- An error is a table whose only raw content is its message at [1], so that it works
-- where lua-resty code expects a string: tostring, concatenation ("x" .. err), and
-- ngx.say / ngx.print (which write a table's array part). Its fields (code, errno,
-- status, retryable, message, op, cause, traceback) are read through __index from a
-- side table keyed weakly by the error.
local Error = {}
Error.__name = "peeklock.Error"
M.Error = Error
local FIELDS = setmetatable({}, { __mode = "k" })
local rawset = rawset
function Error.__index(e, k)
  local f = FIELDS[e]
  local v = f and f[k]
  if v ~= nil then return v end
  return Error[k]
end
function Error.__newindex(e, k, v)
  local f = FIELDS[e]
  if f and type(k) == "string" then
    f[k] = v
    if k ~= "cause" and k ~= "traceback" then rawset(e, 1, Error.describe(f)) end
  else
    rawset(e, k, v)
  end
end
function Error.__tostring(e) return rawget(e, 1) end
function Error.__concat(a, b) return tostring(a) .. tostring(b) end
if _VERSION ~= "Lua 5.1" then -- pairs(err) lists the fields (Lua 5.2+ honour __pairs)
  function Error.__pairs(e) return next, FIELDS[e] or {}, nil end
end

-- The C core's operation names (pl_wire_op_name) and parameter names that open some of
-- its messages: an operation the Lua error already names, a parameter that means nothing
-- to a Lua caller. "opts.x: ..." is an option of the call.
local C_OPS = { ["send"] = true, ["send batch"] = true, ["peek-lock"] = true, ["receive-and-delete"] = true,
                ["renew-lock"] = true, ["unlock"] = true, ["complete"] = true, ["request"] = true }
local C_PARAMS = { out = true, m = true, r = true, b = true, c = true, req = true, resp = true, client = true }
local function plain_message(op, message)
  message = tostring(message)
  local head, rest = message:match("^([%w_%-%. ]-): (.*)$")
  if head then
    local opt = head:match("^opts%.([%w_]+)$")
    if opt then return "option '" .. opt .. "' " .. rest end
    if C_OPS[head] or C_PARAMS[head] or head == op then return plain_message(op, rest) end
  end
  return message
end

-- The message an error shows: "peeklock: <op>: <message> (<code>[, HTTP <status>])", the
-- operation left out when the message already starts with it ("complete on 'q': ...").
function Error.describe(f)
  local msg = tostring(f.message)
  local op = f.op
  local s = "peeklock: "
  if op and op ~= "" and not C_OPS[msg:match("^(.-) on '") or ""] then s = s .. op .. ": " end
  s = s .. msg .. " (" .. tostring(f.code)
  if f.status and f.status ~= 0 then s = s .. ", HTTP " .. tostring(f.status) end
  return s .. ")"
end

local function new_error(fields)
  fields.status = fields.status or 0
  fields.retryable = fields.retryable or false
  if fields.message ~= nil then fields.message = plain_message(fields.op, fields.message) end
  local e = { Error.describe(fields) }
  FIELDS[e] = fields
  return setmetatable(e, Error)
end
M._new_error = new_error

--- True when e is a peeklock error table.
function M.is_error(e) return getmetatable(e) == Error end

-- Error from a negative C return code and the thread's last error detail.
local function last_error(rc, op)
  local code, status, retryable, message = core.last_error()
  if code ~= rc then -- the detail belongs to another call: keep only the code
    status, retryable, message = 0, false, core.pl_strerror(rc)
  end
  if message == "" then message = core.pl_strerror(rc) end
  return new_error({ code = CODE_NAMES[rc] or "unknown", errno = rc, status = status,
                     retryable = retryable, message = message, op = op })
end
M._last_error = last_error

-- ------------------------------------------------------------------ argument checks

-- Argument errors point at the user's line: the first function on the stack that is neither
-- in peeklock's Lua files (this one, peeklock/resty.lua) nor a C function, however many of ours
-- lie between (with_lock -> its checks -> check_string -> argerror, for one).
local getinfo = debug and debug.getinfo
local OWN_SOURCES = {}
if getinfo then OWN_SOURCES[getinfo(1, "S").source] = true end

--- The level, for error() in the function calling this one, of the user's line.
local function user_level()
  if not getinfo then return 3 end
  local lvl = 3 -- getinfo's count: 1 this function, 2 the raiser, 3 the raiser's caller
  while true do
    local info = getinfo(lvl, "S")
    if not info then return 2 end
    if info.what ~= "C" and info.what ~= "tail" and not OWN_SOURCES[info.source] then return lvl - 1 end
    lvl = lvl + 1
  end
end
M._own_sources = OWN_SOURCES

local function argerror(fname, n, what, v)
  error(("bad argument #%d to '%s' (%s expected, got %s)"):format(n, fname, what, type(v)), user_level())
end

-- Raises msg at the user's line (the natives' argument errors come here).
local function raise(msg) error(msg, user_level()) end

-- A string argument the C core takes whole: a NUL byte would cut it short there.
local function check_string(fname, n, v)
  if type(v) ~= "string" then argerror(fname, n, "string", v) end
  if find(v, "\0", 1, true) then argerror(fname, n, "string without NUL bytes", v) end
  return v
end

local function check_opts(fname, n, v)
  if v == nil then return {} end
  if type(v) ~= "table" then argerror(fname, n, "table or nil", v) end
  return v
end

local function opt_number(fname, opts, key, dflt, min, max)
  local v = opts[key]
  if v == nil then return dflt end
  if type(v) ~= "number" or v ~= v then
    error(("bad option '%s' to '%s' (number expected, got %s)"):format(key, fname, type(v)), user_level())
  end
  if (min and v < min) or (max and v > max) then
    error(("bad option '%s' to '%s' (out of range %s..%s)"):format(key, fname, tostring(min), tostring(max)),
      user_level())
  end
  return v
end
M._opt_number = opt_number

-- Raises the core's refusal (its last error) of option key of fname at the user's line, in
-- the core's words without the argument's name, which the option names.
local function refuse_option(fname, key)
  local message = select(4, core.last_error())
  error(("bad option '%s' to '%s' (%s)"):format(key, fname, (message:gsub("^[%w_]+: ", ""))), user_level())
end

-- A receive timeout option in whole seconds (rounded down): a number here, its range the
-- core's (pl_check_timeout), refused as an option of this call with the core's words.
local function opt_timeout(fname, opts, key, dflt)
  local v = opt_number(fname, opts, key, dflt)
  local t = v >= 0x7fffffff and 0x7fffffff or v <= -1 and -1 or floor(v) -- a C int
  if core.pl_check_timeout(t) < 0 then refuse_option(fname, key) end
  return t
end
M._opt_timeout = opt_timeout

-- The max_renew option (seconds, default 300): a number here, its value the core's
-- (pl_max_renew_ms: positive, at most 10^9), refused with its words. The renewer takes
-- it in ms from the same function (rounded up, never 0: the renewer's default).
local function opt_max_renew(fname, opts)
  local v = opt_number(fname, opts, "max_renew", 300)
  if core.pl_max_renew_ms(v) < 0 then refuse_option(fname, "max_renew") end
  return v
end

-- ------------------------------------------------------------------ outgoing messages

local BROKER_FIELDS = {
  message_id = "MessageId", label = "Label", correlation_id = "CorrelationId",
  session_id = "SessionId", partition_key = "PartitionKey", reply_to = "ReplyTo",
  reply_to_session_id = "ReplyToSessionId", to = "To", via_partition_key = "ViaPartitionKey",
}

local DateTime = { __name = "peeklock.datetime" }
DateTime.__index = DateTime
function DateTime.__tostring(d) return "peeklock.datetime(" .. tostring(d.unix) .. ")" end
--- Marks a Unix time (seconds) as a DateTime custom property.
function M.datetime(unix)
  -- a finite number of seconds: the C side makes an int64_t of it
  if type(unix) ~= "number" or not (unix > -9.2e18 and unix < 9.2e18) then
    argerror("datetime", 1, "finite number", unix)
  end
  -- the service types a DateTime only in whole seconds: a fraction would be lost
  if unix ~= floor(unix) then
    error(("bad argument #1 to 'datetime' (whole seconds expected, got %s: math.floor it, or send "
      .. "the time as a string)"):format(tostring(unix)), user_level())
  end
  return setmetatable({ unix = unix }, DateTime)
end

local function fail_build(h, rc, op)
  local err = last_error(rc, op)
  core.release(h)
  return nil, err
end

-- The argument error a building native described (false, what, key, a, b), raised at the
-- user's line, or nil, err for a core failure (nil, rc).
local function outgoing_error(fname, h, what, key, a, b)
  if h == nil then return nil, last_error(what, fname) end
  local msg
  if what == "option" then
    msg = ("bad option '%s' to '%s' (%s expected, got %s)"):format(tostring(key), fname, a, type(b))
  elseif what == "value" then -- the core refused the value: its words
    msg = ("bad option '%s' to '%s' (%s)"):format(tostring(key), fname, a)
  elseif what == "unknown" then
    msg = ("unknown option '%s' to '%s'"):format(tostring(key), fname)
  elseif what == "datetime" then
    msg = ("bad property '%s' in '%s' (peeklock.datetime with a finite, whole unix time expected)"):format(key, fname)
  elseif what == "name" then
    msg = ("bad property name in '%s' (string expected, got %s)"):format(fname, type(key))
  elseif what == "nul" then
    msg = ("bad property '%s' in '%s' (name and value without NUL bytes expected)"):format(key, fname)
  else
    msg = ("bad property '%s' in '%s' (string, number, boolean or peeklock.datetime expected, got %s)")
      :format(key, fname, type(a))
  end
  error(msg, user_level())
end

-- Builds a pl_outgoing handle for one item of build_batch (body a string, opts the item
-- table or nil, as build_batch checked). Raises on wrong types and unknown options.
-- The options (content_type, time_to_live, scheduled_enqueue_time, force_persistence,
-- resend, properties, the BROKER_FIELDS, and body, ignored: send_batch items carry theirs) are
-- checked and set by core.outgoing_from in one call; argument errors come back from it
-- as values and are worded here.
local function build_outgoing(fname, body, opts)
  local h, what, key, a, b = core.outgoing_from(body, opts, DateTime)
  if h then return h end
  return outgoing_error(fname, h, what, key, a, b)
end

-- peeklock.resty's send (the blocking client's is core.client_methods' native): the
-- request of the message of (body, opts), built by one native (core.request_send_from)
-- with no handle for the message. rc, request, or nil, err; argument errors are raised
-- at the user's line.
local function request_send_from(fname, h, entity, body, opts)
  check_string(fname, 1, entity)
  if type(body) ~= "string" then argerror(fname, 2, "string body", body) end
  if opts ~= nil and type(opts) ~= "table" then argerror(fname, 3, "table or nil", opts) end
  local rc, x, key, a, b = core.request_send_from(h, entity, body, opts, DateTime)
  if rc then return rc, x end
  return outgoing_error(fname, rc, x, key, a, b)
end
M._request_send_from = request_send_from

-- Builds a pl_batch handle from a list of bodies or {body=..., <send options>}.
local function build_batch(fname, list)
  if type(list) ~= "table" then argerror(fname, 2, "table (list of messages)", list) end
  local rc, b = core.pl_batch_new()
  if rc < 0 then return nil, last_error(rc, fname) end
  for i = 1, #list do
    local item = list[i]
    local body, opts = item, nil
    if type(item) == "table" then body, opts = item.body, item end
    if type(body) ~= "string" then
      core.release(b)
      error(("bad message #%d to '%s' (string or {body=string} expected, got %s)"):format(i, fname, type(body)),
        user_level())
    end
    local h, err = build_outgoing(fname, body, opts)
    if not h then core.release(b); return nil, err end
    rc = core.pl_batch_add(b, h)
    core.release(h)
    if rc == core.PL_EINVAL then -- the core's rule (a content type, a NUL byte in the body)
      local message = select(4, core.last_error())
      core.release(b)
      error(("bad message #%d to '%s' (%s)"):format(i, fname, (message:gsub("^m: ", ""))), user_level())
    end
    if rc < 0 then return fail_build(b, rc, fname) end
  end
  return b
end

-- ------------------------------------------------------------------ received messages

local Message = {}
Message.__name = "peeklock.Message"
M.Message = Message

local function optional(v) if v == -1 then return nil end return v end

-- (the natives that take just the handle are their own getters: no extra call)
local GETTERS = {
  body = core.message_body,
  content_type = core.pl_message_content_type,
  entity = core.pl_message_entity,
  message_id = core.pl_message_id,
  sequence_number = function(h) return optional(core.pl_message_sequence_number(h)) end,
  enqueued_sequence_number = function(h) return optional(core.pl_message_enqueued_sequence_number(h)) end,
  delivery_count = function(h) return optional(core.pl_message_delivery_count(h)) end,
  enqueued_time = function(h) return optional(core.pl_message_enqueued_time(h)) end,
  locked_until = function(h) return optional(core.pl_message_locked_until(h)) end,
  -- whole seconds as an integer (Lua 5.3+), as the other counts and times
  time_to_live = function(h)
    local v = core.pl_message_time_to_live(h)
    if v < 0 then return nil end
    return tointeger and tointeger(v) or v
  end,
  properties = core.message_properties,
  state = function(h) return core.pl_message_broker(h, "State") end,
}
for key, field in pairs(BROKER_FIELDS) do
  if key ~= "message_id" then GETTERS[key] = function(h) return core.pl_message_broker(h, field) end end
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
      local st = core.pl_message_lock_state(h)
      -- peeklock.resty fences a settle in flight on the Lua side (msg._settling)
      if st == core.PL_LOCK_HELD and rawget(self, "_settling") == "settling" then st = core.PL_LOCK_SETTLING end
      return LOCK_STATES[st]
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
  if h and core.pl_message_lock_state(h) == core.PL_LOCK_HELD then
    self._client:_settle(self, "abandon")
  end
  Message.free(self)
end

local function check_message(self, fname)
  if metatable_of(self) ~= Message then
    error(("bad self to '%s' (peeklock.Message expected, got %s)"):format(fname, type(self)), user_level())
  end
  local h = self._h
  if not h then
    return nil, new_error({ code = "state", errno = core.PL_ESTATE, message = "message was freed", op = fname })
  end
  return h
end
M._check_message = check_message

--- Renews the lock: true, or nil, err.
function Message:renew()
  local h, err = check_message(self, "renew")
  if not h then return nil, err end
  return self._client:_settle(self, "renew")
end
--- Abandons (unlocks) the message so it is redelivered: true, or nil, err.
function Message:abandon()
  local h, err = check_message(self, "abandon")
  if not h then return nil, err end
  return self._client:_settle(self, "abandon")
end
--- Completes (deletes) the message: true, or nil, err.
function Message:complete()
  local h, err = check_message(self, "complete")
  if not h then return nil, err end
  return self._client:_settle(self, "complete")
end

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
    return nil, new_error({ code = "state", errno = core.PL_ESTATE, op = "release",
                            message = "the message is being settled" })
  end
  local c = self._client
  local r = rawget(c, "_renewer")
  if r then c:_renew_remove(r, h) end
  Message.free(self)
  return true
end

-- wrap_message(client, h): setmetatable({ _h = h, _client = client }, Message), made in C
-- with room for the fields __index caches (and resty's _settling), so the table does not
-- grow (rehash) on the first reads.
M._wrap_message = core.message_wrapper(Message)

-- ------------------------------------------------------------------ blocking client

local Client = {}
Client.__index = Client
-- with_lock's bookkeeping, by message key, for every client (the renewer is shared):
-- the messages a with_lock holds now, and the lost events found for them.
local ACTIVE, LOST = {}, {}
-- (a client's held handles, weakly: a message whose coroutine was dropped stays collectable)
local WEAK_VALUES = { __mode = "v" }
Client.__name = "peeklock.Client"
Client._peeklock_client = true
M.Client = Client

-- The error of a call on a closed client.
local function closed_error(op)
  return new_error({ code = "closed", errno = core.PL_ECLOSED, message = "client was closed", op = op })
end

local function check_client(self, fname)
  local mt = metatable_of(self)
  if mt ~= Client and (type(mt) ~= "table" or not rawget(mt, "_peeklock_client")) then
    error(("bad self to '%s' (peeklock.Client expected, got %s; use client:%s(...))"):format(
      fname, type(self), fname), user_level())
  end
  local h = self._h -- a raw field of every client (the handle, or false once closed)
  if not h then
    return nil, closed_error(fname)
  end
  return h
end

-- Inside nginx the blocking client stops the whole worker for each call: say so once.
local warned = false
local function warn_in_nginx()
  local ngx = rawget(G, "ngx")
  if warned or type(ngx) ~= "table" or not ngx.socket or not ngx.log then return end
  warned = true
  ngx.log(ngx.WARN, "peeklock: require \"peeklock\" is the blocking client: inside nginx each of its calls ",
          "blocks the whole worker; use require \"peeklock.resty\" (cosockets) instead")
end

-- The options peeklock.client takes, with their types (peeklock.resty adds its own).
local CLIENT_OPTIONS = {
  connection_string = "string", endpoint = "string", key_name = "string", key = "string",
  sas_token = "string", ca_file = "string", connect_timeout_ms = "number", request_timeout_ms = "number",
  max_retries = "number", retry_base_ms = "number", retry_max_ms = "number", pool_size = "number",
  token_lifetime_s = "number", renewer = "table",
}
local RENEWER_OPTIONS = { max_connections = "number", margin_floor_ms = "number", default_max_renew_ms = "number",
                          request_timeout_ms = "number", jitter = "number" }

-- Refuses (raises at the user's line) an option fname does not know or of the wrong
-- type, before anything is made or sent. known: name -> type; extra: a second such table.
local function check_options(fname, opts, known, extra)
  for k, v in pairs(opts) do
    local want = known[k] or (extra and extra[k])
    if not want then
      error(("unknown option '%s' to '%s'"):format(tostring(k), fname), user_level())
    end
    if type(v) ~= want or (want == "number" and v ~= v) then
      error(("bad option '%s' to '%s' (%s expected, got %s)"):format(k, fname, want, type(v)), user_level())
    end
  end
  if type(opts.renewer) == "table" then check_options(fname, opts.renewer, RENEWER_OPTIONS) end
end
M._check_options = check_options

--- peeklock.client(connection_string | options) -> client | nil, err
-- options: connection_string | endpoint + key_name + key | sas_token, and
-- connect_timeout_ms, request_timeout_ms, max_retries, retry_base_ms, retry_max_ms,
-- pool_size, ca_file, token_lifetime_s; renewer = { margin_floor_ms=..., ... }.
-- An unknown option or one of the wrong type raises an error.
function M.client(opts, extra_options)
  if type(opts) == "string" then opts = { connection_string = opts }
  elseif type(opts) ~= "table" then argerror("client", 1, "connection string or options table", opts)
  else check_options("client", opts, CLIENT_OPTIONS, extra_options) end
  if not extra_options then warn_in_nginx() end
  local ok, rc, h = pcall(core.client_new, opts)
  if not ok then error("peeklock.client: " .. tostring(rc), 2) end
  if rc < 0 then return nil, last_error(rc, "client") end
  return setmetatable({ _h = h, _renewer_opts = opts.renewer, _lost = LOST, _active = ACTIVE,
                         _held = setmetatable({}, WEAK_VALUES) }, Client)
end

function Client:endpoint()
  local h, err = check_client(self, "endpoint")
  if not h then return nil, err end
  return core.pl_client_endpoint(h)
end

-- send_batch's check, build, hand over and release (native: core.pl_send_batch, or
-- peeklock.resty's core.pl_request_send_batch): native's results, or nil, err.
local function batch_from(native, self, entity, list)
  local h, err = check_client(self, "send_batch")
  if not h then return nil, err end
  check_string("send_batch", 1, entity)
  local b
  b, err = build_batch("send_batch", list)
  if not b then return nil, err end
  local rc, x = native(h, entity, b)
  core.release(b)
  return rc, x
end
M._batch_from = batch_from

--- client:send_batch(entity, { body | {body=..., ...}, ... }) -> true | nil, err
function Client:send_batch(entity, list)
  local rc, err = batch_from(core.pl_send_batch, self, entity, list)
  if not rc then return nil, err end
  if rc < 0 then return nil, last_error(rc, "send_batch") end
  return true
end

-- client:send(entity, body, opts) -> true | nil, err
-- client:peek_lock(entity, {timeout=s}) -> msg | nil, nil (nothing in time) | nil, err
-- client:receive_and_delete(entity, {timeout=s}) -> msg | nil, nil | nil, err
-- Natives (core.client_methods): each is one C call from the caller's line to the core,
-- with check_client's, request_send_from's and the timeout option's checks and wording. They call
-- back here for error values (last_error, closed_error) and to raise (raise,
-- outgoing_error: at the user's line).
Client.send, Client.peek_lock, Client.receive_and_delete =
  core.client_methods(Client, Message, DateTime, last_error, outgoing_error, closed_error, raise)

local SETTLE = { renew = core.pl_renew_lock, abandon = core.pl_unlock, complete = core.pl_complete }

-- The client's and the message's handles for a renew or settle, or nil, err when either is gone.
local function settle_handles(client, msg, op)
  local h = client._h
  if not h then
    return nil, closed_error(op)
  end
  local mh = msg._h
  if not mh then
    return nil, new_error({ code = "state", errno = core.PL_ESTATE, message = "message was freed", op = op })
  end
  return h, mh
end
M._settle_handles = settle_handles

function Client:_settle(msg, op)
  local h, mh = settle_handles(self, msg, op)
  if not h then return nil, mh end
  if self._renewer and op ~= "renew" then core.pl_renewer_remove(self._renewer, mh) end
  local rc = SETTLE[op](h, mh)
  if rc < 0 then return nil, last_error(rc, op) end
  return true
end

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
    rc, r = core.renewer_new(self._h, self._renewer_opts)
    if rc < 0 then return nil, last_error(rc, "renewer") end
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
  st.renewer = rs or { held = 0, renewals = 0, failures = 0, lost = 0, cap_reached = 0, threads = 0,
                       lateness_p99_ms = 0.0, rtt_p99_ms = 0.0, slack_buckets = { 0, 0, 0, 0, 0, 0 },
                       state_bytes = 0 }
  return st
end

local function lost_error(info, op)
  local msg = "lock lost; nothing was completed"
  if info and info.reason and info.reason ~= "" then msg = msg .. " (" .. info.reason .. ")" end
  return new_error({ code = "lock_lost", errno = core.PL_ELOCKLOST, status = info and info.status or 0,
                     message = msg, op = op })
end
M._lost_error = lost_error
M._check_client = check_client
M._check_string = check_string
M._check_opts = check_opts

-- xpcall's handler in with_lock: the error value and the handler's traceback.
local HANDLER_FAILURE = {}
local function keep_traceback(e)
  return setmetatable({ cause = e, traceback = traceback(type(e) == "string" and e or tostring(e), 2) },
                      HANDLER_FAILURE)
end

local function handler_error(cause, op)
  local tb
  if getmetatable(cause) == HANDLER_FAILURE then cause, tb = cause.cause, cause.traceback end
  return new_error({ code = "handler", errno = 0, message = "handler failed: " .. tostring(cause),
                     cause = cause, traceback = tb, op = op or "with_lock" })
end
M._handler_error = handler_error

local function pack(...) return { n = select("#", ...), ... } end

local function with_lock_args(fname, entity, opts, fn)
  check_string(fname, 1, entity)
  if fn == nil and type(opts) == "function" then opts, fn = nil, opts end
  opts = check_opts(fname, 2, opts)
  if type(fn) ~= "function" then argerror(fname, 3, "function", fn) end
  local max_renew = opt_max_renew(fname, opts)
  opt_timeout(fname, opts, "timeout", 30) -- checked here to be worded as this call's
  return opts, fn, max_renew
end
M._with_lock_args = with_lock_args

local run_held

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
  msg, err = self:peek_lock(entity, opts)
  if not msg then return nil, err end
  return run_held(self, r, msg, max_renew, fn, "with_lock")
end

-- Puts msg (just received) in the renewer's hands for up to max_renew seconds, recorded as
-- held by a with_lock-like caller: its key, or nil, err (msg then abandoned and freed).
local function hold(self, r, msg, max_renew, op)
  local mh = msg._h
  local key = core.key(mh)
  self._active[key] = true
  self._held[key] = mh
  local rc = self:_renew_add(r, mh, core.pl_max_renew_ms(max_renew))
  if rc < 0 then
    local err = last_error(rc, op)
    self._active[key], self._held[key] = nil, nil
    self:_settle(msg, "abandon")
    msg:free()
    return nil, err
  end
  self:_holding(key, msg)
  return key
end

-- What follows a handler's run on a held msg (key from hold): completed when ok, abandoned
-- when not (cause: the handler's error), unless it was settled, lost or handed over
-- meanwhile; msg is freed. true, or nil, err (code handler, lock_lost, closed,
-- unknown_outcome, or the settle's).
local function finish(self, r, msg, key, ok, cause, op)
  self:_holding(key, nil)
  local mh = rawget(msg, "_h")
  if not mh then -- the handler released (handed over) or freed it: nothing to settle here
    self._lost[key], self._active[key], self._held[key] = nil, nil, nil
    if not ok then return nil, handler_error(cause, op) end
    return true
  end
  -- (the handler may have closed the client, and with it this renewer)
  local live = rawget(self, "_renewer") == r and r or nil
  local closed = not rawget(self, "_h")
  local outcome, serr
  if closed then
    if live then self:_renew_remove(r, mh) end
  else
    outcome, serr = self:_finish_held(live, msg, mh, ok)
  end
  self:poll_events()
  local info = self._lost[key]
  self._lost[key], self._active[key], self._held[key] = nil, nil, nil
  if closed then -- the handler closed the client
    local abandoned = core.pl_message_lock_state(mh) == core.PL_LOCK_SETTLED
    msg:free()
    if not ok then return nil, handler_error(cause, op) end
    return nil, new_error({ code = "closed", errno = core.PL_ECLOSED, op = op,
      message = abandoned and "the message was abandoned when the client closed while the handler ran; "
                              .. "it was not completed and will be delivered again"
                or "the client was closed while the handler ran; the message was not completed "
                   .. "(it is delivered again when its lock expires)" })
  end
  msg:free()
  if not ok then return nil, handler_error(cause, op) end
  if serr then
    if serr.code == "lock_lost" then return nil, lost_error(info, op) end
    return nil, serr
  end
  if outcome == core.PL_FINISH_LOST then return nil, lost_error(info, op) end
  -- settled behind the handler's back: a settle with an unknown outcome, or an abandon when
  -- the client closed while the handler ran
  if outcome == core.PL_FINISH_UNKNOWN or outcome == core.PL_FINISH_CLOSED then
    local unknown = outcome == core.PL_FINISH_UNKNOWN
    return nil, new_error({ code = unknown and "unknown_outcome" or "closed",
      errno = unknown and core.PL_EUNKNOWN or core.PL_ECLOSED, op = op,
      message = unknown and "a settle made while the handler ran had an unknown outcome: the message "
                            .. "may or may not have been completed"
                or "the message was abandoned when the client closed while the handler ran; it was not "
                   .. "completed and will be delivered again" })
  end
  return true
end

-- with_lock's part once it holds msg (also client:attach's with a function): fn(msg) while
-- the renewer keeps the lock, then the settle its outcome calls for.
function run_held(self, r, msg, max_renew, fn, op)
  local key, err = hold(self, r, msg, max_renew, op)
  if not key then return nil, err end
  local mh = msg._h
  local m = self._metrics -- (peeklock.resty's, when counting: the handler's duration)
  local t0 = m and m.now_ms()
  local res = pack(xpcall(fn, keep_traceback, msg))
  if m then
    m:process(core.pl_message_entity(mh), self._server, (m.now_ms() - t0) / 1000,
              not res[1] and "handler" or nil)
  end
  local ok
  ok, err = finish(self, r, msg, key, res[1], res[2], op)
  if not ok then return nil, err end
  return true, unpack(res, 2, res.n)
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
-- lock was lost. A string that is not a handle for this client's namespace gives
-- invalid_argument; no error quotes the handle.
function Client:attach(handle, opts, fn)
  local h, err = check_client(self, "attach")
  if not h then return nil, err end
  check_string("attach", 1, handle)
  if fn == nil and type(opts) == "function" then opts, fn = nil, opts end
  opts = check_opts("attach", 2, opts)
  check_options("attach", opts, ATTACH_OPTIONS)
  if fn ~= nil and type(fn) ~= "function" then argerror("attach", 3, "function or nil", fn) end
  local max_renew = opt_max_renew("attach", opts)
  local r
  if fn or opts.renew ~= false then
    r, err = self:_get_renewer()
    if not r then return nil, err end
  end
  local rc, mh = core.pl_client_attach(h, handle)
  if rc < 0 then return nil, last_error(rc, "attach") end
  local msg = M._wrap_message(self, mh)
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

-- ------------------------------------------------------------------ processor

local PROCESS_OPTIONS = { concurrency = "number", max_renew = "number", poll_timeout = "number",
                          max_messages = "number", idle_timeout = "number", stop = "function",
                          batch = "number", max_wait = "number" }

-- process's checked options: concurrency (1..max_concurrency), max_renew, poll_timeout,
-- max_messages, idle_timeout, stop, batch, max_wait (extra: a driver's own, name -> type).
local function process_args(self, entity, handler, opts, max_concurrency, extra)
  local h, err = check_client(self, "process")
  if not h then return nil, err end
  check_string("process", 1, entity)
  if type(handler) ~= "function" then argerror("process", 2, "function", handler) end
  opts = check_opts("process", 3, opts)
  check_options("process", opts, PROCESS_OPTIONS, extra)
  return {
    concurrency = floor(opt_number("process", opts, "concurrency", 1, 1, max_concurrency)),
    max_renew = opt_max_renew("process", opts),
    poll_timeout = opt_timeout("process", opts, "poll_timeout", 5),
    max_messages = opts.max_messages and floor(opt_number("process", opts, "max_messages", nil, 1)),
    idle_timeout = opts.idle_timeout and opt_number("process", opts, "idle_timeout", nil, 0),
    stop = opts.stop,
    batch = opts.batch and floor(opt_number("process", opts, "batch", nil, 1, 100000)),
    max_wait = opt_number("process", opts, "max_wait", 1, 0, 3600),
  }
end
M._process_args = process_args

-- One consumer of process: with_lock after with_lock until stopping() says so, counting in
-- s (processed, failed: the handler raised and the message was abandoned, lost, errors).
-- A retryable error pauses (pause(seconds)) and goes on; any other ends the run (s.error).
local function process_loop(self, entity, handler, o, s, stopping, pause)
  local lock_opts = { timeout = o.poll_timeout, max_renew = o.max_renew, _cut_on_exit = o.cut_on_exit }
  while not stopping() do
    if o.max_messages and s.started >= o.max_messages then break end
    if o.idle_timeout and core.pl_now_mono_ms() - s.last_message_ms >= o.idle_timeout * 1000 then break end
    s.started = s.started + 1
    local ok, err = self:with_lock(entity, lock_opts, handler)
    if ok then
      s.processed = s.processed + 1
    elseif err == nil then
      s.started = s.started - 1 -- nothing arrived within poll_timeout
    else
      if err.code == "handler" then s.failed = s.failed + 1
      elseif err.code == "lock_lost" then s.lost = s.lost + 1
      else
        s.started = s.started - 1
        s.errors = s.errors + 1
        s.last_error = err
        if not err.retryable then s.error = err; s.stopped = true; break end
        pause(1)
      end
    end
    if ok or (err and (err.code == "handler" or err.code == "lock_lost")) then
      s.last_message_ms = core.pl_now_mono_ms()
    end
  end
end
M._process_loop = process_loop

-- ------------------------------------------------------------------ batch handlers

-- A batch handler's returned table: message (or sequence number) -> "complete" or "abandon",
-- checked whole first (nil, what is wrong), then each settle made on its own. Returns the
-- outcome by index in msgs (processed, failed: abandoned, lost, errors) and the last settle
-- error.
local function apply_result(self, msgs, result)
  local index, by_seq = {}, {}
  for i = 1, #msgs do
    local msg = msgs[i]
    index[msg] = i
    if rawget(msg, "_h") then by_seq[msg.sequence_number] = i end
  end
  local plan = {}
  for k, action in pairs(result) do
    local i = index[k] or (type(k) == "number" and by_seq[k])
    if not i then
      return nil, "the handler's result names " .. tostring(k) .. ", not one of its messages"
    end
    if action ~= "complete" and action ~= "abandon" then
      return nil, "the handler's result says " .. tostring(action) .. " for message "
                  .. tostring(msgs[i].sequence_number) .. ": 'complete' or 'abandon' expected"
    end
    plan[i] = action
  end
  local out, last_err = {}, nil
  for i, action in pairs(plan) do
    local msg = msgs[i]
    local mh = rawget(msg, "_h")
    if mh and core.pl_message_lock_state(mh) == core.PL_LOCK_HELD then
      local ok, err = self:_settle(msg, action)
      if ok then out[i] = action == "complete" and "processed" or "failed"
      elseif err.code == "lock_lost" then out[i] = "lost"
      else out[i] = "errors"; last_err = err end
    end
  end
  return out, last_err
end

local function count(s, outcome, err)
  s[outcome] = s[outcome] + 1
  if err and outcome == "errors" then s.last_error = err end
end

-- handler(msgs) on a collected batch (keys: their hold keys), then each message settled as
-- finish does, or as the handler's returned table says, and counted in s.
local function run_batch(self, r, msgs, keys, handler, s)
  local m = self._metrics
  local t0 = m and m.now_ms()
  local ok, res = xpcall(handler, keep_traceback, msgs)
  local applied, serr = {}, nil
  if ok and type(res) == "table" then
    local out, why = apply_result(self, msgs, res)
    if out then applied, serr = out, why
    else ok, res = false, why end
  end
  local secs = m and (m.now_ms() - t0) / 1000
  for i = 1, #msgs do
    local msg = msgs[i]
    local mh = rawget(msg, "_h")
    local before = mh and core.pl_message_lock_state(mh)
    if m and mh then m:process(core.pl_message_entity(mh), self._server, secs, not ok and "handler" or nil) end
    local done, err = finish(self, r, msg, keys[i], ok, res, "process")
    if applied[i] then count(s, applied[i], serr)
    elseif not before or before == core.PL_LOCK_SETTLED then count(s, "settled_by_handler")
    elseif before == core.PL_LOCK_LOST then count(s, "lost")
    elseif before == core.PL_LOCK_UNKNOWN then count(s, "errors", err)
    elseif done then count(s, "processed")
    elseif err.code == "handler" then count(s, "failed")
    elseif err.code == "lock_lost" then count(s, "lost")
    else count(s, "errors", err) end
  end
  s.last_message_ms = core.pl_now_mono_ms()
end

-- A consumer of process with batch = N: collects up to N messages, each held by the renewer
-- from its receipt (the first receive waits up to poll_timeout, the rest until max_wait
-- seconds after the first arrived, rounded up to whole seconds; max_wait = 0: only what is
-- there at once), and runs handler(msgs) on them. A stop while collecting gives the batch
-- back (abandoned, counted in abandoned_on_drain); nothing has run on it.
local function batch_loop(self, entity, handler, o, s, stopping, pause)
  local r, rerr = self:_get_renewer()
  if not r then s.error, s.stopped = rerr, true; return end
  local ropts = { timeout = o.poll_timeout, _cut_on_exit = o.cut_on_exit }
  while not stopping() do
    if o.max_messages and s.started >= o.max_messages then break end
    if o.idle_timeout and core.pl_now_mono_ms() - s.last_message_ms >= o.idle_timeout * 1000 then break end
    local msgs, keys, deadline = {}, {}, nil
    while #msgs < o.batch and not stopping() do
      if o.max_messages and s.started >= o.max_messages then break end
      if deadline then
        local left = deadline - core.pl_now_mono_ms()
        if left <= 0 and o.max_wait > 0 then break end
        ropts.timeout = left > 0 and math.ceil(left / 1000) or 0
      else
        ropts.timeout = o.poll_timeout
      end
      s.started = s.started + 1
      local msg, err = self:peek_lock(entity, ropts)
      if not msg then
        s.started = s.started - 1
        if err then
          s.errors = s.errors + 1
          s.last_error = err
          if not err.retryable then s.error = err; s.stopped = true
          elseif #msgs == 0 then pause(1) end
        end
        break
      end
      deadline = deadline or core.pl_now_mono_ms() + o.max_wait * 1000
      local key
      key, err = hold(self, r, msg, o.max_renew, "process")
      if key then
        keys[#msgs + 1] = key
        msgs[#msgs + 1] = msg
      else
        s.started = s.started - 1
        s.errors = s.errors + 1
        s.last_error = err
      end
    end
    if #msgs > 0 then
      if stopping() then -- the run ends while collecting: nothing ran on them, give them back
        for i = 1, #msgs do
          finish(self, r, msgs[i], keys[i], false, "drained", "process")
          s.abandoned_on_drain = s.abandoned_on_drain + 1
        end
        s.last_message_ms = core.pl_now_mono_ms()
      else
        run_batch(self, r, msgs, keys, handler, s)
      end
    end
  end
end
M._batch_loop = batch_loop

local function new_summary(o)
  local s = { processed = 0, failed = 0, lost = 0, errors = 0, started = 0, stopped = false,
              last_message_ms = core.pl_now_mono_ms() }
  if o.batch then s.settled_by_handler, s.abandoned_on_drain = 0, 0 end
  return s
end
M._new_summary = new_summary

--- client:process(entity, handler, opts) -> summary | nil, err
-- Runs handler(msg) for message after message of entity, each inside with_lock (completed
-- when it returns, abandoned when it raises, its lock renewed for up to max_renew seconds).
-- The blocking client runs one handler at a time (concurrency = 1; peeklock.resty runs
-- several). Options: poll_timeout (long poll per receive, 5 s), max_messages, idle_timeout
-- (seconds without a message), stop (a function: true ends the run between messages).
-- summary: processed, failed (raised: abandoned), lost, errors, error (the one that ended it).
function Client:process(entity, handler, opts)
  local o, err = process_args(self, entity, handler, opts, 1)
  if not o then return nil, err end
  local s = new_summary(o)
  local stop = o.stop
  local function stopping() return s.stopped or (stop ~= nil and stop() == true) end
  local loop = o.batch and batch_loop or process_loop
  loop(self, entity, handler, o, s, stopping, function() end)
  s.last_message_ms, s.started = nil, nil
  return s
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

--- peeklock.sas_token(resource_uri, key_name, key, expiry_unix) -> token | nil, err
function M.sas_token(uri, key_name, key, expiry)
  check_string("sas_token", 1, uri)
  check_string("sas_token", 2, key_name)
  check_string("sas_token", 3, key)
  if type(expiry) ~= "number" then argerror("sas_token", 4, "number", expiry) end
  local rc, tok = core.pl_sas_token(uri, key_name, key, floor(expiry))
  if rc < 0 then return nil, last_error(rc, "sas_token") end
  return tok
end

--- peeklock.parse_connection_string(s) -> { endpoint, key_name, entity_path,
-- development_emulator, has_key, has_sas_token } | nil, err (never echoes a key)
function M.parse_connection_string(s)
  check_string("parse_connection_string", 1, s)
  local rc, cs = core.pl_connstr_parse(s)
  if rc < 0 then return nil, last_error(rc, "parse_connection_string") end
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
-- and is abandoned when the collector takes it, as <close> does (bindings/lua.i's
-- pl_lua_gc calls this with the handle and the message's client).
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
