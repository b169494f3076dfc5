--- peeklock.metrics: peeklock.resty's counters and histograms in an ngx.shared dict,
-- served in the Prometheus text exposition format.
--
--   # nginx.conf (http level)
--   lua_shared_dict peeklock_metrics 1m;
--   init_worker_by_lua_block { require("peeklock.metrics").init("peeklock_metrics") }
--   location = /metrics { content_by_lua_block { require("peeklock.metrics").serve() } }
--
-- (or peeklock.resty.client{ ..., metrics = { dict = "peeklock_metrics" } } for one client)
--
-- Names follow the OpenTelemetry messaging conventions as the Python side's OpenTelemetry
-- Prometheus export spells them: messaging_client_operation_duration_seconds,
-- messaging_process_duration_seconds, messaging_client_sent_messages_total,
-- messaging_client_consumed_messages_total, and the
-- lock metrics peeklock_lock_renewals_total, peeklock_lock_renewal_failures_total,
-- peeklock_lock_lost_total, peeklock_lock_cap_reached_total,
-- peeklock_lock_renewal_slack_seconds, peeklock_locks_held. Each worker adds to a table of
-- its own and syncs it into the shared dict every sync_interval seconds (and before it
-- serves a scrape), so a count costs no shared-memory lock. No label carries a lock
-- token, key or signature. docs/lua.md, "Metrics".
local ngx = ngx ---@diagnostic disable-line: undefined-global
if type(ngx) ~= "table" or not ngx.shared then
  error("peeklock.metrics needs OpenResty / lua-nginx-module (plain Lua: client:stats())", 2)
end

local type, tostring, pairs, ipairs, error = type, tostring, pairs, ipairs, error
local concat, sort = table.concat, table.sort
local find, sub, gsub, format = string.find, string.sub, string.gsub, string.format

local core = require "peeklock.core"

local M = {}

-- Durations: CLOCK_MONOTONIC through LuaJIT's FFI, in milliseconds with sub-millisecond
-- resolution (ngx.now() and the core's pl_now_mono_ms() tell whole milliseconds: an
-- operation under 1 ms would count as 0). ngx.now() where the FFI or the clock is missing.
local function ngx_now_ms() return ngx.now() * 1000 end
local function monotonic_ms()
  local ok, ffi = pcall(require, "ffi")
  local id = ok and ({ Linux = 1, OSX = 6 })[ffi.os] -- CLOCK_MONOTONIC
  if not id then return ngx_now_ms end
  pcall(ffi.cdef, [[
    typedef struct { long tv_sec; long tv_nsec; } peeklock_timespec;
    int peeklock_clock_gettime(int clock_id, peeklock_timespec *ts) __asm__("clock_gettime");
  ]]) -- (a second load of this module finds them declared)
  local ts, C, tonumber = ffi.new("peeklock_timespec"), ffi.C, tonumber
  if C.peeklock_clock_gettime(id, ts) ~= 0 then return ngx_now_ms end
  return function()
    C.peeklock_clock_gettime(id, ts)
    return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) * 1e-6
  end
end
--- peeklock.metrics.now_ms() -> a monotonic time in milliseconds (fractions included), for
-- durations.
M.now_ms = monotonic_ms()

-- Bucket bounds, in seconds: the conventions' advice for messaging.client.operation.duration,
-- and for the slack (lock time left when a renewal lands) spans up to the longest lock (5 min).
local DURATION_BUCKETS = { 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10 }
local SLACK_BUCKETS = { 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15, 30, 60, 120, 300 }

-- The families, in the order they are served.
local FAMILIES = {
  { "messaging_client_operation_duration_seconds", "histogram",
    "Duration of messaging operation initiated by a producer or consumer client.", DURATION_BUCKETS },
  { "messaging_process_duration_seconds", "histogram", "Duration of processing operation.", DURATION_BUCKETS },
  { "messaging_client_sent_messages_total", "counter",
    "Number of messages producer attempted to send to the broker." },
  { "messaging_client_consumed_messages_total", "counter",
    "Number of messages that were delivered to the application." },
  { "peeklock_lock_renewals_total", "counter", "Lock renewals by the worker's renewal loop." },
  { "peeklock_lock_renewal_failures_total", "counter",
    "Failed lock renewals (retried until the lock runs out)." },
  { "peeklock_lock_lost_total", "counter", "Locks lost while held." },
  { "peeklock_lock_cap_reached_total", "counter", "Locks whose renewal stopped at max_renew." },
  { "peeklock_lock_renewal_slack_seconds", "histogram",
    "Lock time left when a renewal landed.", SLACK_BUCKETS },
  { "peeklock_locks_held", "gauge", "Locks the worker renews now (per worker)." },
}
local BY_NAME = {}
for _, f in ipairs(FAMILIES) do BY_NAME[f[1]] = f end

