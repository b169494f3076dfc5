/* bindings/lua.i — the Lua part of the SWIG bindings.
 *
 * The one shared interface is bindings/peeklock.i (also used for Python). This file
 * adds what only Lua needs, before including it: the typemaps that make the generated
 * wrappers speak Lua (output parameters as extra return values, handles, binary strings,
 * stats structs as tables) and the natives the module adds. What SWIG cannot generate is
 * ordinary C under bindings/lua/ (pl_lua.h lists it): the handles, whose __gc and
 * __close both run one idempotent free, so a handle is freed exactly once whether the
 * collector or the caller gets there first; received and outgoing messages; the
 * cosocket driver's requests; the options tables.
 * The module is built as peeklock.core (luaopen_peeklock_core, bindings/lua/handles.c)
 * for Lua 5.4 and LuaJIT; lua/peeklock.lua is the idiomatic layer on top.
 */

/* The wrapper exports nothing: luaopen_peeklock_core (handles.c) is the entry point. */
%begin %{
#define SWIGEXPORT
%}

%{
#include <limits.h>
#include <stdint.h>
#include <string.h>
#include "pl_lua.h"
/* The largest size_t an int64_t holds (pl_lua_integer_in's range is an int64_t's). */
#define PL_LUA_SIZE_MAX ((uint64_t)SIZE_MAX < (uint64_t)INT64_MAX ? (int64_t)SIZE_MAX : INT64_MAX)
#include "wire_int.h" /* PL_MAX_BODY_BYTES */
/* SWIG's loader, under another name: luaopen_peeklock_core calls it. */
#undef SWIG_init
#define SWIG_init pl_lua_swig_open
/* SWIG's argument errors name the type of what was passed by reading it as a SWIG
 * object; a handle is none (pl_lua_handle). */
#undef SWIG_fail_arg
#define SWIG_fail_arg(func_name, argnum, type)                                                          \
  {                                                                                                   \
    pl_lua_pusherror(L, "Error in %s (arg %d), expected '%s' got '%s'", func_name, argnum, type,      \
                     pl_lua_typename(L, argnum));                                                     \
    goto fail;                                                                                        \
  }
%}

%include <stdint.i>

