/* bindings/lua.i — the Lua part of the SWIG bindings.
 *
 * The one shared interface is bindings/peeklock.i (also used for Python). This file
 * adds what only Lua needs, before including it:
 *   - output parameters (TYPE **out) become extra return values;
 *   - every handle is pushed with the "peeklock.handle" metatable, whose __gc and
 *     __close both run one idempotent free (pl_lua_release), so a handle is freed
 *     exactly once whether the collector or the caller gets there first;
 *   - binary strings (bodies) in and out, stats structs as tables, the last error
 *     as plain values, a client constructor taking a Lua table of options.
 * The module is built as peeklock.core (luaopen_peeklock_core) for Lua 5.4 and
 * LuaJIT; lua/peeklock.lua is the idiomatic layer on top.
 */

%{
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include "peeklock.h"
#include "client_int.h"
#include "error_int.h"
#include "outcome_int.h"
#include "wire_int.h"
#include "message_int.h"
%}

%include <stdint.i>

/* ---------------------------------------------------------------- handles */

%{
#define PL_LUA_HANDLE_MT "peeklock.handle"

static void pl_lua_free_typed(swig_type_info *t, void *p);

#if LUA_VERSION_NUM >= 502
#define lua_objlen_compat(L, i) lua_rawlen(L, i)
#else
#define lua_objlen_compat(L, i) lua_objlen(L, i)
#endif

/* A handle has one of two metatables: the live one, whose __gc frees the C object,
 * and the one a handle gets once freed, without __gc, so the collector does not call
 * back into a handle that was already freed. Both are made once per Lua state (kept
 * in the registry under these addresses) and given to every native of the module as
 * its upvalues 1 and 2 (pl_lua_upvalues, at load): a handle check is a metatable
 * fetch and two identity compares, no table lookup. */
static char pl_lua_mt_key, pl_lua_freed_mt_key;
#define PL_LUA_MT lua_upvalueindex(1)
#define PL_LUA_FREED_MT lua_upvalueindex(2)

/* The userdata at idx if it is a peeklock handle (one of our metatables), else NULL.
 * Only natives carrying the two upvalues recognise handles (any other C function
 * reads nil there, and so refuses every argument). */
static swig_lua_userdata *pl_lua_handle(lua_State *L, int idx) {
  int ours;
  if (lua_type(L, idx) != LUA_TUSERDATA || !lua_getmetatable(L, idx)) return NULL;
  ours = lua_rawequal(L, -1, PL_LUA_MT) || lua_rawequal(L, -1, PL_LUA_FREED_MT);
  lua_pop(L, 1);
  return ours ? (swig_lua_userdata *)lua_touserdata(L, idx) : NULL;
}

/* The pointer of the handle at idx when it is nil (NULL) or a handle of type t (freed:
 * NULL); else -1 with an error message pushed (SWIG's wording for a wrong type). */
static int pl_lua_arg(lua_State *L, int idx, swig_type_info *t, void **out, const char *fn, int argnum,
                      const char *tname) {
  swig_lua_userdata *u;
  if (lua_isnil(L, idx)) { *out = NULL; return 0; }
  u = pl_lua_handle(L, idx);
  if (!u) {
    SWIG_Lua_pushferrstring(L, "%s: argument %d must be a %s, got %s", fn, argnum, tname,
                            luaL_typename(L, idx));
    return -1;
  }
  if (u->type == t) { *out = u->ptr; return 0; } /* every handle is pushed with its exact type */
  if (SWIG_IsOK(SWIG_ConvertPtr(L, idx, out, t, 0))) return 0;
  SWIG_Lua_pushferrstring(L, "Error in %s (arg %d), expected '%s' got '%s'", fn, argnum,
                          t && t->str ? t->str : "void*", u->type && u->type->str ? u->type->str : "?");
  return -1;
}

/* SWIG's argument errors name the type of what was passed by reading it as a SWIG
 * object; for a foreign userdata that reads garbage. Name it safely instead. */
static const char *pl_lua_safe_typename(lua_State *L, int idx) {
  swig_lua_userdata *u = pl_lua_handle(L, idx);
  if (u && u->type && u->type->str) return u->type->str;
  return luaL_typename(L, idx);
}
#undef SWIG_fail_arg
#define SWIG_fail_arg(func_name, argnum, type) \
  { SWIG_Lua_pushferrstring(L, "Error in %s (arg %d), expected '%s' got '%s'", func_name, argnum, \
                            type, pl_lua_safe_typename(L, argnum)); goto fail; }

/* The one free: frees the C object once, then marks the userdata empty. */
static int pl_lua_release(lua_State *L) {
  swig_lua_userdata *u = pl_lua_handle(L, 1);
  if (!u) return luaL_error(L, "peeklock.core.release: argument 1 must be a peeklock handle");
  if (u->ptr) {
    void *p = u->ptr;
    u->ptr = NULL;
    if (u->own) { u->own = 0; pl_lua_free_typed(u->type, p); }
    lua_pushvalue(L, PL_LUA_FREED_MT);
    lua_setmetatable(L, 1);
  }
  return 0;
}

static int pl_lua_handle_tostring(lua_State *L) {
  swig_lua_userdata *u = (swig_lua_userdata *)lua_touserdata(L, 1);
  const char *name = (u && u->type && u->type->str) ? u->type->str : "?";
  if (u && u->ptr) lua_pushfstring(L, "peeklock.handle<%s>", name);
  else lua_pushfstring(L, "peeklock.handle<%s, freed>", name);
  return 1;
}

/* The number at idx as an int64_t: an integer as it is on Lua 5.3+, any other number truncated. */
static int64_t pl_lua_toint64(lua_State *L, int idx) {
#if LUA_VERSION_NUM >= 503
  if (lua_isinteger(L, idx)) return (int64_t)lua_tointeger(L, idx);
#endif
  return (int64_t)lua_tonumber(L, idx);
}

/* Pushes v as an integer on Lua 5.3+, as a number before. */
static void pl_lua_pushint64(lua_State *L, int64_t v) {
#if LUA_VERSION_NUM >= 503
  lua_pushinteger(L, (lua_Integer)v);
#else
  lua_pushnumber(L, (lua_Number)v);
#endif
}

/* Pushes f as a native of the module: a closure over the two handle metatables. */
static void pl_lua_push_native(lua_State *L, lua_CFunction f) {
  lua_pushlightuserdata(L, (void *)&pl_lua_mt_key);
  lua_rawget(L, LUA_REGISTRYINDEX);
  lua_pushlightuserdata(L, (void *)&pl_lua_freed_mt_key);
  lua_rawget(L, LUA_REGISTRYINDEX);
  lua_pushcclosure(L, f, 2);
}

/* The collector's free (the live metatable's __gc): a message handle collected while
 * its lock is still held is first handed to the drop hook (core.set_drop_hook) with the
 * client its user value names, which stops its renewal and abandons it, as <close> does
 * (the hook's errors are dropped: a finalizer cannot report them). Then the one free. */
static char pl_lua_drop_key;
static int pl_lua_gc(lua_State *L) {
  swig_lua_userdata *u = pl_lua_handle(L, 1);
  if (u && u->ptr && u->own && u->type == SWIGTYPE_p_pl_message &&
      pl_message_lock_state((const pl_message *)u->ptr) == PL_LOCK_HELD) {
    lua_pushlightuserdata(L, (void *)&pl_lua_drop_key);
    lua_rawget(L, LUA_REGISTRYINDEX);
    if (lua_isfunction(L, -1)) {
      lua_pushvalue(L, 1);
#if LUA_VERSION_NUM >= 502
      lua_getuservalue(L, 1);
#else
      lua_getfenv(L, 1);
#endif
      if (lua_istable(L, -1)) (void)lua_pcall(L, 2, 0, 0);
    }
    lua_settop(L, 1);
  }
  return pl_lua_release(L);
}

/* set_drop_hook(fn): fn(handle, client) is called for a held message collected unsettled. */
static int pl_lua_set_drop_hook(lua_State *L) {
  luaL_checktype(L, 1, LUA_TFUNCTION);
  lua_pushlightuserdata(L, (void *)&pl_lua_drop_key);
  lua_pushvalue(L, 1);
  lua_rawset(L, LUA_REGISTRYINDEX);
  return 0;
}

static void pl_lua_fill_mt(lua_State *L, int mt, int with_gc) {
  if (with_gc) {
    pl_lua_push_native(L, pl_lua_gc);
    lua_setfield(L, mt, "__gc");
  }
  pl_lua_push_native(L, pl_lua_release);
  lua_setfield(L, mt, "__close");
  lua_pushcfunction(L, pl_lua_handle_tostring);
  lua_setfield(L, mt, "__tostring");
  lua_pushliteral(L, PL_LUA_HANDLE_MT);
  lua_setfield(L, mt, "__name");
  lua_pushboolean(L, 0);
  lua_setfield(L, mt, "__metatable");
}

/* At load, with the module table on top: makes the two metatables (once per Lua
 * state) and turns every C function of the module into a closure over them. */
static void pl_lua_upvalues(lua_State *L) {
  int module = lua_gettop(L);
  lua_pushlightuserdata(L, (void *)&pl_lua_mt_key);
  lua_rawget(L, LUA_REGISTRYINDEX);
  if (lua_isnil(L, -1)) {
    lua_pushlightuserdata(L, (void *)&pl_lua_mt_key);
    lua_createtable(L, 0, 5);
    lua_rawset(L, LUA_REGISTRYINDEX);
    lua_pushlightuserdata(L, (void *)&pl_lua_freed_mt_key);
    lua_createtable(L, 0, 5);
    lua_rawset(L, LUA_REGISTRYINDEX);
    lua_pushlightuserdata(L, (void *)&pl_lua_mt_key);
    lua_rawget(L, LUA_REGISTRYINDEX);
    lua_pushlightuserdata(L, (void *)&pl_lua_freed_mt_key);
    lua_rawget(L, LUA_REGISTRYINDEX);
    pl_lua_fill_mt(L, module + 2, 1);
    pl_lua_fill_mt(L, module + 3, 0);
  }
  lua_settop(L, module);
  lua_pushnil(L);
  while (lua_next(L, module)) {
    lua_CFunction f = lua_tocfunction(L, -1);
    if (f && lua_type(L, -2) == LUA_TSTRING) {
      lua_pushvalue(L, -2);
      pl_lua_push_native(L, f);
      lua_rawset(L, module); /* an existing key: the traversal stays valid */
    }
    lua_pop(L, 1);
  }
}

/* Pushes ptr as a peeklock handle (owned or borrowed), or nil for NULL. The userdata
 * is SWIG's (SWIG_ConvertPtr reads it) with our metatable straight away. */
static void pl_lua_push_handle(lua_State *L, void *ptr, swig_type_info *type, int own) {
  swig_lua_userdata *u;
  if (!ptr) { lua_pushnil(L); return; }
  u = (swig_lua_userdata *)lua_newuserdata(L, sizeof *u);
  u->ptr = ptr;
  u->type = type;
  u->own = own;
  lua_pushvalue(L, PL_LUA_MT);
  lua_setmetatable(L, -2);
}

/* Pushes an empty handle (filled by pl_lua_fill_handle): made before the C object, so
 * handing the object out cannot fail. */
static swig_lua_userdata *pl_lua_new_handle(lua_State *L) {
  swig_lua_userdata *u = (swig_lua_userdata *)lua_newuserdata(L, sizeof *u);
  u->ptr = NULL;
  u->type = NULL;
  u->own = 0;
  return u;
}

/* Makes the empty handle at idx own ptr (nil for NULL). */
static void pl_lua_fill_handle(lua_State *L, int idx, swig_lua_userdata *u, void *ptr, swig_type_info *type) {
  if (!ptr) { lua_pushnil(L); lua_replace(L, idx); return; }
  u->ptr = ptr;
  u->type = type;
  u->own = 1;
  lua_pushvalue(L, PL_LUA_MT);
  lua_setmetatable(L, idx);
}
%}

