-- peeklock.internal: what lua/peeklock.lua (the blocking client) and lua/peeklock/resty.lua
-- (the cosocket client) share, and neither exports: error values, argument checks worded at
-- the user's line, outgoing-message building, the Message and Client classes' tables and
-- their self checks, and the held-message workflow (with_lock's hold and finish, process's
-- loops) that both run over their own transport. Private: not part of the API (docs/lua.md).
local core = require "peeklock.core"

local type, tostring, error, select = type, tostring, error, select
local setmetatable, getmetatable, rawget, rawset, xpcall = setmetatable, getmetatable, rawget, rawset, xpcall
-- The self checks compare metatables by identity: debug.getmetatable gives the same
-- answer as getmetatable for them (none of ours has a __metatable field) without
-- looking that field up on every call.
local metatable_of = debug and debug.getmetatable or getmetatable
local floor = math.floor
local find = string.find
local unpack = table.unpack or unpack ---@diagnostic disable-line: deprecated
local traceback = debug.traceback

-- ------------------------------------------------------------------ codes

-- Lua's word for each error code ("lock_lost"): the core's one list of codes and
-- their words (pl_code_at, pl_code_word, csrc/error.c).
local CODE_NAMES = {} -- error code -> word
local codes = {}      -- word -> error code
for i = 0, core.pl_code_count() - 1 do
  local num = core.pl_code_at(i)
  local word = num < 0 and core.pl_code_word(num)
  if word then CODE_NAMES[num], codes[word] = word, num end
end

-- ------------------------------------------------------------------ errors

-- An error is a table whose only raw content is its message at [1], so that it works
-- where lua-resty code expects a string: tostring, concatenation ("x" .. err), and
-- ngx.say / ngx.print (which write a table's array part). Its fields (code, errno,
-- status, retryable, message, op, cause, traceback) are read through __index from a
-- side table keyed weakly by the error.
local Error = {}
Error.__name = "peeklock.Error"
local FIELDS = setmetatable({}, { __mode = "k" })
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

-- The C core's operation names (pl_op_name, counted up from 0 until nil), which open some
-- of its messages: an operation the Lua error already names. (Its argument errors open with
-- the argument's name as Lua calls it, and are shown as they are.)
local C_OPS = {}
do
  local i, name = 0, core.pl_op_name(0)
  while name do
    C_OPS[name] = true
    i = i + 1
    name = core.pl_op_name(i)
  end
end
local function plain_message(op, message)
  message = tostring(message)
  local head, rest = message:match("^([%w_%-%. ]-): (.*)$")
  if head and (C_OPS[head] or head == op) then return plain_message(op, rest) end
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

-- An error for a core code (errno: core.PL_E*), its word the core's (CODE_NAMES); fields:
-- the other fields (op, message, status, retryable), a table this takes.
local function code_error(errno, fields)
  fields.code, fields.errno = CODE_NAMES[errno] or "unknown", errno
  return new_error(fields)
end

-- The code word of a handler's failure (with_lock's and process's): Lua's own, no core code
-- (errno 0).
local HANDLER = "handler"

--- True when e is a peeklock error table.
local function is_error(e) return getmetatable(e) == Error end

-- Error from a negative C return code and the thread's last error detail.
local function last_error(rc, op)
  local code, status, retryable, message = core.last_error()
  if code ~= rc then -- the detail belongs to another call: keep only the code
    status, retryable, message = 0, false, core.pl_strerror(rc)
  end
  if message == "" then message = core.pl_strerror(rc) end
  return code_error(rc, { status = status, retryable = retryable, message = message, op = op })
end

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

local function argerror(fname, n, what, v)
  error(("bad argument #%d to '%s' (%s expected, got %s)"):format(n, fname, what, type(v)), user_level())
end

-- Raises msg at the user's line (the natives' argument errors come here).
local function raise(msg) error(msg, user_level()) end

