/* pl_lua.h — the Lua module's hand-written glue (the .c files here), shared with the SWIG
 * wrapper that bindings/lua.i generates.
 *
 * SWIG generates the wrappers of the C API (peeklock.h through bindings/peeklock.i); this
 * glue is what it cannot: the handle userdata and its metatables (handles.c), received
 * messages as Lua tables (messages.c), the outgoing-message builder and the blocking
 * client's hot methods (outgoing.c), the request/response pieces of the cosocket driver
 * peeklock.resty (requests.c) and its renewal schedule (schedule.c), and the options tables
 * of client_new / renewer_new (options.c), and the stats and tallies structs as tables
 * (stats.c). Each native below is registered by bindings/lua.i (%native). */
#ifndef PL_LUA_H
#define PL_LUA_H

#include <stdint.h>
#include <lua.h>
#include <lauxlib.h>
#include "peeklock.h"

#if LUA_VERSION_NUM >= 502
#define pl_lua_objlen(L, i) lua_rawlen(L, i)
#else
#define pl_lua_objlen(L, i) lua_objlen(L, i)
#endif

/* ---- handles (handles.c) ---------------------------------------------------------- */

/* What a handle holds: its type's name (as errors and tostring show it) and its free. */
typedef struct pl_lua_kind {
    const char *name;
    void (*free)(void *p);
} pl_lua_kind;

extern const pl_lua_kind pl_lua_kind_pl_connstr, pl_lua_kind_pl_client, pl_lua_kind_pl_outgoing,
    pl_lua_kind_pl_batch, pl_lua_kind_pl_message, pl_lua_kind_pl_renewer, pl_lua_kind_pl_event,
    pl_lua_kind_pl_request, pl_lua_kind_pl_response, pl_lua_kind_pl_run;

/* A handle: the userdata of every C object the module hands out. own: freed with the
 * handle (a borrowed one, pl_event_message's, is not); ptr: NULL once freed. */
typedef struct pl_lua_handle {
    void *ptr;
    const pl_lua_kind *kind;
    int own;
} pl_lua_handle;

/* Every native of the module is a closure whose upvalues 1 and 2 are the two handle
 * metatables (the live one, with __gc, and the freed one): see pl_lua_upvalues. */
#define PL_LUA_MT       lua_upvalueindex(1)
#define PL_LUA_FREED_MT lua_upvalueindex(2)

/* The module's entry point (handles.c): SWIG's own, renamed by bindings/lua.i, without
 * the globals it sets. */
int pl_lua_swig_open(lua_State *L);
/* At load, with the module table on top: makes every C function of it a native. */
void pl_lua_upvalues(lua_State *L);

/* The handle at idx if it is one of ours (live or freed), else NULL. */
pl_lua_handle *pl_lua_handle_at(lua_State *L, int idx);
/* The pointer of the handle at idx when it is nil (NULL) or a handle of kind k (freed:
 * NULL); else -1 with an error message pushed. */
int pl_lua_arg(lua_State *L, int idx, const pl_lua_kind *k, void **out, const char *fn, int argnum);
/* The pointer of the live handle of kind k at idx; raises otherwise. */
void *pl_lua_check(lua_State *L, int idx, const pl_lua_kind *k, const char *fn);
/* The type name of the value at idx for an argument error (a handle: its kind's). */
const char *pl_lua_typename(lua_State *L, int idx);
/* Pushes a "file:line: " prefixed, formatted error message (SWIG's argument errors). */
void pl_lua_pusherror(lua_State *L, const char *fmt, ...);

/* Pushes ptr as a handle of kind k (owned or borrowed), nil for NULL. */
void pl_lua_push_handle(lua_State *L, void *ptr, const pl_lua_kind *k, int own);
/* Pushes an empty handle: made before the C object it is to own, so that handing the
 * object out (pl_lua_fill_handle) cannot fail. */