/* Output handles: TYPE **out becomes an extra return value (nil when none). */
%define PL_LUA_OUT_HANDLE(TYPE)
%typemap(in, numinputs=0) TYPE **out (TYPE *tmp = NULL) { $1 = &tmp; }
%typemap(argout) TYPE **out {
  pl_lua_push_handle(L, *$1, $*descriptor, 1);
  SWIG_arg++;
}
%enddef
PL_LUA_OUT_HANDLE(pl_connstr)
PL_LUA_OUT_HANDLE(pl_client)
PL_LUA_OUT_HANDLE(pl_outgoing)
PL_LUA_OUT_HANDLE(pl_batch)
PL_LUA_OUT_HANDLE(pl_message)
PL_LUA_OUT_HANDLE(pl_renewer)
PL_LUA_OUT_HANDLE(pl_event)
PL_LUA_OUT_HANDLE(pl_request)
PL_LUA_OUT_HANDLE(pl_response)

/* Handle arguments must be live: nil or a freed handle is an error, never a NULL
 * reaching C (pl_response_result's message and pl_renewer_finish's renewer are the
 * optional handles). */
%define PL_LUA_LIVE_HANDLE(TYPE)
/* Only our own handles convert: a foreign userdata or a lightuserdata would otherwise
 * be taken for a SWIG object and dereferenced. */