-- A call's failure (negative rc, op the call's name): the core's refusal of an argument
-- (PL_EINVAL) raised at the user's line in the core's words ("peeklock: send: entity:
-- ... (invalid_argument)"); anything else (network, lost lock, server) nil, err.
local function fail(rc, op)
  local err = last_error(rc, op)
  if rc == core.PL_EINVAL then error(tostring(err), user_level()) end
  return nil, err
end

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

-- (NaN passes: each caller hands the number to the core's check, which refuses it in its words)
local function opt_number(fname, opts, key, dflt)
  local v = opts[key]
  if v == nil then return dflt end
  if type(v) ~= "number" then
    error(("bad option '%s' to '%s' (number expected, got %s)"):format(key, fname, type(v)), user_level())
  end
  return v
end

-- Raises the core's refusal (its last error) of option key of fname at the user's line, in
-- the core's words without the argument's name, which the option names.
local function refuse_option(fname, key)
  local message = select(4, core.last_error())
  error(("bad option '%s' to '%s' (%s)"):format(key, fname, (message:gsub("^[%w_]+: ", ""))), user_level())
end

-- A receive timeout option: a number here; its whole seconds (a fraction rounded up) and
-- its range are the core's (pl_timeout_seconds), refused as an option of this call with
-- the core's words.
local function opt_timeout(fname, opts, key, dflt)
  local t = core.pl_timeout_seconds(opt_number(fname, opts, key, dflt))
  if t < 0 then refuse_option(fname, key) end
  return t
end

-- The max_renew option (seconds, default the core's PL_DEFAULT_MAX_RENEW_MS: 300): a number
-- here, its value the core's (pl_max_renew_ms: positive, at most 10^9), refused with its
-- words. The renewer takes it in ms from the same function (rounded up, never 0: the
-- renewer's default).
local DEFAULT_MAX_RENEW = core.PL_DEFAULT_MAX_RENEW_MS / 1000
local function opt_max_renew(fname, opts)
  local v = opt_number(fname, opts, "max_renew", DEFAULT_MAX_RENEW)
  if core.pl_max_renew_ms(v) < 0 then refuse_option(fname, "max_renew") end
  return v
end

-- ------------------------------------------------------------------ outgoing messages

-- The settable BrokerProperties string fields, option name -> wire name: the core's one
-- table (pl_broker_field_arg/_name, csrc/message.c), which core.outgoing_from reads too.
local BROKER_FIELDS = {}
for i = 0, core.pl_broker_field_count() - 1 do
  BROKER_FIELDS[core.pl_broker_field_arg(i)] = core.pl_broker_field_name(i)
end

local DateTime = { __name = "peeklock.datetime" }
DateTime.__index = DateTime
function DateTime.__tostring(d) return "peeklock.datetime(" .. tostring(d.unix) .. ")" end
--- Marks a Unix time (seconds) as a DateTime custom property. A number here; the value
--- (whole seconds of the years 1970..9999) is the core's (pl_check_datetime), refused in
--- its words.
local function datetime(unix)
  if type(unix) ~= "number" then argerror("datetime", 1, "number", unix) end
  if core.pl_check_datetime("datetime", unix) < 0 then
    local message = select(4, core.last_error())
    error(("bad argument #1 to 'datetime' (%s)"):format((message:gsub("^property '[^']*': ", ""))), user_level())
  end
  return setmetatable({ unix = unix }, DateTime)
end


local function fail_build(h, rc, op)
  core.release(h)
  return fail(rc, op)
end

-- The argument error a building native described (false, what, key, a, b), raised at the
-- user's line, or fail(rc) for a core failure (nil, rc): nil, err, or its PL_EINVAL raised.
local function outgoing_error(fname, h, what, key, a, b)
  if h == nil then return fail(what, fname) end
  local msg
  if what == "option" then
    msg = ("bad option '%s' to '%s' (%s expected, got %s)"):format(tostring(key), fname, a, type(b))
  elseif what == "value" then -- the core refused the value: its words
    msg = ("bad option '%s' to '%s' (%s)"):format(tostring(key), fname, a)
  elseif what == "unknown" then
    msg = ("unknown option '%s' to '%s'"):format(tostring(key), fname)
  elseif what == "datetime" then
    msg = ("bad property '%s' in '%s' (peeklock.datetime of a number expected)"):format(key, fname)
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

-- Builds a pl_batch handle from a list of bodies or {body=..., <send options>}.
local function build_batch(fname, list)
  if type(list) ~= "table" then argerror(fname, 2, "table (list of messages)", list) end
  local rc, b = core.pl_batch_new()
  if rc < 0 then return fail(rc, fname) end
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
      error(("bad message #%d to '%s' (%s)"):format(i, fname, message), user_level())
    end
    if rc < 0 then return fail_build(b, rc, fname) end
  end
  return b
end

-- ------------------------------------------------------------------ the classes' tables

-- Their methods are lua/peeklock.lua's (peeklock.resty's Client inherits them); the self
-- checks below compare metatables with these.
local Message = { __name = "peeklock.Message" }
local Client = { __name = "peeklock.Client", _peeklock_client = true }
Client.__index = Client


-- The error of a call on a freed message.
local function freed_error(op)
  return code_error(core.PL_ESTATE, { message = "message was freed", op = op })
end

local function bad_message_self(self, fname)
  error(("bad self to '%s' (peeklock.Message expected, got %s)"):format(fname, type(self)), user_level())
end

local function check_message(self, fname)
  if metatable_of(self) ~= Message then bad_message_self(self, fname) end
  local h = self._h
  if not h then
    return nil, freed_error(fname)
  end
  return h
end

-- wrap_message(client, h): setmetatable({ _h = h, _client = client }, Message), made in C
-- with room for the fields __index caches, so the table does not grow (rehash) on the
-- first reads.
local wrap_message = core.message_wrapper(Message)

-- The error of a call on a closed client.
local function closed_error(op)
  return code_error(core.PL_ECLOSED, { message = "client was closed", op = op })
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


-- Refuses (raises at the user's line) an option fname does not know or of the wrong
-- type, before anything is made or sent. known: name -> type; extra: a second such table.
local function check_options(fname, opts, known, extra)
  for k, v in pairs(opts) do
    local want = known[k] or (extra and extra[k])
    if not want then
      error(("unknown option '%s' to '%s'"):format(tostring(k), fname), user_level())
    end
    local base = want == "number?" and "number" or want
    if type(v) ~= base or (want == "number" and v ~= v) then
      error(("bad option '%s' to '%s' (%s expected, got %s)"):format(k, fname, base, type(v)), user_level())
    end
  end
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

-- The client's and the message's handles for a renew or settle, or nil, err when either is gone.
local function settle_handles(client, msg, op)
  local h = client._h
  if not h then
    return nil, closed_error(op)
  end
  local mh = msg._h
  if not mh then
    return nil, freed_error(op)
  end
  return h, mh
end

-- ------------------------------------------------------------------ held messages

-- The error a finish's outcome (PL_FINISH_*) on mh means for a handler that succeeded, in
-- the core's words (pl_finish_error: closed, unknown or lost), or nil; info: the renewer's
-- lost event, whose HTTP status a lost lock's error keeps.
local function outcome_error(mh, outcome, op, info)
  local rc = core.pl_finish_error(mh, outcome)
  if rc >= 0 then return nil end
  local err = last_error(rc, op)
  if rc == core.PL_ELOCKLOST and info and (info.status or 0) ~= 0 then err.status = info.status end
  return err
end

-- xpcall's handler in with_lock: the error value and the handler's traceback.
local HANDLER_FAILURE = {}
local function keep_traceback(e)
  return setmetatable({ cause = e, traceback = traceback(type(e) == "string" and e or tostring(e), 2) },
                      HANDLER_FAILURE)
end

local function handler_error(cause, op)
  local tb
  if getmetatable(cause) == HANDLER_FAILURE then cause, tb = cause.cause, cause.traceback end
  return new_error({ code = HANDLER, errno = 0, message = "handler failed: " .. tostring(cause),
                     cause = cause, traceback = tb, op = op or "with_lock" })
end

local function pack(...) return { n = select("#", ...), ... } end

local WITH_LOCK_OPTIONS = { timeout = "number?", max_renew = "number?" }

local function with_lock_args(fname, entity, opts, fn)
  check_string(fname, 1, entity)
  if fn == nil and type(opts) == "function" then opts, fn = nil, opts end
  opts = check_opts(fname, 2, opts)
  check_options(fname, opts, WITH_LOCK_OPTIONS)
  if type(fn) ~= "function" then argerror(fname, 3, "function", fn) end
  local max_renew = opt_max_renew(fname, opts)
  opt_timeout(fname, opts, "timeout", core.PL_DEFAULT_RECEIVE_TIMEOUT_S) -- checked here to be worded as this call's
  return opts, fn, max_renew
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
-- seen (a table, or nil), for a processor's count: seen.after is set to msg's lock state
-- once settled (false: released), seen.given_back to pl_run_given_back's flags.
local function finish(self, r, msg, key, ok, cause, op, seen)
  self:_holding(key, nil)
  local mh = rawget(msg, "_h")
  if not mh then -- the handler released (handed over) or freed it: nothing to settle here
    if seen then seen.after, seen.given_back = false, core.PL_RUN_F_DRAINED end
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
  if seen then -- (for a processor's count: its state once settled, or given back)
    seen.after, seen.given_back = core.pl_message_lock_state(mh), core.pl_run_given_back(mh)
  end
  local err -- (read from the message before it is freed)
  if closed and ok then -- the handler closed the client: the close abandoned msg, or left it held
    err = core.pl_message_lock_state(mh) == core.PL_LOCK_SETTLED and outcome_error(mh, core.PL_FINISH_CLOSED, op)
      or code_error(core.PL_ECLOSED, { op = op, message = "the client was closed while the handler ran; the "
                                       .. "message was not completed (it is delivered again when its lock expires)" })
  elseif ok and serr and serr.errno ~= core.PL_ELOCKLOST then
    err = serr
  elseif ok then -- lost (by the settle, or before), or settled behind the handler's back: a
    -- settle with an unknown outcome, or an abandon when the client closed while it ran
    err = outcome_error(mh, serr and core.PL_FINISH_LOST or outcome, op, info)
  end
  msg:free()
  if not ok then return nil, handler_error(cause, op) end
  if err then return nil, err end
  return true
end

-- fn(msg) on a msg that hold put in the renewer's hands (key: its hold key), then the settle
-- its outcome calls for. seen (a table, or nil): seen.before is set to msg's lock state when
-- fn returned (false: fn released or freed it), seen.after as finish sets it, for a
-- processor's count.
local function handle_held(self, r, msg, key, fn, op, seen)
  local mh = msg._h
  local m = self._metrics -- (peeklock.resty's, when counting: the handler's duration)
  local t0 = m and m.now_ms()
  local res = pack(xpcall(fn, keep_traceback, msg))
  if m then
    m:process(core.pl_message_entity(mh), self._server, (m.now_ms() - t0) / 1000,
              not res[1] and "handler" or nil)
  end
  if seen then
    local h = rawget(msg, "_h")
    seen.before = h and core.pl_message_lock_state(h) or false
  end
  local ok, err = finish(self, r, msg, key, res[1], res[2], op, seen)
  if not ok then return nil, err end
  return true, unpack(res, 2, res.n)
end

-- with_lock's part once it holds msg (also client:attach's with a function): fn(msg) while
-- the renewer keeps the lock, then the settle its outcome calls for.
local function run_held(self, r, msg, max_renew, fn, op)
  local key, err = hold(self, r, msg, max_renew, op)
  if not key then return nil, err end
  return handle_held(self, r, msg, key, fn, op)
end

-- ------------------------------------------------------------------ processor

-- ("number?": a number the core checks, NaN included, in its own words)
local PROCESS_OPTIONS = { concurrency = "number?", max_renew = "number?", poll_timeout = "number?",
                          max_messages = "number?", idle_timeout = "number?", stop = "function",
                          batch = "number?", max_wait = "number?" }

-- A processor option: a number here, its value the core's (pl_check_process_option),
-- refused as an option of process with the core's words.
local function opt_process(opts, key, dflt)
  local v = opt_number("process", opts, key, dflt)
  if v ~= nil and core.pl_check_process_option(key, v) < 0 then refuse_option("process", key) end
  return v
end

-- process's checked options: concurrency (the core's rule; at most max_concurrency, what the
-- driver runs at a time), max_renew, poll_timeout, max_messages, idle_timeout, stop, batch,
-- max_wait (extra: a driver's own, name -> type). The entity is checked by the core now.
local function process_args(self, entity, handler, opts, max_concurrency, extra)
  local h, err = check_client(self, "process")
  if not h then return nil, err end
  check_string("process", 1, entity)
  -- the core's refusal raised here, as this call's, before any loop (or light thread) runs
  local erc = core.pl_check_entity(entity)
  if erc < 0 then return fail(erc, "process") end
  if type(handler) ~= "function" then argerror("process", 2, "function", handler) end
  opts = check_opts("process", 3, opts)
  check_options("process", opts, PROCESS_OPTIONS, extra)
  local concurrency = opt_process(opts, "concurrency", 1)
  if concurrency > max_concurrency then
    error(("bad option 'concurrency' to 'process' (out of range 1..%d)"):format(max_concurrency), user_level())
  end
  local max_messages, batch = opt_process(opts, "max_messages"), opt_process(opts, "batch")
  return {
    concurrency = floor(concurrency),
    max_renew = opt_max_renew("process", opts),
    poll_timeout = opt_timeout("process", opts, "poll_timeout", core.PL_DEFAULT_POLL_TIMEOUT_S),
    max_messages = max_messages and floor(max_messages),
    idle_timeout = opt_process(opts, "idle_timeout"),
    stop = opts.stop,
    batch = batch and floor(batch),
    max_wait = opt_process(opts, "max_wait", core.PL_DEFAULT_MAX_WAIT_S),
  }
end

-- The run's bookkeeping is the core's (pl_run, s._run): a claim before each receive against
-- max_messages, the messages in flight, when the run is idle, why it stopped, and the counts
-- (how a message ended is told as PL_RUN_F_* flags; the core's one rule counts it).
local now_ms = core.pl_now_mono_ms

-- Shows the run's counts (pl_run_tallies: received, redelivered, processed,
-- settled_by_handler, failed, lost, unknown, abandoned_on_drain, left_to_expire, errors,
-- in_flight; Python's ProcessSummary fields by the same names) in s.
local function show(s)
  local _, t = core.pl_run_tallies_get(s._run)
  for k, v in pairs(t) do s[k] = v end
end

-- msg was received (and held): counted by the run, one more in flight.
local function received(s, msg)
  core.pl_run_received(s._run, core.pl_message_delivery_count(msg._h), now_ms())
  show(s)
end

-- A received message is done with, how it ended (PL_RUN_F_* flags); err: finish's error, kept
-- as s.last_error when it is a settle's (the run counts it as an error).
local function finished(s, how, err)
  core.pl_run_finish(s._run, how, now_ms())
  show(s)
  if err and err.code ~= HANDLER and err.errno ~= core.PL_ELOCKLOST then s.last_error = err end
end

-- How a message ended, as pl_run_finish's flags, by the core's one rule (pl_run_how): before,
-- its lock state when the handler returned (false: the handler released or freed it); after,
-- its lock state once finish settled it (false: released); done, err: finish's.
local function how_of(before, after, done, err)
  local failed = not done and err.code == HANDLER
  local rc = (done or failed) and 0 or err.errno or core.PL_ESERVER
  return core.pl_run_how(before or -1, failed and 1 or 0, rc, after or -1)
end

-- Records why the run stops (the core's rule: the first cause wins, an error replaces any)
-- and shows the run's reason in s.stopped_by.
local function stop_run(s, reason)
  s.stopped_by = core.pl_run_stop_word(core.pl_run_stop(s._run, reason, now_ms()))
end

-- The run ends with err (s.error, s.stopped: every consumer stops receiving, handlers under
-- way finish).
local function end_with(s, err)
  s.error = s.error or err
  s.stopped = true
  stop_run(s, core.PL_RUN_ERROR)
end

-- The caller's stop option asked between messages: true ends the run (PL_RUN_STOP_EVENT); a
-- stop that raises ends it with an internal error (the held messages are then finished as on
-- any stop, not left in flight).
local function stop_asked(s, stop)
  if stop == nil then return false end
  local ok, res = pcall(stop)
  if not ok then
    end_with(s, code_error(core.PL_EINTERNAL, { op = "process",
                             message = "the stop function raised: " .. tostring(res) }))
    return true
  end
  if res == true then stop_run(s, core.PL_RUN_STOP_EVENT); return true end
  return false
end

-- Something raised between a message's receipt and its count (not the handler, which runs
-- under xpcall: a metrics hook, a bug): msg is given back if still held and counted as
-- failed, so nothing stays in flight; the caller ends the run with raised_error.
local function release_raised(self, r, s, msg, key, cause, op)
  pcall(finish, self, r, msg, key, false, cause, op)
  finished(s, core.PL_RUN_F_HANDLER_FAILED)
end

local function raised_error(cause)
  return code_error(core.PL_EINTERNAL, { op = "process", message = "a consumer failed: " .. tostring(cause) })
end

-- A failed receive of a process consumer (failures: its consecutive failed receives, this one
-- included), by the core's rule (pl_run_receive_failed), counted by the run: the milliseconds
-- to pause before the consumer's next receive, or -1: the run ends, with err, or quietly as
-- "closed" when the client was closed under it.
local function receive_failed(s, err, failures)
  local ms = core.pl_run_receive_failed(s._run, err.errno or core.PL_EINTERNAL, err.retryable and 1 or 0,
                                        failures, now_ms())
  show(s)
  if err.errno == core.PL_ECLOSED then
    s.stopped = true
    stop_run(s, core.PL_RUN_CLOSED)
    return -1
  end
  s.last_error = err
  if ms < 0 then end_with(s, err) end
  return ms
end

-- A claim on the next message (pl_run_claim): false once max_messages are claimed, or the run
-- stops (its limits met: max_messages received, idle for idle_timeout).
local function claim(s)
  return core.pl_run_stop_reason(s._run, now_ms()) == core.PL_RUN_GOING and core.pl_run_claim(s._run, 1) == 1
end

-- pause(seconds) for ms in half-second slices, cut short once stopping() says so.
local function pause_for(ms, stopping, pause)
  local deadline = core.pl_now_mono_ms() + ms
  while not stopping() do
    local left = deadline - core.pl_now_mono_ms()
    if left <= 0 then break end
    pause(math.min(left, 500) / 1000)
  end
end

-- One consumer of process: peek_lock, then the handler on the held message as with_lock runs
-- it, until stopping() says so, each message counted by the run (finished). A failed receive
-- pauses or ends the run by the core's rule (receive_failed).
local function process_loop(self, entity, handler, o, s, stopping, pause)
  local r, rerr = self:_get_renewer()
  if not r then end_with(s, rerr); return end
  local ropts = { timeout = o.poll_timeout, _cut_on_exit = o.cut_on_exit }
  local failures = 0 -- this consumer's consecutive failed receives
  local seen = {}
  while not stopping() and claim(s) do
    local msg, err = self:peek_lock(entity, ropts)
    if msg then
      failures = 0
      local key
      key, err = hold(self, r, msg, o.max_renew, "with_lock")
      if key then
        received(s, msg)
        local pok, ok
        pok, ok, err = pcall(handle_held, self, r, msg, key, handler, "with_lock", seen)
        if not pok then
          release_raised(self, r, s, msg, key, ok, "with_lock")
          end_with(s, raised_error(ok))
          break
        end
        finished(s, how_of(seen.before, seen.after, ok, err), err)
      else -- not held (abandoned): not one of max_messages
        core.pl_run_unclaim(s._run, 1)
        core.pl_run_error(s._run)
        show(s)
        s.last_error = err
      end
    else
      core.pl_run_unclaim(s._run, 1)
      if not err then
        failures = 0 -- nothing arrived within poll_timeout
      else
        failures = failures + 1
        local ms = receive_failed(s, err, failures)
        if ms < 0 then break end
        pause_for(ms, stopping, pause)
      end
    end
  end
end

-- ------------------------------------------------------------------ batch handlers

-- A batch handler's returned table: message (or sequence number) -> "complete" or "abandon",
-- checked whole first (nil, what is wrong), then each settle made on its own. Returns how
-- each message by index in msgs ended (PL_RUN_F_* flags) and the last settle error.
local function apply_result(self, msgs, result)
  local index, by_seq = {}, {}
  for i = 1, #msgs do
    local msg = msgs[i]
    index[msg] = i
    if rawget(msg, "_h") then by_seq[msg.sequence_number] = i end
  end
  local plan, settles = {}, {} -- the action, and the core's settle for it (pl_settle_action)
  for k, action in pairs(result) do
    local i = index[k] or (type(k) == "number" and by_seq[k])
    if not i then
      return nil, "the handler's result names " .. tostring(k) .. ", not one of its messages"
    end
    -- the names are the core's (pl_settle_action); a NUL would cut one short in C
    local name = type(action) == "string" and not find(action, "\0", 1, true) and action or ""
    local settle = core.pl_settle_action(name)
    if settle < 0 then
      return nil, "the handler's result says " .. tostring(action) .. " for message "
                  .. tostring(msgs[i].sequence_number) .. ": "
                  .. (select(4, core.last_error()):gsub("^[%w_]+: ", ""))
    end
    plan[i], settles[i] = action, settle
  end
  local out, last_err = {}, nil
  for i, action in pairs(plan) do
    local msg = msgs[i]
    local mh = rawget(msg, "_h")
    if mh and core.pl_message_lock_state(mh) == core.PL_LOCK_HELD then
      local ok, err = self:_settle(msg, action)
      if ok then out[i] = settles[i] == core.PL_SETTLE_COMPLETE and core.PL_RUN_F_COMPLETED or core.PL_RUN_F_ABANDONED
      elseif err.errno == core.PL_ELOCKLOST then out[i] = core.PL_RUN_F_LOST
      elseif err.errno == core.PL_EUNKNOWN then out[i] = core.PL_RUN_F_UNKNOWN; last_err = err
      else out[i] = core.PL_RUN_F_SETTLE_ERROR; last_err = err end
    end
  end
  return out, last_err
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
    local seen = {}
    local done, err = finish(self, r, msg, keys[i], ok, res, "process", seen)
    if applied[i] then finished(s, applied[i], serr)
    else finished(s, how_of(before, seen.after, done, err), err) end
    keys.counted = i -- (for batch_loop, should anything here raise)
  end
end

-- A consumer of process with batch = N: collects up to N messages, each held by the renewer
-- from its receipt (the first receive waits up to poll_timeout, the rest until max_wait
-- seconds after the first arrived, rounded up to whole seconds; max_wait = 0: only what is
-- there at once), and runs handler(msgs) on them. A stop while collecting gives the batch
-- back (abandoned, counted in abandoned_on_drain); nothing has run on it. A failed receive
-- pauses or ends the run by the core's rule (receive_failed).
local function batch_loop(self, entity, handler, o, s, stopping, pause)
  local r, rerr = self:_get_renewer()
  if not r then end_with(s, rerr); return end
  local ropts = { timeout = o.poll_timeout, _cut_on_exit = o.cut_on_exit }
  local failures = 0 -- this consumer's consecutive failed receives
  local out = false -- no claim was left for this consumer
  while not stopping() and not out do
    local msgs, keys, deadline, wait_ms = {}, {}, nil, nil
    while #msgs < o.batch and not stopping() do
      if deadline then
        local left = deadline - core.pl_now_mono_ms()
        if left <= 0 and o.max_wait > 0 then break end
        -- whole seconds, up: the core's (pl_timeout_seconds); at most the longest receive, so a
        -- longer max_wait takes several
        ropts.timeout = left > 0 and math.min(left / 1000, core.PL_MAX_RECEIVE_TIMEOUT_S) or 0
      else
        ropts.timeout = o.poll_timeout
      end
      if not claim(s) then out = true; break end
      local msg, err = self:peek_lock(entity, ropts)
      if not msg then
        core.pl_run_unclaim(s._run, 1)
        if err then
          -- the run ends (a batch in hand is given back), or pauses after the batch in hand
          failures = failures + 1
          wait_ms = receive_failed(s, err, failures)
          break
        end
        failures = 0
        -- nothing came: a batch in hand closes at its deadline (max_wait may outlast a receive)
        if #msgs == 0 or deadline <= core.pl_now_mono_ms() then break end
      else
        failures = 0
        deadline = deadline or core.pl_now_mono_ms() + o.max_wait * 1000
        local key
        key, err = hold(self, r, msg, o.max_renew, "process")
        if key then
          received(s, msg)
          keys[#msgs + 1] = key
          msgs[#msgs + 1] = msg
        else
          core.pl_run_unclaim(s._run, 1) -- (not held: not one of max_messages)
          core.pl_run_error(s._run)
          show(s)
          s.last_error = err
        end
      end
    end
    if #msgs > 0 then
      if stopping() then -- the run ends while collecting: nothing ran on them, give them back
        for i = 1, #msgs do
          local seen = {}
          finish(self, r, msgs[i], keys[i], false, "drained", "process", seen)
          finished(s, seen.given_back) -- (by its state: lost or unknown meanwhile, the abandon failed)
        end
      else
        local ok, cause = pcall(run_batch, self, r, msgs, keys, handler, s)
        if not ok then -- every message not yet counted is given back and counted
          for i = (keys.counted or 0) + 1, #msgs do release_raised(self, r, s, msgs[i], keys[i], cause, "process") end
          end_with(s, raised_error(cause))
          break
        end
      end
    end
    if wait_ms and wait_ms > 0 then pause_for(wait_ms, stopping, pause) end
  end
end

-- A run's summary, with its pl_run (s._run) started now (nil, err: out of memory; the
-- options were checked); end_summary returns it.
local function new_summary(o)
  local rc, run = core.run_new(now_ms(), { max_messages = o.max_messages, idle_timeout = o.idle_timeout })
  if rc < 0 then return fail(rc, "process") end
  local s = { stopped = false, stopped_by = "", _run = run }
  show(s)
  return s
end

-- The summary of a run whose consumers all ended: why it stopped (PL_RUN_STOPPED when no
-- other reason applies), its pl_run freed.
local function end_summary(s)
  stop_run(s, core.PL_RUN_STOPPED)
  show(s)
  core.release(s._run)
  s._run = nil
  return s
end

return {
  codes = codes,
  CODE_NAMES = CODE_NAMES,
  Error = Error,
  new_error = new_error,
  code_error = code_error,
  is_error = is_error,
  last_error = last_error,
  fail = fail,
  OWN_SOURCES = OWN_SOURCES,
  user_level = user_level,
  argerror = argerror,
  raise = raise,
  check_string = check_string,
  check_opts = check_opts,
  opt_number = opt_number,
  opt_timeout = opt_timeout,
  opt_max_renew = opt_max_renew,
  check_options = check_options,
  BROKER_FIELDS = BROKER_FIELDS,
  DateTime = DateTime,
  datetime = datetime,
  outgoing_error = outgoing_error,
  request_send_from = request_send_from,
  build_batch = build_batch,
  Message = Message,
  Client = Client,
  check_message = check_message,
  freed_error = freed_error,
  wrap_message = wrap_message,
  closed_error = closed_error,
  check_client = check_client,
  batch_from = batch_from,
  settle_handles = settle_handles,
  handler_error = handler_error,
  with_lock_args = with_lock_args,
  run_held = run_held,
  process_args = process_args,
  process_loop = process_loop,
  batch_loop = batch_loop,
  new_summary = new_summary,
  end_summary = end_summary,
  stop_run = stop_run,
  end_with = end_with,
  stop_asked = stop_asked,
}