pl_lua_handle *pl_lua_new_handle(lua_State *L);
/* Makes the empty handle u at idx own ptr (or replaces it with nil for NULL). */
void pl_lua_fill_handle(lua_State *L, int idx, pl_lua_handle *u, void *ptr, const pl_lua_kind *k);

/* Numbers: an int64_t from any number (integers as they are on Lua 5.3+), and pushed
 * as an integer where Lua has them. */
int64_t pl_lua_toint64(lua_State *L, int idx);
/* The number at idx when it is an integer in lo..hi: 1 and *out, else 0 (a fraction, NaN,
 * an infinity or out of range, which a cast to a C integer would get wrong). */
int pl_lua_integer_in(lua_State *L, int idx, int64_t lo, int64_t hi, int64_t *out);
void pl_lua_pushint64(lua_State *L, int64_t v);
/* The string at idx when C can take it whole (no NUL byte in it), else NULL. */
const char *pl_lua_whole(lua_State *L, int idx);
/* The core's last refusal (PL_EINVAL) without the parameter name that opens it. */
const char *pl_lua_reason(void);

int pl_lua_release(lua_State *L);
int pl_lua_key(lua_State *L);
int pl_lua_alive(lua_State *L);
int pl_lua_set_drop_hook(lua_State *L);
int pl_lua_last_error(lua_State *L);

/* ---- received messages (messages.c) ------------------------------------------------ */

/* Pushes a message of lua/peeklock.lua: setmetatable({ _h = handle, _client = client },
 * methods), the keys "_h" and "_client" at key_h and key_client (stack indexes). */
void pl_lua_push_message(lua_State *L, int client, int handle, int methods, int key_h, int key_client);

int pl_lua_message_body(lua_State *L);
int pl_lua_message_properties(lua_State *L);
int pl_lua_message_indexer(lua_State *L);
int pl_lua_message_wrapper(lua_State *L);
int pl_lua_message_ref(lua_State *L);
int pl_lua_mark_lost(lua_State *L);
int pl_lua_stat_request(lua_State *L);

/* ---- outgoing messages and the blocking client's methods (outgoing.c) --------------- */

int pl_lua_outgoing_from(lua_State *L);
int pl_lua_request_send_from(lua_State *L);
int pl_lua_client_methods(lua_State *L);

/* ---- the cosocket driver's requests and answers (requests.c) ------------------------ */

int pl_lua_request_body(lua_State *L);
int pl_lua_request_parts(lua_State *L);
int pl_lua_request_head(lua_State *L);
int pl_lua_response_from(lua_State *L);
int pl_lua_result_from(lua_State *L);
int pl_lua_outcome_new(lua_State *L);
int pl_lua_outcome_report(lua_State *L);
int pl_lua_fence_enter(lua_State *L);
int pl_lua_fence_leave(lua_State *L);

/* ---- the renewal schedule for the cosocket driver (schedule.c) --------------------- */

int pl_lua_schedule_new(lua_State *L);
int pl_lua_schedule_add(lua_State *L);
int pl_lua_schedule_remove(lua_State *L);
int pl_lua_schedule_pop(lua_State *L);
int pl_lua_schedule_renewed(lua_State *L);
int pl_lua_schedule_failed(lua_State *L);
int pl_lua_schedule_note_answer(lua_State *L);
int pl_lua_schedule_margin(lua_State *L);

/* ---- options tables (options.c) ----------------------------------------------------- */

int pl_lua_client_new(lua_State *L);
int pl_lua_renewer_new(lua_State *L);
/* run_new(now_ms, opts) -> rc, run */
int pl_lua_run_new(lua_State *L);

/* ---- stats and tallies out (stats.c) --------------------------------------------- */

/* Push the table of a struct's fields (bindings/pl_fields.h) by name. */
void pl_lua_push_client_stats(lua_State *L, const pl_client_stats *s);
void pl_lua_push_renewer_stats(lua_State *L, const pl_renewer_stats *s);
void pl_lua_push_run_tallies(lua_State *L, const pl_run_tallies *s);

#endif
