/* handles.c — the module's handles: one userdata per C object, with the "peeklock.handle"
 * metatable, whose __gc and __close both run one idempotent free (pl_lua_release), so a
 * handle is freed exactly once whether the collector or the caller gets there first; and
 * the module's entry point. */
#include <math.h>
#include <stdarg.h>
#include <string.h>
#include "pl_lua.h"
#include "message_int.h"

#define PL_LUA_HANDLE_MT "peeklock.handle"

/* The module's one exported symbol (the rest is built hidden). */
#if defined(__GNUC__)
#define PL_LUA_EXPORT __attribute__((visibility("default")))
#else
#define PL_LUA_EXPORT
#endif

/* Each kind's free: its pl_*_free. */
#define PL_LUA_KIND(T)                                                                                       \
    static void free_##T(void *p)                                                                            \
    {                                                                                                        \
        T##_free((T *)p);                                                                                    \
    }                                                                                                        \
    const pl_lua_kind pl_lua_kind_##T = {#T, free_##T}
PL_LUA_KIND(pl_connstr);
PL_LUA_KIND(pl_client);
PL_LUA_KIND(pl_outgoing);
PL_LUA_KIND(pl_batch);
PL_LUA_KIND(pl_message);
PL_LUA_KIND(pl_renewer);
PL_LUA_KIND(pl_event);
PL_LUA_KIND(pl_request);
PL_LUA_KIND(pl_response);
PL_LUA_KIND(pl_run);
#undef PL_LUA_KIND

/* A handle has one of two metatables: the live one, whose __gc frees the C object, and
 * the one a handle gets once freed, without __gc, so the collector does not call back
 * into a handle that was already freed. Both are made once per Lua state (kept in the
 * registry under these addresses) and given to every native of the module as its
 * upvalues 1 and 2 (pl_lua_upvalues, at load): a handle check is a metatable fetch and
 * two identity compares, no table lookup. Only natives carrying the two upvalues
 * recognise handles (any other C function reads nil there, and so refuses every
 * argument). */
static char mt_key, freed_mt_key, drop_key;

pl_lua_handle *pl_lua_handle_at(lua_State *L, int idx)
{
    int ours;
    if (lua_type(L, idx) != LUA_TUSERDATA || !lua_getmetatable(L, idx)) return NULL;
    ours = lua_rawequal(L, -1, PL_LUA_MT) || lua_rawequal(L, -1, PL_LUA_FREED_MT);
    lua_pop(L, 1);
    return ours ? (pl_lua_handle *)lua_touserdata(L, idx) : NULL;
}

void pl_lua_pusherror(lua_State *L, const char *fmt, ...)
{
    va_list ap;
    luaL_where(L, 1);
    va_start(ap, fmt);
    lua_pushvfstring(L, fmt, ap);
    va_end(ap);
    lua_concat(L, 2);
}

int pl_lua_arg(lua_State *L, int idx, const pl_lua_kind *k, void **out, const char *fn, int argnum)
{
    pl_lua_handle *u;
    if (lua_isnil(L, idx)) {
        *out = NULL;
        return 0;
    }
    u = pl_lua_handle_at(L, idx);
    if (!u) {
        pl_lua_pusherror(L, "%s: argument %d must be a %s, got %s", fn, argnum, k->name,
                         luaL_typename(L, idx));
        return -1;
    }
    if (u->kind != k) {
        pl_lua_pusherror(L, "Error in %s (arg %d), expected '%s *' got '%s *'", fn, argnum, k->name,
                         u->kind->name);
        return -1;
    }
    *out = u->ptr;
    return 0;
}

void *pl_lua_check(lua_State *L, int idx, const pl_lua_kind *k, const char *fn)
{
    void *p = NULL;
    if (lua_isnil(L, idx) || pl_lua_arg(L, idx, k, &p, fn, idx) < 0) {
        luaL_error(L, "%s: argument %d must be a %s", fn, idx, k->name);
        return NULL;
    }
    if (!p) luaL_error(L, "%s: argument %d (%s) has been freed", fn, idx, k->name);
    return p;
}

const char *pl_lua_typename(lua_State *L, int idx)
{
    pl_lua_handle *u = pl_lua_handle_at(L, idx);
    return u ? u->kind->name : luaL_typename(L, idx);
}

/* The one free: frees the C object once, then marks the userdata empty. */
int pl_lua_release(lua_State *L)
{
    pl_lua_handle *u = pl_lua_handle_at(L, 1);
    if (!u) return luaL_error(L, "peeklock.core.release: argument 1 must be a peeklock handle");
    if (u->ptr) {
        void *p = u->ptr;
        u->ptr = NULL;
        if (u->own) {
            u->own = 0;
            u->kind->free(p);
        }
        lua_pushvalue(L, PL_LUA_FREED_MT);
        lua_setmetatable(L, 1);
    }
    return 0;
}