-- Shared-dict keys: "<family>|<labels>|<part>", part "" for a counter or gauge, "bNN" for a
-- histogram bucket (its own count, not cumulative: made cumulative when served), "count",
-- "sum". Entity names and error codes never hold a "|".
local SEP = "|"

local function escape(v)
  return (gsub(tostring(v), '[\\"\n]', { ["\\"] = "\\\\", ['"'] = '\\"', ["\n"] = "\\n" }))
end

-- The labels of one operation: messaging.* and server.address, with error.type on failures.
-- (destination, subscription) of an entity: the core's rule (pl_entity_destination).
local function destination(entity)
  local rc, name, subscription = core.pl_entity_destination(entity)
  if rc < 0 then return tostring(entity), nil end
  return name, subscription
end

local function labels(op, op_type, entity, server, err_type)
  local name, subscription = destination(entity)
  local t = { 'messaging_destination_name="', escape(name), '"' }
  if subscription then t[#t + 1] = ',messaging_destination_subscription_name="' .. escape(subscription) .. '"' end
  if op then t[#t + 1] = ',messaging_operation_name="' .. op .. '"' end
  if op_type then t[#t + 1] = ',messaging_operation_type="' .. op_type .. '"' end
  t[#t + 1] = ',messaging_system="servicebus"'
  if server then t[#t + 1] = ',server_address="' .. escape(server) .. '"' end
  if err_type then t[#t + 1] = ',error_type="' .. escape(err_type) .. '"' end
  return concat(t)
end

local Metrics = {}
Metrics.__index = Metrics
Metrics.__name = "peeklock.metrics"
Metrics.now_ms = M.now_ms -- (m.now_ms(): the clock of the durations a metrics object records)

local registries = {} -- by dict name: one per worker and dict

--- peeklock.metrics.new(dict_name [, { sync_interval = seconds (default 1) }]) -> metrics
-- The worker's metrics kept in lua_shared_dict dict_name (the same object for a name).
function M.new(dict_name, opts)
  if type(dict_name) ~= "string" then
    error("bad argument #1 to 'new' (name of a lua_shared_dict expected, got " .. type(dict_name) .. ")", 2)
  end
  local dict = ngx.shared[dict_name]
  if not dict then error("peeklock.metrics: no lua_shared_dict '" .. dict_name .. "' in nginx.conf", 2) end
  local m = registries[dict_name]
  if m then return m end
  local interval = type(opts) == "table" and opts.sync_interval or 1
  if type(interval) ~= "number" or interval ~= interval or interval <= 0 then
    error("bad option 'sync_interval' to 'new' (a number of seconds > 0 expected)", 2)
  end
  m = setmetatable({ dict = dict, name = dict_name, pending = {}, n_pending = 0, interval = interval,
                     timer = false, held = nil, warned = false, cache = {} }, Metrics)
  registries[dict_name] = m
  return m
end

local default

--- peeklock.metrics.init(dict_name [, opts]) -> metrics: as new, and every peeklock.resty
-- client made afterwards in this worker counts into it (call it in init_by_lua or
-- init_worker_by_lua, before the worker's clients are made).
function M.init(dict_name, opts)
  default = M.new(dict_name, opts)
  return default
end

--- The metrics init chose (nil when metrics are off): peeklock.resty's clients ask it.
function M.default() return default end

-- ---------------------------------------------------------------- counting (per worker)

function Metrics:_add(key, v)
  if self.direct then -- the worker is exiting (no timer any more): straight into the dict
    self.pending[key] = (self.pending[key] or 0) + v
    self.n_pending = self.n_pending + 1
    return self:sync()
  end
  local p = self.pending
  local old = p[key]
  if old then p[key] = old + v
  else
    p[key] = v
    self.n_pending = self.n_pending + 1
    if not self.timer then self:_start() end
  end
end

local function bucket_index(bounds, v)
  for i = 1, #bounds do
    if v <= bounds[i] then return i end
  end
  return #bounds + 1
end

-- The dict key of a series (a counter's), or for a histogram { [i] = bucket i's key, count =,
-- sum = }: made once per family, server, entity, operation and error type, then looked up
-- without building a string (a count costs table lookups, not concatenations).
function Metrics:_series(family, op, op_type, entity, server, err_type)
  local t = self.cache[family]
  if not t then t = {}; self.cache[family] = t end
  local sv = server or ""
  local u = t[sv]
  if not u then u = {}; t[sv] = u end
  local w = u[entity]
  if not w then w = {}; u[entity] = w end
  local o = op or ""
  local x = w[o]
  if not x then x = {}; w[o] = x end
  local e = err_type or ""
  local s = x[e]
  if s then return s end
  local prefix = family .. SEP .. labels(op, op_type, entity, server, err_type) .. SEP
  local bounds = BY_NAME[family][4]
  if bounds then
    s = { count = prefix .. "count", sum = prefix .. "sum" }
    for i = 1, #bounds + 1 do s[i] = prefix .. format("b%02d", i) end
  else
    s = prefix
  end
  x[e] = s
  return s
end

function Metrics:_observe(family, op, op_type, entity, server, err_type, v)
  local s = self:_series(family, op, op_type, entity, server, err_type)
  self:_add(s[bucket_index(BY_NAME[family][4], v)], 1)
  self:_add(s.count, 1)
  self:_add(s.sum, v)
end

--- An operation's duration: op (send, peek_lock, receive_and_delete, complete, abandon,
-- renew_message_lock), op_type (send, receive, settle, renew), entity, server address,
-- seconds, and the error code when it failed.
function Metrics:operation(op, op_type, entity, server, seconds, err_type)
  self:_observe("messaging_client_operation_duration_seconds", op, op_type, entity, server, err_type, seconds)
end

--- A with_lock handler's run (error_type "handler" when it raised).
function Metrics:process(entity, server, seconds, err_type)
  self:_observe("messaging_process_duration_seconds", "process", "process", entity, server, err_type, seconds)
end

--- n messages a send or send_batch attempted (err_type when it failed).
function Metrics:sent(entity, server, n, err_type)
  self:_add(self:_series("messaging_client_sent_messages_total", "send", "send", entity, server, err_type), n)
end

--- n messages a receive delivered (op: peek_lock or receive_and_delete).
function Metrics:consumed(op, entity, server, n)
  self:_add(self:_series("messaging_client_consumed_messages_total", op, "receive", entity, server), n)
end

--- A renewal by the worker's loop (its duration is an operation, counted by the settle):
-- ok, the slack (lock seconds left when it landed) when it succeeded, the error code when
-- it failed.
function Metrics:renewal(entity, server, ok, slack, err_type)
  if ok then
    self:_add(self:_series("peeklock_lock_renewals_total", nil, nil, entity, server), 1)
    if slack then self:_observe("peeklock_lock_renewal_slack_seconds", nil, nil, entity, server, nil, slack) end
  else
    self:_add(self:_series("peeklock_lock_renewal_failures_total", nil, nil, entity, server, err_type or "error"), 1)
  end
end

function Metrics:lost(entity, server)
  self:_add(self:_series("peeklock_lock_lost_total", nil, nil, entity, server), 1)
end

function Metrics:cap_reached(entity, server)
  self:_add(self:_series("peeklock_lock_cap_reached_total", nil, nil, entity, server), 1)
end

--- The number of locks this worker renews now (a gauge per worker, set when synced).
function Metrics:locks_held(n)
  self.held = n
  if not self.timer then self:_start() end
end

-- ---------------------------------------------------------------- syncing

--- Adds this worker's counts to the shared dict (the timer and serve call it).
function Metrics:sync()
  local dict = self.dict
  if self.n_pending > 0 then
    local p = self.pending
    self.pending, self.n_pending = {}, 0
    for key, v in pairs(p) do
      local _, err = dict:incr(key, v, 0)
      if err and not self.warned then
        self.warned = true
        ngx.log(ngx.WARN, "peeklock.metrics: lua_shared_dict '", self.name, "': ", err,
                " (counts are being dropped: make it larger)")
      end
    end
  end
  if self.held then
    dict:set("peeklock_locks_held" .. SEP .. 'messaging_system="servicebus",worker="'
             .. tostring(ngx.worker.id() or 0) .. '"' .. SEP, self.held)
  end
end

function Metrics:_start()
  -- (ngx.timer.every is not allowed in init_by_lua: counts made there wait for the next one)
  if ngx.get_phase() == "init" then return end
  local m = self
  local ok, err = ngx.timer.every(self.interval, function(premature)
    -- (premature: the worker exits; what it still counts while it drains goes straight in)
    if premature then m.direct = true end
    m:sync()
  end)
  if not ok then
    ngx.log(ngx.ERR, "peeklock.metrics: cannot start the sync timer: ", err)
    return
  end
  self.timer = true
end

-- ---------------------------------------------------------------- exposition

local function fmt_number(v)
  if v == math.floor(v) and v > -1e15 and v < 1e15 then return format("%d", v) end
  return format("%.15g", v) -- (15 digits: 0.005, not 0.0050000000000000001)
end
local fmt_bound = fmt_number

--- The metrics in the Prometheus text exposition format (version 0.0.4), as a string.
function Metrics:collect()
  self:sync()
  local dict = self.dict
  local keys = dict:get_keys(0)
  sort(keys)
  local series = {} -- family -> list of { labels, part, value }
  for i = 1, #keys do
    local key = keys[i]
    local a = find(key, SEP, 1, true)
    local b = a and find(key, SEP, a + 1, true)
    local v = b and dict:get(key)
    if v then
      local fam = sub(key, 1, a - 1)
      if BY_NAME[fam] then
        local list = series[fam]
        if not list then list = {}; series[fam] = list end
        list[#list + 1] = { sub(key, a + 1, b - 1), sub(key, b + 1), v }
      end
    end
  end
  local out = {}
  for _, f in ipairs(FAMILIES) do
    local name, kind, help, bounds = f[1], f[2], f[3], f[4]
    out[#out + 1] = "# HELP " .. name .. " " .. help .. "\n# TYPE " .. name .. " " .. kind .. "\n"
    local list = series[name]
    if list and kind ~= "histogram" then
      for _, s in ipairs(list) do
        out[#out + 1] = name .. "{" .. s[1] .. "} " .. fmt_number(s[3]) .. "\n"
      end
    elseif list then
      -- (sorted keys: a label set's parts come together, b01..bNN, count, sum)
      local by_labels, order = {}, {}
      for _, s in ipairs(list) do
        local g = by_labels[s[1]]
        if not g then g = {}; by_labels[s[1]] = g; order[#order + 1] = s[1] end
        g[s[2]] = s[3]
      end
      for _, lbl in ipairs(order) do
        local g, cum = by_labels[lbl], 0
        for i = 1, #bounds do
          cum = cum + (g[format("b%02d", i)] or 0)
          out[#out + 1] = format('%s_bucket{%s,le="%s"} %s\n', name, lbl, fmt_bound(bounds[i]), fmt_number(cum))
        end
        local count = g.count or 0
        out[#out + 1] = format('%s_bucket{%s,le="+Inf"} %s\n%s_sum{%s} %s\n%s_count{%s} %s\n', name, lbl,
                               fmt_number(count), name, lbl, fmt_number(g.sum or 0), name, lbl, fmt_number(count))
      end
    end
  end
  return concat(out)
end

--- peeklock.metrics.serve([dict_name]): a content handler that answers with the metrics
-- (init's when no name is given) in the Prometheus text format.
function M.serve(dict_name)
  local m = dict_name and M.new(dict_name) or default
  if not m then
    ngx.status = 500
    ngx.say("peeklock.metrics: not enabled (call require('peeklock.metrics').init(dict_name))")
    return
  end
  ngx.header["Content-Type"] = "text/plain; version=0.0.4; charset=utf-8"
  ngx.print(m:collect())
end

M._labels = labels
return M