%typemap(in, checkfn="SWIG_isptrtype") TYPE *, const TYPE * {
  if (pl_lua_arg(L, $input, $descriptor, (void **)&$1, "$symname", $argnum, #TYPE) < 0) SWIG_fail;
}
%typemap(check) TYPE *, const TYPE * {
  if (!$1 && strcmp("$symname", "pl_response_result") != 0 &&
      !(strcmp("$symname", "pl_renewer_finish") == 0 && $argnum == 1)) {
    SWIG_Lua_pushferrstring(L, "%s: argument %d must be a live " #TYPE " (got nil or a freed handle)",
                            "$symname", $argnum);
    SWIG_fail;
  }
}
%enddef
PL_LUA_LIVE_HANDLE(pl_connstr)
PL_LUA_LIVE_HANDLE(pl_client)
PL_LUA_LIVE_HANDLE(pl_outgoing)
PL_LUA_LIVE_HANDLE(pl_batch)
PL_LUA_LIVE_HANDLE(pl_message)
PL_LUA_LIVE_HANDLE(pl_renewer)
PL_LUA_LIVE_HANDLE(pl_event)
PL_LUA_LIVE_HANDLE(pl_request)
PL_LUA_LIVE_HANDLE(pl_response)

/* Borrowed handles returned by value (pl_event_message): not owned. */
%typemap(out) pl_message * {
  pl_lua_push_handle(L, $1, $descriptor, 0);
  SWIG_arg++;
}

/* Owned strings through char **out (pl_sas_token). */
%typemap(in, numinputs=0) char **out (char *tmp = NULL) { $1 = &tmp; }
%typemap(argout) char **out {
  if (*$1) lua_pushstring(L, *$1); else lua_pushnil(L);
  SWIG_arg++;
}
%typemap(freearg) char **out { pl_free(*$1); }

/* Binary input: a Lua string, NULs included. */
%typemap(in, checkfn="lua_isstring") (const void *body, size_t len) {
  size_t n = 0;
  $1 = (void *)lua_tolstring(L, $input, &n);
  $2 = n;
}

/* int64_t: plain Lua numbers (integers on 5.4), through pl_lua_toint64 and pl_lua_pushint64
 * (a plain #if in a typemap would be SWIG's own, where LUA_VERSION_NUM is undefined). */
%typemap(in, checkfn="lua_isnumber") int64_t { $1 = pl_lua_toint64(L, $input); }
%typemap(out) int64_t { pl_lua_pushint64(L, $1); SWIG_arg++; }

/* Integers stay integers on Lua 5.3+ (SWIG's default pushes floats). */
%typemap(out) int, long, unsigned int, size_t, uintptr_t {
  lua_pushinteger(L, (lua_Integer)$1); SWIG_arg++;
}

/* Stats structs come back as tables. */
%typemap(in, numinputs=0) pl_client_stats *out (pl_client_stats tmp) {
  memset(&tmp, 0, sizeof tmp); $1 = &tmp;
}
%typemap(argout) pl_client_stats *out {
  lua_createtable(L, 0, 14);
#define PL_F(f) pl_lua_pushint64(L, (int64_t)$1->f); lua_setfield(L, -2, #f);
#define PL_D(f) lua_pushnumber(L, (lua_Number)$1->f); lua_setfield(L, -2, #f);
  PL_F(requests) PL_F(reused_connections) PL_F(retries) PL_F(sent) PL_F(received)
  PL_F(completed) PL_F(abandoned) PL_F(renewed) PL_F(lost) PL_D(renew_p50_ms) PL_D(renew_p99_ms)
  PL_F(orphaned_locks) PL_F(failed) PL_F(renew_failures)
#undef PL_F
#undef PL_D
  SWIG_arg++;
}
%typemap(in, numinputs=0) pl_renewer_stats *out (pl_renewer_stats tmp) {
  memset(&tmp, 0, sizeof tmp); $1 = &tmp;
}
%typemap(argout) pl_renewer_stats *out {
  int i;
  lua_createtable(L, 0, 10);
#define PL_F(f) pl_lua_pushint64(L, (int64_t)$1->f); lua_setfield(L, -2, #f);
#define PL_D(f) lua_pushnumber(L, (lua_Number)$1->f); lua_setfield(L, -2, #f);
  PL_F(held) PL_F(renewals) PL_F(failures) PL_F(lost) PL_F(cap_reached) PL_F(threads)
  PL_D(lateness_p99_ms) PL_D(rtt_p99_ms) PL_F(state_bytes)
#undef PL_F
#undef PL_D
  lua_createtable(L, 6, 0);
  for (i = 0; i < 6; i++) { pl_lua_pushint64(L, (int64_t)$1->slack_buckets[i]); lua_rawseti(L, -2, i + 1); }
  lua_setfield(L, -2, "slack_buckets");
  SWIG_arg++;
}
/* pl_renewer_finish's outcome, after the status. */
%typemap(in, numinputs=0) int *outcome (int tmp = 0) { $1 = &tmp; }
%typemap(argout) int *outcome { lua_pushinteger(L, (lua_Integer)tmp$argnum); SWIG_arg++; }

/* Fallible calls (peeklock.i applies PL_STATUS): the code is returned as a number
 * and lua/peeklock.lua turns negatives into nil, err with pl_error_last(). */
%typemap(out) int PL_STATUS { lua_pushinteger(L, (lua_Integer)$1); SWIG_arg++; }

/* Replaced below by Lua-shaped natives, or not usable from Lua. */
%ignore pl_message_body;
%ignore pl_request_body;
%ignore pl_error_last;
%ignore pl_error;
%ignore pl_client_options;
%ignore pl_client_new;
%ignore pl_renewer_options;
%ignore pl_renewer_new;
%ignore pl_token_cb;

%{

static void *pl_lua_check(lua_State *L, int idx, swig_type_info *t, const char *fn, const char *what) {
  void *p = NULL;
  if (lua_isnil(L, idx) || pl_lua_arg(L, idx, t, &p, fn, idx, what) < 0) {
    luaL_error(L, "%s: argument %d must be a %s", fn, idx, what);
    return NULL;
  }
  if (!p) luaL_error(L, "%s: argument %d (%s) has been freed", fn, idx, what);
  return p;
}

/* ASCII case-insensitive equality (HTTP header names). */
static int pl_lua_strcaseeq(const char *a, const char *b) {
  for (; *a && *b; a++, b++) {
    char x = *a, y = *b;
    if (x >= 'A' && x <= 'Z') x = (char)(x - 'A' + 'a');
    if (y >= 'A' && y <= 'Z') y = (char)(y - 'A' + 'a');
    if (x != y) return 0;
  }
  return *a == *b;
}

/* body(msg) -> string */
static void pl_lua_push_body(lua_State *L, const pl_message *m) {
  size_t n = 0;
  const void *b = pl_message_body(m, &n);
  lua_pushlstring(L, b ? (const char *)b : "", b ? n : 0);
}

static int pl_lua_message_body(lua_State *L) {
  pl_lua_push_body(L, (pl_message *)pl_lua_check(L, 1, SWIGTYPE_p_pl_message, "message_body", "pl_message"));
  return 1;
}

/* request_body(req) -> string */
static int pl_lua_request_body(lua_State *L) {
  size_t n = 0;
  pl_request *r = (pl_request *)pl_lua_check(L, 1, SWIGTYPE_p_pl_request, "request_body", "pl_request");
  const void *b = pl_request_body(r, &n);
  lua_pushlstring(L, b ? (const char *)b : "", b ? n : 0);
  return 1;
}

/* last_error() -> code, http_status, retryable, message */
static int pl_lua_last_error(lua_State *L) {
  const pl_error *e = pl_error_last();
  lua_pushinteger(L, e->code);
  lua_pushinteger(L, e->http_status);
  lua_pushboolean(L, e->retryable);
  lua_pushstring(L, e->message ? e->message : "");
  return 4;
}

/* The string at idx when the C core can take it whole (no NUL byte in it), else NULL. */
static const char *pl_lua_whole(lua_State *L, int idx) {
  size_t n;
  const char *s = lua_tolstring(L, idx, &n);
  return s && memchr(s, 0, n) == NULL ? s : NULL;
}

static const char *pl_lua_opt_string(lua_State *L, int t, const char *k) {
  const char *s = NULL;
  lua_getfield(L, t, k);
  if (!lua_isnil(L, -1)) {
    if (lua_type(L, -1) != LUA_TSTRING) luaL_error(L, "client_new: option '%s' must be a string", k);
    if (!(s = pl_lua_whole(L, -1))) luaL_error(L, "client_new: option '%s' must not contain NUL bytes", k);
  }
  lua_pop(L, 1); /* the string stays alive: it is referenced by the options table */
  return s;
}

static long pl_lua_opt_number(lua_State *L, int t, const char *k, long dflt) {
  long v = dflt;
  lua_getfield(L, t, k);
  if (!lua_isnil(L, -1)) {
    if (lua_type(L, -1) != LUA_TNUMBER) luaL_error(L, "client_new: option '%s' must be a number", k);
    v = (long)lua_tonumber(L, -1);
  }
  lua_pop(L, 1);
  return v;
}

/* client_new(opts) -> rc, client */
static int pl_lua_client_new(lua_State *L) {
  pl_client_options o = PL_CLIENT_OPTIONS_INIT;
  pl_client *c = NULL;
  int rc;
  luaL_checktype(L, 1, LUA_TTABLE);
  o.connection_string = pl_lua_opt_string(L, 1, "connection_string");
  o.endpoint = pl_lua_opt_string(L, 1, "endpoint");
  o.key_name = pl_lua_opt_string(L, 1, "key_name");
  o.key = pl_lua_opt_string(L, 1, "key");
  o.sas_token = pl_lua_opt_string(L, 1, "sas_token");
  o.ca_file = pl_lua_opt_string(L, 1, "ca_file");
  o.connect_timeout_ms = pl_lua_opt_number(L, 1, "connect_timeout_ms", 0);
  o.request_timeout_ms = pl_lua_opt_number(L, 1, "request_timeout_ms", 0);
  o.max_retries = (int)pl_lua_opt_number(L, 1, "max_retries", -1);
  o.retry_base_ms = pl_lua_opt_number(L, 1, "retry_base_ms", 0);
  o.retry_max_ms = pl_lua_opt_number(L, 1, "retry_max_ms", 0);
  o.pool_size = (int)pl_lua_opt_number(L, 1, "pool_size", 0);
  o.token_lifetime_s = (int)pl_lua_opt_number(L, 1, "token_lifetime_s", 0);
  rc = pl_client_new(&c, &o);
  lua_pushinteger(L, rc);
  pl_lua_push_handle(L, c, SWIGTYPE_p_pl_client, 1);
  return 2;
}

/* renewer_new(client, opts) -> rc, renewer */
static int pl_lua_renewer_new(lua_State *L) {
  pl_renewer_options o = PL_RENEWER_OPTIONS_INIT;
  pl_renewer *r = NULL;
  int rc;
  pl_client *c = (pl_client *)pl_lua_check(L, 1, SWIGTYPE_p_pl_client, "renewer_new", "pl_client");
  if (lua_istable(L, 2)) {
    o.max_connections = (int)pl_lua_opt_number(L, 2, "max_connections", 0);
    o.margin_floor_ms = pl_lua_opt_number(L, 2, "margin_floor_ms", 0);
    o.default_max_renew_ms = pl_lua_opt_number(L, 2, "default_max_renew_ms", 0);
    o.request_timeout_ms = pl_lua_opt_number(L, 2, "request_timeout_ms", 0);
    lua_getfield(L, 2, "jitter");
    if (lua_type(L, -1) == LUA_TNUMBER) o.jitter = lua_tonumber(L, -1);
    lua_pop(L, 1);
  }
  rc = pl_renewer_new(&r, c, &o);
  lua_pushinteger(L, rc);
  pl_lua_push_handle(L, r, SWIGTYPE_p_pl_renewer, 1);
  return 2;
}

/* key(handle) -> lightuserdata of the C pointer (identity across userdata) */
static int pl_lua_key(lua_State *L) {
  swig_lua_userdata *u = pl_lua_handle(L, 1);
  if (!u) return luaL_error(L, "key: argument 1 must be a peeklock handle");
  if (!u->ptr) lua_pushnil(L); else lua_pushlightuserdata(L, u->ptr);
  return 1;
}

/* alive(handle) -> true when not yet freed */
static int pl_lua_alive(lua_State *L) {
  swig_lua_userdata *u = pl_lua_handle(L, 1);
  lua_pushboolean(L, u && u->ptr != NULL);
  return 1;
}

/* message_properties(msg) -> { name = value } typed as the server typed them
 * (strings, integers, numbers, booleans; DateTime as its text): one call, no per-field trips. */
static void pl_lua_push_properties(lua_State *L, const pl_message *m) {
  size_t i, n = pl_message_property_count(m);
  lua_createtable(L, 0, (int)n);
  for (i = 0; i < n; i++) {
    const char *name = pl_message_property_name(m, i);
    if (!name) continue;
    switch (pl_message_property_type(m, i)) {
    case PL_PROP_INT: lua_pushinteger(L, (lua_Integer)pl_message_property_int(m, i)); break;
    case PL_PROP_DOUBLE: lua_pushnumber(L, pl_message_property_double(m, i)); break;
    case PL_PROP_BOOL: lua_pushboolean(L, pl_message_property_bool(m, i)); break;
    default: {
      const char *v = pl_message_property_string(m, i);
      if (v) lua_pushstring(L, v); else lua_pushnil(L);
    }
    }
    lua_setfield(L, -2, name);
  }
}

static int pl_lua_message_properties(lua_State *L) {
  pl_lua_push_properties(L, (pl_message *)pl_lua_check(L, 1, SWIGTYPE_p_pl_message, "message_properties",
                                                       "pl_message"));
  return 1;
}

/* message_indexer(methods, slow) -> the __index of lua/peeklock.lua's messages: a key of
 * methods is its value; body, message_id and properties are read from the message's
 * handle (its raw field _h) and cached in the message table; any other key, or a freed
 * message, goes to slow(msg, key). One C call per first read, no Lua frame. */
static int pl_lua_message_index(lua_State *L) {
#define PL_LUA_FIELD(name) { name, sizeof name - 1 }
  static const struct { const char *name; size_t len; } fields[] = {
    PL_LUA_FIELD("body"), PL_LUA_FIELD("message_id"), PL_LUA_FIELD("properties") };
#undef PL_LUA_FIELD
  const size_t nfields = sizeof fields / sizeof fields[0];
  size_t i = nfields;
  lua_settop(L, 2);
  lua_pushvalue(L, 2);
  lua_rawget(L, lua_upvalueindex(3));
  if (!lua_isnil(L, -1)) return 1;
  lua_pop(L, 1);
  if (lua_type(L, 1) == LUA_TTABLE && lua_type(L, 2) == LUA_TSTRING) {
    size_t klen;
    const char *k = lua_tolstring(L, 2, &klen);
    for (i = 0; i < nfields && !(klen == fields[i].len && memcmp(k, fields[i].name, klen) == 0); i++) {}
  }
  if (i < nfields) {
    swig_lua_userdata *u;
    lua_pushvalue(L, lua_upvalueindex(5)); /* "_h" */
    lua_rawget(L, 1);
    u = pl_lua_handle(L, 3);
    if (u && u->ptr && u->type == SWIGTYPE_p_pl_message) {
      const pl_message *m = (const pl_message *)u->ptr;
      if (i == 0) pl_lua_push_body(L, m);
      else if (i == 1) lua_pushstring(L, pl_message_id(m));
      else pl_lua_push_properties(L, m);
      if (!lua_isnil(L, -1)) {
        lua_pushvalue(L, 2);
        lua_pushvalue(L, -2);
        lua_rawset(L, 1);
      }
      return 1;
    }
    lua_pop(L, 1);
  }
  lua_pushvalue(L, lua_upvalueindex(4));
  lua_insert(L, 1);
  lua_call(L, 2, 1);
  return 1;
}

/* Pushes a new message of lua/peeklock.lua, setmetatable({ _h = handle, _client = client },
 * methods) (the keys "_h" and "_client" at key_h and key_client), its table sized for the
 * fields the indexer caches (no rehash on the first reads). */
static void pl_lua_push_message(lua_State *L, int client, int handle, int methods, int key_h, int key_client) {
  int t;
  lua_createtable(L, 0, 8);
  t = lua_gettop(L);
  lua_pushvalue(L, key_h);
  lua_pushvalue(L, handle);
  lua_rawset(L, t);
  lua_pushvalue(L, key_client);
  lua_pushvalue(L, client);
  lua_rawset(L, t);
  lua_pushvalue(L, methods);
  lua_setmetatable(L, t);
  /* the handle names its client for the collector's drop hook (pl_lua_gc) */
  if (lua_type(L, handle) == LUA_TUSERDATA && lua_istable(L, client)) {
    lua_pushvalue(L, client);
#if LUA_VERSION_NUM >= 502
    lua_setuservalue(L, handle);
#else
    lua_setfenv(L, handle);
#endif
  }
}

/* message_ref(h) -> a second owned handle of the same message (its own reference). */
static int pl_lua_message_ref(lua_State *L) {
  pl_message *m = (pl_message *)pl_lua_check(L, 1, SWIGTYPE_p_pl_message, "message_ref", "pl_message");
  pl_message_ref(m);
  pl_lua_push_handle(L, m, SWIGTYPE_p_pl_message, 1);
  return 1;
}

/* mark_lost(msg, reason): a held lock the caller's renewals could not keep (its estimate
 * ran out) is lost, as the C renewer marks it; true when it was held. */
static int pl_lua_mark_lost(lua_State *L) {
  pl_message *m = (pl_message *)pl_lua_check(L, 1, SWIGTYPE_p_pl_message, "mark_lost", "pl_message");
  lua_pushboolean(L, pl_message_mark_lost(m, (int)luaL_checkinteger(L, 2), 0));
  return 1;
}

/* stat_request(client, requests, reused, retries): counts HTTP requests made outside
 * the C drivers (peeklock.resty's cosockets) in the client's stats. */
static int pl_lua_stat_request(lua_State *L) {
  pl_client *c = (pl_client *)pl_lua_check(L, 1, SWIGTYPE_p_pl_client, "stat_request", "pl_client");
  pl_client_stat_add(c, PL_STAT_REQUESTS, (uint64_t)luaL_optinteger(L, 2, 0));
  pl_client_stat_add(c, PL_STAT_REUSED, (uint64_t)luaL_optinteger(L, 3, 0));
  pl_client_stat_add(c, PL_STAT_RETRIES, (uint64_t)luaL_optinteger(L, 4, 0));
  return 0;
}

/* message_wrapper(methods) -> wrap(client, h): pl_lua_push_message as a function. */
static int pl_lua_wrap_message(lua_State *L) {
  lua_settop(L, 2);
  pl_lua_push_message(L, 1, 2, lua_upvalueindex(1), lua_upvalueindex(2), lua_upvalueindex(3));
  return 1;
}

static int pl_lua_message_wrapper(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  lua_pushliteral(L, "_h");
  lua_pushliteral(L, "_client");
  lua_pushcclosure(L, pl_lua_wrap_message, 3);
  return 1;
}

static int pl_lua_message_indexer(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  lua_pushvalue(L, PL_LUA_MT);
  lua_pushvalue(L, PL_LUA_FREED_MT);
  lua_pushvalue(L, 1);
  lua_pushvalue(L, 2);
  lua_pushliteral(L, "_h");
  lua_pushcclosure(L, pl_lua_message_index, 5);
  return 1;
}

/* request_parts(req) -> method, url, body, { {name, value}, ... } (values include the
 * Authorization header: a secret, for the wire only). */
static int pl_lua_request_parts(lua_State *L) {
  pl_request *r = (pl_request *)pl_lua_check(L, 1, SWIGTYPE_p_pl_request, "request_parts", "pl_request");
  size_t i, n = pl_request_header_count(r), len = 0;
  const void *b;
  lua_pushstring(L, pl_request_method(r));
  lua_pushstring(L, pl_request_url(r));
  b = pl_request_body(r, &len);
  lua_pushlstring(L, b ? (const char *)b : "", b ? len : 0);
  lua_createtable(L, (int)n, 0);
  for (i = 0; i < n; i++) {
    lua_createtable(L, 2, 0);
    lua_pushstring(L, pl_request_header_name(r, i));
    lua_rawseti(L, -2, 1);
    lua_pushstring(L, pl_request_header_value(r, i));
    lua_rawseti(L, -2, 2);
    lua_rawseti(L, -2, (int)i + 1);
  }
  return 4;
}

/* request_head(req) -> method, url, body, headers, has_host, has_length: the request
 * for a raw HTTP/1.1 exchange, its headers already joined as "Name: value\r\n" lines
 * (an empty Expect, libcurl's way of switching 100-continue off, left out), and whether
 * Host and Content-Length are among them. The cosocket driver's one call per request:
 * no table per header. (Authorization is in headers: a secret, for the wire only.) */
static int pl_lua_request_head(lua_State *L) {
  pl_request *r = (pl_request *)pl_lua_check(L, 1, SWIGTYPE_p_pl_request, "request_head", "pl_request");
  size_t i, n = pl_request_header_count(r), len = 0, total = 0;
  int has_host = 0, has_length = 0;
  char small[2048], *buf = small, *at;
  const void *b;
  lua_pushstring(L, pl_request_method(r));
  lua_pushstring(L, pl_request_url(r));
  b = pl_request_body(r, &len);
  lua_pushlstring(L, b ? (const char *)b : "", b ? len : 0);
  /* joined into one buffer, pushed once (luaL_Buffer copies byte by byte on LuaJIT) */
  for (i = 0; i < n; i++) {
    const char *name = pl_request_header_name(r, i), *value = pl_request_header_value(r, i);
    if (name && value) total += strlen(name) + strlen(value) + 4;
  }
  if (total > sizeof small) buf = (char *)lua_newuserdata(L, total); /* collected, even on an error */
  at = buf;
  for (i = 0; i < n; i++) {
    const char *name = pl_request_header_name(r, i), *value = pl_request_header_value(r, i);
    size_t ln, lv;
    if (!name || !value) continue;
    if (pl_lua_strcaseeq(name, "host")) has_host = 1;
    else if (pl_lua_strcaseeq(name, "content-length")) has_length = 1;
    else if (pl_lua_strcaseeq(name, "expect") && !*value) continue;
    ln = strlen(name);
    lv = strlen(value);
    memcpy(at, name, ln); at += ln;
    memcpy(at, ": ", 2); at += 2;
    memcpy(at, value, lv); at += lv;
    memcpy(at, "\r\n", 2); at += 2;
  }
  lua_pushlstring(L, buf, (size_t)(at - buf));
  if (buf != small) lua_remove(L, -2);
  lua_pushboolean(L, has_host);
  lua_pushboolean(L, has_length);
  return 6;
}

/* The text of a header name or value at idx: a string as it is, a number written into buf
 * as tostring() writes it; NULL for anything else. Never allocates in Lua (lua_tostring
 * would, for a number), so no error can be raised while the response is being built. */
static const char *pl_lua_header_text(lua_State *L, int idx, char *buf, size_t size) {
  lua_Number v;
  if (lua_type(L, idx) == LUA_TSTRING) return lua_tostring(L, idx);
  if (lua_type(L, idx) != LUA_TNUMBER) return NULL;
#if LUA_VERSION_NUM >= 503
  if (lua_isinteger(L, idx)) {
    snprintf(buf, size, "%lld", (long long)lua_tointeger(L, idx));
    return buf;
  }
#endif
  v = lua_tonumber(L, idx);
  snprintf(buf, size, "%.14g", (double)v);
#if LUA_VERSION_NUM >= 503
  if (buf[strspn(buf, "-0123456789")] == '\0') strncat(buf, ".0", size - strlen(buf) - 1); /* as 5.4 writes 3.0 */
#endif
  return buf;
}

/* The response of (status, headers, body) at idx, idx + 1, idx + 2, headers either
 * { {name, value}, ... } or flat, { name, value, name, value, ... } (the cosocket
 * driver's: no table per header): PL_OK with *out set, or a negative rc (nothing built). */
static int pl_lua_build_response(lua_State *L, int idx, pl_response **out) {
  pl_response *resp = NULL;
  int status = (int)luaL_checknumber(L, idx), headers = idx + 1;
  size_t i, n, len = 0;
  const char *body;
  int rc;
  luaL_checktype(L, headers, LUA_TTABLE);
  body = luaL_checklstring(L, idx + 2, &len);
  *out = NULL;
  rc = pl_response_new(&resp, status);
  if (rc != PL_OK) return rc;
  n = (size_t)lua_objlen_compat(L, headers);
  for (i = 1; i <= n && rc == PL_OK; i++) {
    char nbuf[64], vbuf[64];
    const char *name, *value;
    lua_rawgeti(L, headers, (int)i);
    if (lua_type(L, -1) == LUA_TSTRING) { /* flat: name, value, name, value, ... */
      lua_rawgeti(L, headers, (int)++i);
    } else if (lua_istable(L, -1)) {     /* { {name, value}, ... } */
      lua_rawgeti(L, -1, 1);
      lua_rawgeti(L, -2, 2);
      lua_remove(L, -3);
    } else { lua_pop(L, 1); continue; }
    name = pl_lua_header_text(L, -2, nbuf, sizeof nbuf);
    value = pl_lua_header_text(L, -1, vbuf, sizeof vbuf);
    if (name && value) rc = pl_response_add_header(resp, name, value);
    lua_pop(L, 2);
  }
  if (rc == PL_OK) rc = pl_response_set_body(resp, body, len);
  if (rc != PL_OK) { pl_response_free(resp); return rc; }
  *out = resp;
  return PL_OK;
}

/* response_from(status, headers, body) -> rc, response */
static int pl_lua_response_from(lua_State *L) {
  pl_response *resp;
  int rc = pl_lua_build_response(L, 1, &resp);
  lua_pushinteger(L, rc);
  pl_lua_push_handle(L, resp, SWIGTYPE_p_pl_response, 1);
  return 2;
}

/* result_from(client, request, message, status, headers, body, sent_ms) -> rc, message,
 * answered: response_from and pl_response_result in one call, with no handle for the
 * response (freed at once). answered is false when rc is from taking the answer in
 * (it could not be), true when it is pl_response_result's; message is its received
 * message or nil. message (argument 3) is nil or a message handle, as for pl_response_result. */
static int pl_lua_result_from(lua_State *L) {
  pl_client *c = (pl_client *)pl_lua_check(L, 1, SWIGTYPE_p_pl_client, "result_from", "pl_client");
  pl_request *req = (pl_request *)pl_lua_check(L, 2, SWIGTYPE_p_pl_request, "result_from", "pl_request");
  pl_message *m = NULL, *out = NULL;
  pl_response *resp;
  swig_lua_userdata *u;
  int64_t sent_ms;
  int rc, answered = 0;
  if (pl_lua_arg(L, 3, SWIGTYPE_p_pl_message, (void **)&m, "result_from", 3, "pl_message") < 0) return lua_error(L);
  luaL_checknumber(L, 7);
  sent_ms = pl_lua_toint64(L, 7);
  lua_settop(L, 7);
  u = pl_lua_new_handle(L); /* 8: the message, made before it so handing it out cannot fail */
  rc = pl_lua_build_response(L, 4, &resp);
  if (rc == PL_OK) {
    answered = 1;
    rc = pl_response_result(&out, c, req, m, resp, sent_ms);
    pl_response_free(resp);
  }
  pl_lua_fill_handle(L, 8, u, out, SWIGTYPE_p_pl_message);
  lua_pushinteger(L, rc);
  lua_pushvalue(L, 8);
  lua_pushboolean(L, answered);
  return 3;
}

/* The outcome module (csrc/outcome.c) for drivers written in Lua (peeklock.resty): the
 * driver moves bytes and reports each attempt; the C module decides.
 * outcome_new(client, request, seed) -> call (under the client's own retry options)
 * outcome_report(call, how, status, code, retry_after, message, msg) ->
 *   true, delay_ms          send the request again after delay_ms
 *   false, code, orphaned   done: code is the result (pl_error_last() describes it);
 *                           orphaned: peek-lock attempts whose lock may be held by nobody
 * how: "unsent", "unanswered", "malformed" or "answered"; status: the HTTP status (0 when
 * none); code: the attempt's PL_* code (answered: result_from's); retry_after: the answer's
 * Retry-After header value or nil; message: the attempt's own error text when it was not
 * answered (nil otherwise); msg: the message handle of a renew/unlock/complete, or nil.
 * fence_enter(msg, op) / fence_leave(msg, rc): the settle fence (op: PL_SETTLE_*). */
typedef struct { pl_call call; pl_policy policy; pl_client *client; } pl_lua_call;

static int pl_lua_outcome_new(lua_State *L) {
  pl_client *c = (pl_client *)pl_lua_check(L, 1, SWIGTYPE_p_pl_client, "outcome_new", "pl_client");
  pl_request *req = (pl_request *)pl_lua_check(L, 2, SWIGTYPE_p_pl_request, "outcome_new", "pl_request");
  pl_lua_call *lc = (pl_lua_call *)lua_newuserdata(L, sizeof *lc);
  pl_call_init(&lc->call, req->op, req->entity, (uint64_t)luaL_optnumber(L, 3, 1));
  lc->call.resend_ok = req->resend_ok;
  lc->policy = *pl_client_policy(c);
  lc->client = c;
  return 1;
}

static int pl_lua_outcome_report(lua_State *L) {
  pl_lua_call *lc = (pl_lua_call *)lua_touserdata(L, 1);
  const char *how = luaL_checkstring(L, 2);
  int status = (int)luaL_optinteger(L, 3, 0), code = (int)luaL_checkinteger(L, 4), io;
  long ra = pl_retry_after_ms(luaL_optstring(L, 5, NULL));
  const char *text = luaL_optstring(L, 6, NULL);
  pl_message *m = NULL;
  int64_t left = 0;
  if (!lc) return luaL_error(L, "outcome_report: argument 1 must be a call");
  if (pl_lua_arg(L, 7, SWIGTYPE_p_pl_message, (void **)&m, "outcome_report", 7, "pl_message") < 0) return lua_error(L);
  if (!strcmp(how, "unsent")) io = PL_IO_NOT_SENT;
  else if (!strcmp(how, "unanswered")) io = PL_IO_UNANSWERED;
  else if (!strcmp(how, "malformed")) io = PL_IO_MALFORMED;
  else io = PL_IO_ANSWERED;
  if (text) pl_error_set(code, status, code != PL_EPROTOCOL, "%s", text);
  if (m && lc->call.op != PL_OP_PEEKLOCK && lc->call.op != PL_OP_RECVDEL) left = pl_message_lock_remaining_ms(m);
  int next = pl_call_report(&lc->call, &lc->policy, io, status, code, ra, left);
  pl_client_call_reported(lc->client, &lc->call, next, status, 1);
  if (next == PL_NEXT_RETRY) {
    pl_client_stat_add(lc->client, PL_STAT_RETRIES, 1);
    lua_pushboolean(L, 1);
    lua_pushinteger(L, (lua_Integer)lc->call.delay_ms);
    return 2;
  }
  if (lc->call.orphaned) pl_client_stat_add(lc->client, PL_STAT_ORPHANED, (uint64_t)lc->call.orphaned);
  lua_pushboolean(L, 0);
  lua_pushinteger(L, lc->call.code);
  lua_pushinteger(L, lc->call.orphaned);
  return 3;
}

static int pl_lua_fence_enter(lua_State *L) {
  pl_message *m = (pl_message *)pl_lua_check(L, 1, SWIGTYPE_p_pl_message, "fence_enter", "pl_message");
  int op = (int)luaL_checkinteger(L, 2);
  lua_pushinteger(L, pl_fence_enter(m, op == PL_SETTLE_RENEW ? PL_OP_RENEW : op == PL_SETTLE_UNLOCK ? PL_OP_UNLOCK
                                                                                                    : PL_OP_COMPLETE));
  return 1;
}

static int pl_lua_fence_leave(lua_State *L) {
  pl_message *m = (pl_message *)pl_lua_check(L, 1, SWIGTYPE_p_pl_message, "fence_leave", "pl_message");
  pl_fence_leave(m, (int)luaL_checkinteger(L, 2));
  return 0;
}

/* outgoing_from(body, opts, datetime_mt) -> the pl_outgoing of lua/peeklock.lua's
 * build_outgoing in one call (its checks and setters, in opts' own order):
 *   handle                            built
 *   nil, rc                           a core call failed (pl_error_last() has the detail)
 *   false, "option", key, what, v     option key holds v, of the wrong type (what: expected)
 *   false, "unknown", key             no such option
 *   false, "name", name               a property name that is not a string
 *   false, "property", name, v        a property value of no supported type
 * request_send_from(client, entity, body, opts, datetime_mt) builds the same message,
 * makes its request (pl_request_send) and frees it: rc, request, or the results above but
 * the handle, for which it makes no handle. (The blocking client's send, a native of
 * client_methods, builds and sends the same way.)
 * Argument errors come back as values: peeklock.lua words and raises them, pointing at
 * the caller. No Lua error can be raised while a message is being built (the stack is
 * reserved first, and results are pushed once it is freed or owned by its handle), so
 * none leaks. */
enum { PL_OPT_BODY, PL_OPT_CONTENT_TYPE, PL_OPT_TTL, PL_OPT_SCHEDULED, PL_OPT_PERSIST, PL_OPT_RESEND, PL_OPT_PROPS,
       PL_OPT_BROKER };
#define PL_LUA_OPT(key, kind, field) { key, sizeof key - 1, kind, field }
static const struct { const char *key; size_t len; int kind; const char *field; } pl_lua_options[] = {
  PL_LUA_OPT("body", PL_OPT_BODY, NULL),
  PL_LUA_OPT("content_type", PL_OPT_CONTENT_TYPE, NULL),
  PL_LUA_OPT("time_to_live", PL_OPT_TTL, NULL),
  PL_LUA_OPT("scheduled_enqueue_time", PL_OPT_SCHEDULED, NULL),
  PL_LUA_OPT("force_persistence", PL_OPT_PERSIST, NULL),
  PL_LUA_OPT("resend", PL_OPT_RESEND, NULL),
  PL_LUA_OPT("properties", PL_OPT_PROPS, NULL),
  PL_LUA_OPT("message_id", PL_OPT_BROKER, "MessageId"),
  PL_LUA_OPT("label", PL_OPT_BROKER, "Label"),
  PL_LUA_OPT("correlation_id", PL_OPT_BROKER, "CorrelationId"),
  PL_LUA_OPT("session_id", PL_OPT_BROKER, "SessionId"),
  PL_LUA_OPT("partition_key", PL_OPT_BROKER, "PartitionKey"),
  PL_LUA_OPT("reply_to", PL_OPT_BROKER, "ReplyTo"),
  PL_LUA_OPT("reply_to_session_id", PL_OPT_BROKER, "ReplyToSessionId"),
  PL_LUA_OPT("to", PL_OPT_BROKER, "To"),
  PL_LUA_OPT("via_partition_key", PL_OPT_BROKER, "ViaPartitionKey"),
};
#undef PL_LUA_OPT

/* An argument error found while building: its kind ("option", "unknown", "name",
 * "property"), the stack slots of the key and value at fault (0: none), what was expected. */
typedef struct { const char *kind; int key, val; const char *what; } pl_lua_bad;

/* Records an argument error about the key and value on top of the stack; returns 1. */
static int pl_lua_set_bad(lua_State *L, pl_lua_bad *bad, const char *kind, int with_val, const char *what) {
  bad->kind = kind;
  bad->key = lua_gettop(L) - 1;
  bad->val = with_val ? lua_gettop(L) : 0;
  bad->what = what;
  return 1;
}

/* The core's last refusal (PL_EINVAL) without the argument name that opens it:
 * "timeout: must be 0..300 seconds" -> "must be 0..300 seconds". */
static const char *pl_lua_reason(void) {
  const char *msg = pl_error_last()->message, *p;
  if (!msg) return "invalid argument";
  for (p = msg; (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || *p == '_'; p++) {}
  return p > msg && p[0] == ':' && p[1] == ' ' ? p + 2 : msg;
}

/* rc of a setter: the core's refusal of the option's value (PL_EINVAL) as an argument
 * error with the core's words ("value", what: its message), any other rc as it is. */
static int pl_lua_set_value(lua_State *L, pl_lua_bad *bad, int rc) {
  if (rc != PL_EINVAL) return rc;
  return pl_lua_set_bad(L, bad, "value", 0, pl_lua_reason());
}

/* Pushes the results of an argument error: false, kind, key[, what][, value]. */
static int pl_lua_push_bad(lua_State *L, const pl_lua_bad *bad) {
  luaL_checkstack(L, 5, NULL);
  lua_pushboolean(L, 0);
  lua_pushstring(L, bad->kind);
  lua_pushvalue(L, bad->key);
  if (bad->what) lua_pushstring(L, bad->what);
  if (bad->val) lua_pushvalue(L, bad->val);
  return 3 + (bad->what != NULL) + (bad->val != 0);
}

/* The number at idx as an Int64 property when it is an integer (on LuaJIT, which has no
 * integer subtype: integral and within +-2^53, where a double is exact); else a Double. */
static int pl_lua_integer(lua_State *L, int idx, int64_t *out) {
#if LUA_VERSION_NUM >= 503
  if (!lua_isinteger(L, idx)) return 0;
  *out = (int64_t)lua_tointeger(L, idx);
  return 1;
#else
  lua_Number v = lua_tonumber(L, idx);
  if (!(v == floor(v) && v > -9007199254740992.0 && v < 9007199254740992.0)) return 0;
  *out = (int64_t)v;
  return 1;
#endif
}

/* Adds the properties table at idx (DateTime metatable at mt, the string "unix" at
 * unix_key): 0, a negative rc, or 1 with *bad set (its key and value left on the stack). */
static int pl_lua_add_properties(lua_State *L, pl_outgoing *m, int idx, int mt, int unix_key, pl_lua_bad *bad) {
  int rc = 0;
  lua_pushnil(L);
  while (rc == 0 && lua_next(L, idx)) {
    const char *name;
    int64_t iv;
    if (lua_type(L, -2) != LUA_TSTRING) return pl_lua_set_bad(L, bad, "name", 0, NULL);
    if (!(name = pl_lua_whole(L, -2))) return pl_lua_set_bad(L, bad, "nul", 0, NULL);
    switch (lua_type(L, -1)) {
    case LUA_TSTRING:
      if (!pl_lua_whole(L, -1)) return pl_lua_set_bad(L, bad, "nul", 0, NULL);
      rc = pl_outgoing_add_string(m, name, lua_tostring(L, -1));
      break;
    case LUA_TBOOLEAN: rc = pl_outgoing_add_bool(m, name, lua_toboolean(L, -1)); break;
    case LUA_TNUMBER:
      if (pl_lua_integer(L, -1, &iv)) rc = pl_outgoing_add_int(m, name, iv);
      else rc = pl_outgoing_add_double(m, name, (double)lua_tonumber(L, -1));
      break;
    default: {
      int is_dt = 0;
      if (lua_getmetatable(L, -1)) { is_dt = lua_rawequal(L, -1, mt); lua_pop(L, 1); }
      if (!is_dt) return pl_lua_set_bad(L, bad, "property", 1, NULL);
      lua_Number u;
      int finite;
      lua_pushvalue(L, unix_key);
      lua_rawget(L, -2);
      /* peeklock.datetime checked it, but a table's field can be changed afterwards:
       * a non-number, NaN or out-of-range value would make the cast below undefined,
       * and a fraction of a second would be lost (the service keeps whole seconds) */
      u = lua_tonumber(L, -1);
      finite = lua_type(L, -1) == LUA_TNUMBER && u > -9.2e18 && u < 9.2e18 && u == floor(u);
      lua_pop(L, 1);
      if (!finite) return pl_lua_set_bad(L, bad, "datetime", 0, NULL);
      rc = pl_outgoing_add_datetime(m, name, (int64_t)floor(u));
    }
    }
    lua_pop(L, 1);
  }
  if (rc != 0) lua_pop(L, 1); /* the key lua_next left */
  return rc;
}

/* Sets one option (key and value on top of the stack) on m: 0, a negative rc, or 1 with *bad set. */
static int pl_lua_set_option(lua_State *L, pl_outgoing *m, int mt, int unix_key, pl_lua_bad *bad) {
  size_t klen = 0;
  const char *key = lua_type(L, -2) == LUA_TSTRING ? lua_tolstring(L, -2, &klen) : NULL;
  int t = lua_type(L, -1);
  lua_Number v;
  size_t i, n = sizeof pl_lua_options / sizeof pl_lua_options[0];
  /* by length first: one memcmp for most keys (and a key with a NUL in it matches none) */
  for (i = 0; key && i < n; i++)
    if (klen == pl_lua_options[i].len && memcmp(key, pl_lua_options[i].key, klen) == 0) break;
  if (!key || i == n) return pl_lua_set_bad(L, bad, "unknown", 0, NULL);
  switch (pl_lua_options[i].kind) {
  case PL_OPT_BODY: return 0;
  case PL_OPT_CONTENT_TYPE:
    if (t != LUA_TSTRING) return pl_lua_set_bad(L, bad, "option", 1, "string");
    if (!pl_lua_whole(L, -1)) return pl_lua_set_bad(L, bad, "option", 1, "string without NUL bytes");
    return pl_lua_set_value(L, bad, pl_outgoing_set_content_type(m, lua_tostring(L, -1)));
  case PL_OPT_TTL:
    if (t != LUA_TNUMBER) return pl_lua_set_bad(L, bad, "option", 1, "number");
    return pl_lua_set_value(L, bad, pl_outgoing_set_time_to_live(m, (double)lua_tonumber(L, -1)));
  case PL_OPT_SCHEDULED:
    v = lua_tonumber(L, -1);
    /* NaN, infinity and anything an int64_t cannot hold are refused before the cast */
    if (t != LUA_TNUMBER || !(v > -9.2e18 && v < 9.2e18))
      return pl_lua_set_bad(L, bad, "option", 1, "Unix time (number)");
    return pl_lua_set_value(L, bad, pl_outgoing_set_scheduled_enqueue_time(m, (int64_t)floor(v)));
  case PL_OPT_PERSIST:
    if (t != LUA_TBOOLEAN) return pl_lua_set_bad(L, bad, "option", 1, "boolean");
    return pl_outgoing_set_force_persistence(m, lua_toboolean(L, -1));
  case PL_OPT_RESEND:
    if (t != LUA_TBOOLEAN) return pl_lua_set_bad(L, bad, "option", 1, "boolean");
    return pl_outgoing_set_resend(m, lua_toboolean(L, -1));
  case PL_OPT_PROPS:
    if (t != LUA_TTABLE) return pl_lua_set_bad(L, bad, "option", 1, "table");
    return pl_lua_add_properties(L, m, lua_gettop(L), mt, unix_key, bad);
  default:
    if (t != LUA_TSTRING) return pl_lua_set_bad(L, bad, "option", 1, "string");
    if (!pl_lua_whole(L, -1)) return pl_lua_set_bad(L, bad, "option", 1, "string without NUL bytes");
    return pl_lua_set_value(L, bad, pl_outgoing_set_broker(m, pl_lua_options[i].field, lua_tostring(L, -1)));
  }
}

/* Builds the message of (body, opts, datetime_mt) at b, b + 1, b + 2: 0 with *out set,
 * a negative rc, or 1 with *bad set (nothing built in the last two cases). */
static int pl_lua_build(lua_State *L, int b, pl_outgoing **out, pl_lua_bad *bad) {
  size_t len = 0;
  const char *body = luaL_checklstring(L, b, &len);
  int opts = b + 1, unix_key, rc;
  pl_outgoing *m = NULL;
  if (!lua_isnil(L, opts)) luaL_checktype(L, opts, LUA_TTABLE);
  luaL_checkstack(L, 12, NULL); /* what the loops below push: the stack never grows while m exists */
  lua_pushliteral(L, "unix");
  unix_key = lua_gettop(L);
  *out = NULL;
  rc = pl_outgoing_new(&m, body, len);
  if (rc < 0) return rc;
  if (!lua_isnil(L, opts)) {
    lua_pushnil(L);
    while (lua_next(L, opts)) {
      rc = pl_lua_set_option(L, m, b + 2, unix_key, bad);
      if (rc != 0) { pl_outgoing_free(m); return rc; }
      lua_pop(L, 1);
    }
  }
  *out = m;
  return 0;
}

/* The results of pl_lua_build when it built nothing. */
static int pl_lua_build_failed(lua_State *L, int rc, const pl_lua_bad *bad) {
  if (rc > 0) return pl_lua_push_bad(L, bad);
  lua_pushnil(L);
  lua_pushinteger(L, rc);
  return 2;
}

static int pl_lua_outgoing_from(lua_State *L) {
  pl_outgoing *m;
  pl_lua_bad bad = { NULL, 0, 0, NULL };
  swig_lua_userdata *u;
  int rc;
  lua_settop(L, 3);
  u = pl_lua_new_handle(L);
  rc = pl_lua_build(L, 1, &m, &bad);
  if (rc != 0) return pl_lua_build_failed(L, rc, &bad);
  pl_lua_fill_handle(L, 4, u, m, SWIGTYPE_p_pl_outgoing);
  lua_settop(L, 4);
  return 1;
}

static int pl_lua_request_send_from(lua_State *L) {
  pl_client *c = (pl_client *)pl_lua_check(L, 1, SWIGTYPE_p_pl_client, "request_send_from", "pl_client");
  const char *entity = luaL_checkstring(L, 2);
  pl_outgoing *m;
  pl_request *req = NULL;
  pl_lua_bad bad = { NULL, 0, 0, NULL };
  swig_lua_userdata *u;
  int rc;
  lua_settop(L, 5);
  lua_pushnil(L); /* slot 6: rc */
  u = pl_lua_new_handle(L);
  rc = pl_lua_build(L, 3, &m, &bad);
  if (rc != 0) return pl_lua_build_failed(L, rc, &bad);
  rc = pl_request_send(&req, c, entity, m);
  pl_outgoing_free(m);
  lua_pushinteger(L, rc);
  lua_replace(L, 6);
  pl_lua_fill_handle(L, 7, u, req, SWIGTYPE_p_pl_request);
  lua_settop(L, 7);
  return 2;
}

/* client_methods(Client, Message, DateTime, last_error, outgoing_error, closed, raise) ->
 * send, peek_lock, receive_and_delete: lua/peeklock.lua's Client methods of those names,
 * each one C call from the caller's line to the core and back (no Lua frames for the self,
 * argument and option checks, which cost more than the wrappers they guard). They check
 * and word as the Lua checks did. Lua code runs inside them only to read self._h and
 * opts.timeout (through any __index), to make error values (last_error(rc, op) -> err,
 * closed(op) -> err) and to raise (raise(msg), outgoing_error(op, false, kind, key, ...):
 * at the user's line, past peeklock's own frames). A yield inside any of those fails
 * ("attempt to yield across a C-call boundary"): these are the blocking client's
 * methods (peeklock.resty has its own of these names). */
#define PL_LUA_UV_CLIENT lua_upvalueindex(3)
#define PL_LUA_UV_MESSAGE lua_upvalueindex(4)
#define PL_LUA_UV_DATETIME lua_upvalueindex(5)
#define PL_LUA_UV_LAST_ERROR lua_upvalueindex(6)
#define PL_LUA_UV_OUTGOING_ERROR lua_upvalueindex(7)
#define PL_LUA_UV_CLOSED lua_upvalueindex(8)
#define PL_LUA_UV_RAISE lua_upvalueindex(9)
#define PL_LUA_UV_KEY_H lua_upvalueindex(10)
#define PL_LUA_UV_KEY_CLIENT lua_upvalueindex(11)

/* Raises the formatted message through peeklock.lua's raise (at the user's line). */
static int pl_lua_raise(lua_State *L, const char *fmt, ...) {
  va_list ap;
  lua_pushvalue(L, PL_LUA_UV_RAISE);
  va_start(ap, fmt);
  lua_pushvfstring(L, fmt, ap);
  va_end(ap);
  lua_call(L, 1, 0);
  return lua_error(L); /* not reached: raise raises */
}

/* The "bad argument" error of peeklock.lua's argerror. */
static int pl_lua_argerror(lua_State *L, const char *fname, int n, const char *what, int idx) {
  return pl_lua_raise(L, "bad argument #%d to '%s' (%s expected, got %s)", n, fname, what, luaL_typename(L, idx));
}

/* Pushes nil, closed(fname): 2 results. */
static int pl_lua_closed(lua_State *L, const char *fname) {
  lua_pushnil(L);
  lua_pushvalue(L, PL_LUA_UV_CLOSED);
  lua_pushstring(L, fname);
  lua_call(L, 1, 1);
  return 2;
}

/* Self (slot 1) as peeklock.lua's check_client: raises when self is no client. Else pushes
 * self._h and returns it, the handle of a live pl_client (left on the stack, so it stays
 * alive; its ptr is NULL once the client is closed, which Lua code run later, an __index or
 * a finalizer, may do: check it again before use); NULL with nil, err pushed (2 results)
 * when the client was closed. */
static swig_lua_userdata *pl_lua_self_client(lua_State *L, const char *fname) {
  swig_lua_userdata *u;
  int ok = 0;
  if (lua_getmetatable(L, 1)) {
    ok = lua_rawequal(L, -1, PL_LUA_UV_CLIENT);
    if (!ok && lua_type(L, -1) == LUA_TTABLE) {
      lua_pushliteral(L, "_peeklock_client");
      lua_rawget(L, -2);
      ok = lua_toboolean(L, -1);
      lua_pop(L, 1);
    }
    lua_pop(L, 1);
  }
  if (!ok)
    pl_lua_raise(L, "bad self to '%s' (peeklock.Client expected, got %s; use client:%s(...))", fname,
                 luaL_typename(L, 1), fname);
  lua_pushvalue(L, PL_LUA_UV_KEY_H);
  lua_gettable(L, 1);
  if (!lua_toboolean(L, -1)) {
    lua_pop(L, 1);
    pl_lua_closed(L, fname);
    return NULL;
  }
  u = pl_lua_handle(L, -1);
  if (!u || !u->ptr || u->type != SWIGTYPE_p_pl_client)
    pl_lua_raise(L, "%s: the client's handle is not a live pl_client", fname);
  return u;
}

/* Pushes nil, last_error(rc, fname): 2 results. */
static int pl_lua_fail(lua_State *L, int rc, const char *fname) {
  lua_pushnil(L);
  lua_pushvalue(L, PL_LUA_UV_LAST_ERROR);
  lua_pushinteger(L, rc);
  lua_pushstring(L, fname);
  lua_call(L, 2, 1);
  return 2;
}

/* client:send(entity, body, opts) -> true | nil, err */
static int pl_lua_client_send(lua_State *L) {
  pl_lua_bad bad = { NULL, 0, 0, NULL };
  pl_outgoing *m;
  swig_lua_userdata *u;
  int rc;
  lua_settop(L, 4);
  lua_pushvalue(L, PL_LUA_UV_DATETIME); /* 5: pl_lua_build's (body, opts, datetime_mt) are 3..5 */
  if (!(u = pl_lua_self_client(L, "send"))) return 2; /* 6: the client's handle */
  if (lua_type(L, 2) != LUA_TSTRING) return pl_lua_argerror(L, "send", 1, "string", 2);
  if (!pl_lua_whole(L, 2)) return pl_lua_argerror(L, "send", 1, "string without NUL bytes", 2);
  if (lua_type(L, 3) != LUA_TSTRING) return pl_lua_argerror(L, "send", 2, "string body", 3);
  if (!lua_isnil(L, 4) && lua_type(L, 4) != LUA_TTABLE) return pl_lua_argerror(L, "send", 3, "table or nil", 4);
  rc = pl_lua_build(L, 3, &m, &bad);
  if (rc > 0) {
    luaL_checkstack(L, 8, NULL);
    lua_pushvalue(L, PL_LUA_UV_OUTGOING_ERROR);
    lua_pushliteral(L, "send");
    lua_call(L, 1 + pl_lua_push_bad(L, &bad), 0); /* raises */
    return 0;
  }
  if (rc == 0) {
    if (!u->ptr) { /* closed by a finalizer while the message was built */
      pl_outgoing_free(m);
      return pl_lua_closed(L, "send");
    }
    rc = pl_send((pl_client *)u->ptr, lua_tostring(L, 2), m);
    pl_outgoing_free(m);
  }
  if (rc < 0) return pl_lua_fail(L, rc, "send");
  lua_pushboolean(L, 1);
  return 1;
}

/* peek_lock and receive_and_delete (self, entity, {timeout=s}): a message, nil, nil when
 * none came in time, or nil, err. */
static int pl_lua_client_receive(lua_State *L, const char *fname, int peek) {
  pl_message *m = NULL;
  swig_lua_userdata *u, *mu;
  lua_Number timeout;
  int rc, t = 30;
  lua_settop(L, 3);
  if (!(u = pl_lua_self_client(L, fname))) return 2; /* 4: the client's handle */
  if (lua_type(L, 2) != LUA_TSTRING) return pl_lua_argerror(L, fname, 1, "string", 2);
  if (!pl_lua_whole(L, 2)) return pl_lua_argerror(L, fname, 1, "string without NUL bytes", 2);
  if (!lua_isnil(L, 3)) {
    if (lua_type(L, 3) != LUA_TTABLE) return pl_lua_argerror(L, fname, 2, "table or nil", 3);
    lua_getfield(L, 3, "timeout");
    if (!lua_isnil(L, -1)) {
      timeout = lua_tonumber(L, -1);
      if (lua_type(L, -1) != LUA_TNUMBER || timeout != timeout)
        return pl_lua_raise(L, "bad option 'timeout' to '%s' (number expected, got %s)", fname,
                            luaL_typename(L, -1));
      /* whole seconds, rounded down; clamped where a cast to int would be undefined */
      t = timeout >= INT_MAX ? INT_MAX : timeout <= -1 ? -1 : (int)floor(timeout);
      if (pl_check_timeout(t) < 0)
        return pl_lua_raise(L, "bad option 'timeout' to '%s' (%s)", fname, pl_lua_reason());
    }
    lua_settop(L, 4);
  }
  mu = pl_lua_new_handle(L); /* 5: made before the message, so handing it out cannot fail */
  if (!u->ptr) return pl_lua_closed(L, fname); /* closed by opts' __index or a finalizer */
  rc = peek ? pl_peek_lock(&m, (pl_client *)u->ptr, lua_tostring(L, 2), t)
            : pl_receive_and_delete(&m, (pl_client *)u->ptr, lua_tostring(L, 2), t);
  pl_lua_fill_handle(L, 5, mu, m, SWIGTYPE_p_pl_message);
  if (rc < 0) return pl_lua_fail(L, rc, fname);
  if (rc == PL_EMPTY || !m) {
    lua_pushnil(L);
    lua_pushnil(L);
    return 2;
  }
  pl_lua_push_message(L, 1, 5, PL_LUA_UV_MESSAGE, PL_LUA_UV_KEY_H, PL_LUA_UV_KEY_CLIENT);
  return 1;
}

static int pl_lua_client_peek_lock(lua_State *L) { return pl_lua_client_receive(L, "peek_lock", 1); }
static int pl_lua_client_receive_and_delete(lua_State *L) {
  return pl_lua_client_receive(L, "receive_and_delete", 0);
}

static int pl_lua_client_methods(lua_State *L) {
  static const lua_CFunction methods[] = { pl_lua_client_send, pl_lua_client_peek_lock,
                                           pl_lua_client_receive_and_delete };
  size_t i;
  int k;
  for (k = 1; k <= 3; k++) luaL_checktype(L, k, LUA_TTABLE);
  for (k = 4; k <= 7; k++) luaL_checktype(L, k, LUA_TFUNCTION);
  lua_settop(L, 7);
  for (i = 0; i < sizeof methods / sizeof methods[0]; i++) {
    lua_pushvalue(L, PL_LUA_MT);
    lua_pushvalue(L, PL_LUA_FREED_MT);
    for (k = 1; k <= 7; k++) lua_pushvalue(L, k);
    lua_pushliteral(L, "_h");
    lua_pushliteral(L, "_client");
    lua_pushcclosure(L, methods[i], 11);
  }
  return (int)(sizeof methods / sizeof methods[0]);
}

static void pl_lua_free_typed(swig_type_info *t, void *p) {
  /* The destructors are the %extend ones of peeklock.i (pl_*_free). */
  swig_lua_class *c = t ? (swig_lua_class *)t->clientdata : NULL;
  if (c && c->destructor) c->destructor(p);
}%}

%native(release) int pl_lua_release(lua_State *L);
%native(message_body) int pl_lua_message_body(lua_State *L);
%native(request_body) int pl_lua_request_body(lua_State *L);
%native(last_error) int pl_lua_last_error(lua_State *L);
%native(client_new) int pl_lua_client_new(lua_State *L);
%native(renewer_new) int pl_lua_renewer_new(lua_State *L);
%native(message_properties) int pl_lua_message_properties(lua_State *L);
%native(message_indexer) int pl_lua_message_indexer(lua_State *L);
%native(message_wrapper) int pl_lua_message_wrapper(lua_State *L);
%native(request_parts) int pl_lua_request_parts(lua_State *L);
%native(request_head) int pl_lua_request_head(lua_State *L);
%native(response_from) int pl_lua_response_from(lua_State *L);
%native(result_from) int pl_lua_result_from(lua_State *L);
/* The largest answer body the core takes (a driver refuses a longer one as it streams in). */
%constant long max_body_bytes = (long)PL_MAX_BODY_BYTES;
%native(outcome_new) int pl_lua_outcome_new(lua_State *L);
%native(outcome_report) int pl_lua_outcome_report(lua_State *L);
%native(fence_enter) int pl_lua_fence_enter(lua_State *L);
%native(fence_leave) int pl_lua_fence_leave(lua_State *L);
%native(outgoing_from) int pl_lua_outgoing_from(lua_State *L);
%native(client_methods) int pl_lua_client_methods(lua_State *L);
%native(request_send_from) int pl_lua_request_send_from(lua_State *L);
%native(key) int pl_lua_key(lua_State *L);
%native(alive) int pl_lua_alive(lua_State *L);
%native(set_drop_hook) int pl_lua_set_drop_hook(lua_State *L);
%native(message_ref) int pl_lua_message_ref(lua_State *L);
%native(stat_request) int pl_lua_stat_request(lua_State *L);
%native(mark_lost) int pl_lua_mark_lost(lua_State *L);

%include "peeklock.i"

/* Every native of the module closes over the two handle metatables (see pl_lua_handle). */
%init %{
  pl_lua_upvalues(L);
%}