static int handle_tostring(lua_State *L)
{
    pl_lua_handle *u = (pl_lua_handle *)lua_touserdata(L, 1);
    const char *name = u && u->kind ? u->kind->name : "?";
    if (u && u->ptr)
        lua_pushfstring(L, "peeklock.handle<%s>", name);
    else
        lua_pushfstring(L, "peeklock.handle<%s, freed>", name);
    return 1;
}

/* Pushes f as a native of the module: a closure over the two handle metatables. */
static void push_native(lua_State *L, lua_CFunction f)
{
    lua_pushlightuserdata(L, (void *)&mt_key);
    lua_rawget(L, LUA_REGISTRYINDEX);
    lua_pushlightuserdata(L, (void *)&freed_mt_key);
    lua_rawget(L, LUA_REGISTRYINDEX);
    lua_pushcclosure(L, f, 2);
}

/* The collector's free (the live metatable's __gc): a message handle collected while its
 * lock is still held is first handed to the drop hook (core.set_drop_hook) with the
 * client its user value names, which stops its renewal and abandons it, as <close> does
 * (the hook's errors are dropped: a finalizer cannot report them). Then the one free. */
static int handle_gc(lua_State *L)
{
    pl_lua_handle *u = pl_lua_handle_at(L, 1);
    if (u && u->ptr && u->own && u->kind == &pl_lua_kind_pl_message &&
        pl_message_lock_state((const pl_message *)u->ptr) == PL_LOCK_HELD) {
        lua_pushlightuserdata(L, (void *)&drop_key);
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
int pl_lua_set_drop_hook(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TFUNCTION);
    lua_pushlightuserdata(L, (void *)&drop_key);
    lua_pushvalue(L, 1);
    lua_rawset(L, LUA_REGISTRYINDEX);
    return 0;
}

static void fill_mt(lua_State *L, int mt, int with_gc)
{
    if (with_gc) {
        push_native(L, handle_gc);
        lua_setfield(L, mt, "__gc");
    }
    push_native(L, pl_lua_release);
    lua_setfield(L, mt, "__close");
    lua_pushcfunction(L, handle_tostring);
    lua_setfield(L, mt, "__tostring");
    lua_pushliteral(L, PL_LUA_HANDLE_MT);
    lua_setfield(L, mt, "__name");
    lua_pushboolean(L, 0);
    lua_setfield(L, mt, "__metatable");
}

void pl_lua_upvalues(lua_State *L)
{
    int module = lua_gettop(L);
    lua_pushlightuserdata(L, (void *)&mt_key);
    lua_rawget(L, LUA_REGISTRYINDEX);
    if (lua_isnil(L, -1)) {
        lua_pushlightuserdata(L, (void *)&mt_key);
        lua_createtable(L, 0, 5);
        lua_rawset(L, LUA_REGISTRYINDEX);
        lua_pushlightuserdata(L, (void *)&freed_mt_key);
        lua_createtable(L, 0, 5);
        lua_rawset(L, LUA_REGISTRYINDEX);
        lua_pushlightuserdata(L, (void *)&mt_key);
        lua_rawget(L, LUA_REGISTRYINDEX);
        lua_pushlightuserdata(L, (void *)&freed_mt_key);
        lua_rawget(L, LUA_REGISTRYINDEX);
        fill_mt(L, module + 2, 1);
        fill_mt(L, module + 3, 0);
    }
    lua_settop(L, module);
    lua_pushnil(L);
    while (lua_next(L, module)) {
        lua_CFunction f = lua_tocfunction(L, -1);
        if (f && lua_type(L, -2) == LUA_TSTRING) {
            lua_pushvalue(L, -2);
            push_native(L, f);
            lua_rawset(L, module); /* an existing key: the traversal stays valid */
        }
        lua_pop(L, 1);
    }
}

/* require "peeklock.core": SWIG's loader, which also puts its swig_type and swig_equals
 * functions in the global table; those two are put back as they were, so loading the
 * module changes no global (it is built with -nomoduleglobal: no global of its name). */
PL_LUA_EXPORT int luaopen_peeklock_core(lua_State *L)
{
    static const char *const names[] = {"swig_type", "swig_equals"};
    int i, base, n;
#if LUA_VERSION_NUM >= 502
    lua_pushglobaltable(L);
#else
    lua_pushvalue(L, LUA_GLOBALSINDEX);
#endif
    base = lua_gettop(L);
    for (i = 0; i < 2; i++) lua_getfield(L, base, names[i]);
    n = pl_lua_swig_open(L); /* pushes what it returns (the module) on top */
    for (i = 0; i < 2; i++) {
        lua_pushvalue(L, base + 1 + i);
        lua_setfield(L, base, names[i]);
    }
    return n;
}

void pl_lua_push_handle(lua_State *L, void *ptr, const pl_lua_kind *k, int own)
{
    pl_lua_handle *u;
    if (!ptr) {
        lua_pushnil(L);
        return;
    }
    u = (pl_lua_handle *)lua_newuserdata(L, sizeof *u);
    u->ptr = ptr;
    u->kind = k;
    u->own = own;
    lua_pushvalue(L, PL_LUA_MT);
    lua_setmetatable(L, -2);
}

pl_lua_handle *pl_lua_new_handle(lua_State *L)
{
    pl_lua_handle *u = (pl_lua_handle *)lua_newuserdata(L, sizeof *u);
    u->ptr = NULL;
    u->kind = NULL;
    u->own = 0;
    return u;
}

void pl_lua_fill_handle(lua_State *L, int idx, pl_lua_handle *u, void *ptr, const pl_lua_kind *k)
{
    if (!ptr) {
        lua_pushnil(L);
        lua_replace(L, idx);
        return;
    }
    u->ptr = ptr;
    u->kind = k;
    u->own = 1;
    lua_pushvalue(L, PL_LUA_MT);
    lua_setmetatable(L, idx);
}

/* key(handle) -> lightuserdata of the C pointer (identity across userdata) */
int pl_lua_key(lua_State *L)
{
    pl_lua_handle *u = pl_lua_handle_at(L, 1);
    if (!u) return luaL_error(L, "key: argument 1 must be a peeklock handle");
    if (!u->ptr)
        lua_pushnil(L);
    else
        lua_pushlightuserdata(L, u->ptr);
    return 1;
}

/* alive(handle) -> true when not yet freed */
int pl_lua_alive(lua_State *L)
{
    pl_lua_handle *u = pl_lua_handle_at(L, 1);
    lua_pushboolean(L, u && u->ptr != NULL);
    return 1;
}

int pl_lua_integer_in(lua_State *L, int idx, int64_t lo, int64_t hi, int64_t *out)
{
    lua_Number v;
#if LUA_VERSION_NUM >= 503
    if (lua_isinteger(L, idx)) {
        lua_Integer i = lua_tointeger(L, idx);
        if (i < lo || i > hi) return 0;
        *out = (int64_t)i;
        return 1;
    }
#endif
    v = lua_tonumber(L, idx);
    /* finite and whole, within int64_t (-2^63 is exact, 2^63 is not in it) before the cast */
    if (!(v == floor(v) && v >= -9223372036854775808.0 && v < 9223372036854775808.0)) return 0;
    if ((int64_t)v < lo || (int64_t)v > hi) return 0;
    *out = (int64_t)v;
    return 1;
}

int64_t pl_lua_toint64(lua_State *L, int idx)
{
#if LUA_VERSION_NUM >= 503
    if (lua_isinteger(L, idx)) return (int64_t)lua_tointeger(L, idx);
#endif
    return (int64_t)lua_tonumber(L, idx);
}

void pl_lua_pushint64(lua_State *L, int64_t v)
{
#if LUA_VERSION_NUM >= 503
    lua_pushinteger(L, (lua_Integer)v);
#else
    lua_pushnumber(L, (lua_Number)v);
#endif
}

const char *pl_lua_whole(lua_State *L, int idx)
{
    size_t n;
    const char *s = lua_tolstring(L, idx, &n);
    return s && memchr(s, 0, n) == NULL ? s : NULL;
}

/* "timeout: must be 0..300 seconds" -> "must be 0..300 seconds" */
const char *pl_lua_reason(void)
{
    const char *msg = pl_error_last()->message, *p;
    if (!msg) return "invalid argument";
    for (p = msg; (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || *p == '_'; p++) {}
    return p > msg && p[0] == ':' && p[1] == ' ' ? p + 2 : msg;
}

/* last_error() -> code, http_status, retryable, message */
int pl_lua_last_error(lua_State *L)
{
    const pl_error *e = pl_error_last();
    lua_pushinteger(L, e->code);
    lua_pushinteger(L, e->http_status);
    lua_pushboolean(L, e->retryable);
    lua_pushstring(L, e->message ? e->message : "");
    return 4;
}