/* Output handles: TYPE **out becomes an extra return value (nil when none). */
%define PL_LUA_OUT_HANDLE(TYPE)
%typemap(in, numinputs=0) TYPE **out (TYPE *tmp = NULL) { $1 = &tmp; }
%typemap(argout) TYPE **out {
  pl_lua_push_handle(L, *$1, &pl_lua_kind_ ## TYPE, 1);
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
 * reaching C, except for the parameters the header names <x>_or_null (below). */
%define PL_LUA_LIVE_HANDLE(TYPE)
/* Only our own handles convert: a foreign userdata or a lightuserdata would otherwise
 * be taken for a SWIG object and dereferenced. */
%typemap(in, checkfn="SWIG_isptrtype") TYPE *, const TYPE * {
  if (pl_lua_arg(L, $input, &pl_lua_kind_ ## TYPE, (void **)&$1, "$symname", $argnum) < 0) SWIG_fail;
}
%typemap(check) TYPE *, const TYPE * {
  if (!$1) {
    pl_lua_pusherror(L, "%s: argument %d must be a live " #TYPE " (got nil or a freed handle)", "$symname",
                     $argnum);
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
PL_LUA_LIVE_HANDLE(pl_run)
/* The header's <x>_or_null parameters take nil (NULL), as the header says, but not a
 * freed handle (which pl_lua_arg also turns into NULL): by name, whatever the function
 * (SWIG matches a parameter's type and name before its type). */
%define PL_LUA_OR_NULL_HANDLE(TYPE, NAME)
%typemap(in, checkfn="SWIG_isptrtype") TYPE *NAME {
  if (pl_lua_arg(L, $input, &pl_lua_kind_ ## TYPE, (void **)&$1, "$symname", $argnum) < 0) SWIG_fail;
  if (!$1 && !lua_isnil(L, $input)) {
    pl_lua_pusherror(L, "%s: argument %d must be a live " #TYPE " or nil (got a freed handle)", "$symname",
                     $argnum);
    SWIG_fail;
  }
}
%typemap(check) TYPE *NAME ""
%enddef
PL_LUA_OR_NULL_HANDLE(pl_renewer, r_or_null)
PL_LUA_OR_NULL_HANDLE(pl_message, m_or_null)

/* Borrowed handles returned by value (pl_event_message): not owned. */
%typemap(out) pl_message * {
  pl_lua_push_handle(L, $1, &pl_lua_kind_pl_message, 0);
  SWIG_arg++;
}

/* Owned strings through char **out (pl_sas_token). */
%typemap(in, numinputs=0) char **out (char *tmp = NULL) { $1 = &tmp; }
%typemap(argout) char **out {
  if (*$1) lua_pushstring(L, *$1); else lua_pushnil(L);
  SWIG_arg++;
}
%typemap(freearg) char **out { pl_free(*$1); }
/* A second owned string (pl_entity_destination): one more value, nil for NULL. */
%typemap(in, numinputs=0) char **out2 (char *tmp = NULL) { $1 = &tmp; }
%typemap(argout) char **out2 {
  if (*$1) lua_pushstring(L, *$1); else lua_pushnil(L);
  SWIG_arg++;
}
%typemap(freearg) char **out2 { pl_free(*$1); }

/* Binary input: a Lua string, NULs included. */
%typemap(in, checkfn="lua_isstring") (const void *body, size_t len) {
  size_t n = 0;
  $1 = (void *)lua_tolstring(L, $input, &n);
  $2 = n;
}

/* Integer arguments: plain Lua numbers (integers on 5.4), through pl_lua_integer_in (an
 * integer that fits the C type, checked before any cast: no fraction, NaN, infinity or
 * value out of range, which SWIG's own typemaps cast as they come, undefined or
 * truncated), else an error naming the argument by its place in the Lua call. int64_t
 * comes back through pl_lua_pushint64 (a plain #if in a typemap would be SWIG's own,
 * where LUA_VERSION_NUM is undefined). */
%define PL_LUA_INTEGER_IN(TYPE, LO, HI, WORDS)
%typemap(in, checkfn="lua_isnumber") TYPE (int64_t v) {
  if (!pl_lua_integer_in(L, $input, LO, HI, &v)) {
    pl_lua_pusherror(L, "%s: argument %d must be an integer that fits " WORDS, "$symname", $input);
    SWIG_fail;
  }
  $1 = (TYPE)v;
}
%enddef
PL_LUA_INTEGER_IN(int, INT_MIN, INT_MAX, "an int")
PL_LUA_INTEGER_IN(long, LONG_MIN, LONG_MAX, "a long")
PL_LUA_INTEGER_IN(int64_t, INT64_MIN, INT64_MAX, "an int64_t")
PL_LUA_INTEGER_IN(size_t, 0, PL_LUA_SIZE_MAX, "a size_t")
%typemap(out) int64_t { pl_lua_pushint64(L, $1); SWIG_arg++; }

/* Integers stay integers on Lua 5.3+ (SWIG's default pushes floats). */
%typemap(out) int, long, unsigned int, size_t, uintptr_t {
  lua_pushinteger(L, (lua_Integer)$1); SWIG_arg++;
}

/* Stats structs come back as tables (stats.c, by bindings/pl_fields.h's lists). */
%typemap(in, numinputs=0) pl_client_stats *out (pl_client_stats tmp) { memset(&tmp, 0, sizeof tmp); $1 = &tmp; }
%typemap(argout) pl_client_stats *out { pl_lua_push_client_stats(L, $1); SWIG_arg++; }
%typemap(in, numinputs=0) pl_renewer_stats *out (pl_renewer_stats tmp) { memset(&tmp, 0, sizeof tmp); $1 = &tmp; }
%typemap(argout) pl_renewer_stats *out { pl_lua_push_renewer_stats(L, $1); SWIG_arg++; }
%typemap(in, numinputs=0) pl_run_tallies *out (pl_run_tallies tmp = PL_RUN_TALLIES_INIT) { $1 = &tmp; }
%typemap(argout) pl_run_tallies *out { pl_lua_push_run_tallies(L, $1); SWIG_arg++; }
/* pl_renewer_finish's outcome, after the status. */
%typemap(in, numinputs=0) int *outcome (int tmp = 0) { $1 = &tmp; }
%typemap(argout) int *outcome { lua_pushinteger(L, (lua_Integer)tmp$argnum); SWIG_arg++; }

/* Fallible calls (peeklock.i applies PL_STATUS): the code is returned as a number
 * and lua/peeklock.lua turns negatives into nil, err with pl_error_last(). */
%typemap(out) int PL_STATUS { lua_pushinteger(L, (lua_Integer)$1); SWIG_arg++; }

/* Replaced by the natives message_body and request_body (byte strings). (peeklock.i leaves
 * out the options structs, the error struct and callbacks: client_new, renewer_new, run_new and
 * last_error stand for them here.) */
%ignore pl_message_body;
%ignore pl_request_body;

%native(release) int pl_lua_release(lua_State *L);
%native(message_body) int pl_lua_message_body(lua_State *L);
%native(request_body) int pl_lua_request_body(lua_State *L);
%native(last_error) int pl_lua_last_error(lua_State *L);
%native(client_new) int pl_lua_client_new(lua_State *L);
%native(renewer_new) int pl_lua_renewer_new(lua_State *L);
%native(run_new) int pl_lua_run_new(lua_State *L);
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
%native(schedule_new) int pl_lua_schedule_new(lua_State *L);
%native(schedule_add) int pl_lua_schedule_add(lua_State *L);
%native(schedule_remove) int pl_lua_schedule_remove(lua_State *L);
%native(schedule_pop) int pl_lua_schedule_pop(lua_State *L);
%native(schedule_renewed) int pl_lua_schedule_renewed(lua_State *L);
%native(schedule_failed) int pl_lua_schedule_failed(lua_State *L);
%native(schedule_note_answer) int pl_lua_schedule_note_answer(lua_State *L);
%native(schedule_margin) int pl_lua_schedule_margin(lua_State *L);
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

/* Every native of the module closes over the two handle metatables (bindings/lua/handles.c). */
%init %{
  pl_lua_upvalues(L);
%}
