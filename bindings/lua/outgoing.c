/* outgoing.c — outgoing messages built from Lua values in one call (their checks and
 * setters, in the options table's own order), and the blocking client's hot methods
 * (send, peek_lock, receive_and_delete, and _settle behind a message's renew, abandon and
 * complete), each one C call from the caller's line to the core and back. */
#include <math.h>
#include <stdarg.h>
#include <string.h>
#include "pl_lua.h"

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
enum {
    PL_OPT_BODY,
    PL_OPT_CONTENT_TYPE,
    PL_OPT_TTL,
    PL_OPT_SCHEDULED,
    PL_OPT_PERSIST,
    PL_OPT_RESEND,
    PL_OPT_PROPS
};
/* The options other than the BrokerProperties string fields, which are the core's one
 * table (pl_broker_field_arg/_name, csrc/message.c). */
#define PL_LUA_OPT(key, kind)                                                                                \
    {                                                                                                        \
        key, sizeof key - 1, kind                                                                            \
    }
static const struct {
    const char *key;
    size_t len;
    int kind;
} pl_lua_options[] = {
    PL_LUA_OPT("body", PL_OPT_BODY),
    PL_LUA_OPT("content_type", PL_OPT_CONTENT_TYPE),
    PL_LUA_OPT("time_to_live", PL_OPT_TTL),
    PL_LUA_OPT("scheduled_enqueue_time", PL_OPT_SCHEDULED),
    PL_LUA_OPT("force_persistence", PL_OPT_PERSIST),
    PL_LUA_OPT("resend", PL_OPT_RESEND),
    PL_LUA_OPT("properties", PL_OPT_PROPS),
};
#undef PL_LUA_OPT

/* The index of the core's broker field whose binding name is key (klen bytes, NULs
 * included), or -1. The first byte is compared before any length. */
static int pl_lua_broker_field(const char *key, size_t klen)
{
    int i, n = pl_broker_field_count();
    for (i = 0; i < n; i++) {
        const char *arg = pl_broker_field_arg(i);
        if (arg[0] == key[0] && strlen(arg) == klen && memcmp(arg, key, klen) == 0) return i;
    }
    return -1;
}

/* An argument error found while building: its kind ("option", "unknown", "name",
 * "property"), the stack slots of the key and value at fault (0: none), what was expected. */
typedef struct {
    const char *kind;
    int key, val;
    const char *what;
} pl_lua_bad;

/* Records an argument error about the key and value on top of the stack; returns 1. */
static int pl_lua_set_bad(lua_State *L, pl_lua_bad *bad, const char *kind, int with_val, const char *what)
{
    bad->kind = kind;
    bad->key = lua_gettop(L) - 1;
    bad->val = with_val ? lua_gettop(L) : 0;
    bad->what = what;
    return 1;
}

/* rc of a setter: the core's refusal of the option's value (PL_EINVAL) as an argument
 * error with the core's words ("value", what: its message), any other rc as it is. */
static int pl_lua_set_value(lua_State *L, pl_lua_bad *bad, int rc)
{
    if (rc != PL_EINVAL) return rc;
    return pl_lua_set_bad(L, bad, "value", 0, pl_lua_reason());
}

/* Pushes the results of an argument error: false, kind, key[, what][, value]. */
static int pl_lua_push_bad(lua_State *L, const pl_lua_bad *bad)
{
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
static int pl_lua_integer(lua_State *L, int idx, int64_t *out)
{
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
static int pl_lua_add_properties(lua_State *L, pl_outgoing *m, int idx, int mt, int unix_key, pl_lua_bad *bad)
{
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
            if (pl_lua_integer(L, -1, &iv))
                rc = pl_outgoing_add_int(m, name, iv);
            else
                rc = pl_outgoing_add_double(m, name, (double)lua_tonumber(L, -1));
            break;
        default: {
            int is_dt = 0;
            if (lua_getmetatable(L, -1)) {
                is_dt = lua_rawequal(L, -1, mt);
                lua_pop(L, 1);
            }
            if (!is_dt) return pl_lua_set_bad(L, bad, "property", 1, NULL);
            lua_pushvalue(L, unix_key);
            lua_rawget(L, -2);
            /* peeklock.datetime checked its type, but a table's field can be changed
             * afterwards; the value (whole seconds, 1970..9999) is the core's to refuse */
            if (lua_type(L, -1) != LUA_TNUMBER) {
                lua_pop(L, 1);
                return pl_lua_set_bad(L, bad, "datetime", 0, NULL);
            }
            rc = pl_outgoing_add_datetime(m, name, (double)lua_tonumber(L, -1));
            lua_pop(L, 1);
        }
        }
        lua_pop(L, 1);
    }
    if (rc != 0) lua_pop(L, 1); /* the key lua_next left */
    return rc;
}

/* Sets one option (key and value on top of the stack) on m: 0, a negative rc, or 1 with *bad set. */
static int pl_lua_set_option(lua_State *L, pl_outgoing *m, int mt, int unix_key, pl_lua_bad *bad)
{
    size_t klen = 0;
    const char *key = lua_type(L, -2) == LUA_TSTRING ? lua_tolstring(L, -2, &klen) : NULL;
    int t = lua_type(L, -1);
    size_t i, n = sizeof pl_lua_options / sizeof pl_lua_options[0];
    int f;
    if (!key) return pl_lua_set_bad(L, bad, "unknown", 0, NULL);
    /* by length first: one memcmp for most keys (and a key with a NUL in it matches none) */
    for (i = 0; i < n; i++)
        if (klen == pl_lua_options[i].len && memcmp(key, pl_lua_options[i].key, klen) == 0) break;
    if (i == n) {
        if ((f = pl_lua_broker_field(key, klen)) < 0) return pl_lua_set_bad(L, bad, "unknown", 0, NULL);
        if (t != LUA_TSTRING) return pl_lua_set_bad(L, bad, "option", 1, "string");
        if (!pl_lua_whole(L, -1)) return pl_lua_set_bad(L, bad, "option", 1, "string without NUL bytes");
        return pl_lua_set_value(L, bad,
                                pl_outgoing_set_broker(m, pl_broker_field_name(f), lua_tostring(L, -1)));
    }
    switch (pl_lua_options[i].kind) {
    case PL_OPT_BODY: return 0;
    case PL_OPT_CONTENT_TYPE:
        if (t != LUA_TSTRING) return pl_lua_set_bad(L, bad, "option", 1, "string");
        if (!pl_lua_whole(L, -1)) return pl_lua_set_bad(L, bad, "option", 1, "string without NUL bytes");
        return pl_lua_set_value(L, bad, pl_outgoing_set_content_type(m, lua_tostring(L, -1)));
    case PL_OPT_TTL:
        if (t != LUA_TNUMBER) return pl_lua_set_bad(L, bad, "option", 1, "number");
        return pl_lua_set_value(L, bad, pl_outgoing_set_time_to_live(m, (double)lua_tonumber(L, -1)));
    case PL_OPT_SCHEDULED: /* the range and the rounding are the core's */
        if (t != LUA_TNUMBER) return pl_lua_set_bad(L, bad, "option", 1, "Unix time (number)");
        return pl_lua_set_value(L, bad,
                                pl_outgoing_set_scheduled_enqueue_time(m, (double)lua_tonumber(L, -1)));
    case PL_OPT_PERSIST:
        if (t != LUA_TBOOLEAN) return pl_lua_set_bad(L, bad, "option", 1, "boolean");
        return pl_outgoing_set_force_persistence(m, lua_toboolean(L, -1));
    case PL_OPT_RESEND:
        if (t != LUA_TBOOLEAN) return pl_lua_set_bad(L, bad, "option", 1, "boolean");
        return pl_outgoing_set_resend(m, lua_toboolean(L, -1));
    default: /* PL_OPT_PROPS */
        if (t != LUA_TTABLE) return pl_lua_set_bad(L, bad, "option", 1, "table");
        return pl_lua_add_properties(L, m, lua_gettop(L), mt, unix_key, bad);
    }
}

/* Builds the message of (body, opts, datetime_mt) at b, b + 1, b + 2: 0 with *out set,
 * a negative rc, or 1 with *bad set (nothing built in the last two cases). */
static int pl_lua_build(lua_State *L, int b, pl_outgoing **out, pl_lua_bad *bad)
{
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
            if (rc != 0) {
                pl_outgoing_free(m);
                return rc;
            }
            lua_pop(L, 1);
        }
    }
    *out = m;
    return 0;
}

/* The results of pl_lua_build when it built nothing. */
static int pl_lua_build_failed(lua_State *L, int rc, const pl_lua_bad *bad)
{
    if (rc > 0) return pl_lua_push_bad(L, bad);
    lua_pushnil(L);
    lua_pushinteger(L, rc);
    return 2;
}

int pl_lua_outgoing_from(lua_State *L)
{
    pl_outgoing *m;
    pl_lua_bad bad = {NULL, 0, 0, NULL};
    pl_lua_handle *u;
    int rc;
    lua_settop(L, 3);
    u = pl_lua_new_handle(L);
    rc = pl_lua_build(L, 1, &m, &bad);
    if (rc != 0) return pl_lua_build_failed(L, rc, &bad);
    pl_lua_fill_handle(L, 4, u, m, &pl_lua_kind_pl_outgoing);
    lua_settop(L, 4);
    return 1;
}

int pl_lua_request_send_from(lua_State *L)
{
    pl_client *c = (pl_client *)pl_lua_check(L, 1, &pl_lua_kind_pl_client, "request_send_from");
    const char *entity = luaL_checkstring(L, 2);
    pl_outgoing *m;
    pl_request *req = NULL;
    pl_lua_bad bad = {NULL, 0, 0, NULL};
    pl_lua_handle *u;
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
    pl_lua_fill_handle(L, 7, u, req, &pl_lua_kind_pl_request);
    lua_settop(L, 7);
    return 2;
}

/* client_methods(Client, Message, DateTime, fail, outgoing_error, closed, raise, last_error,
 * freed) -> send, peek_lock, receive_and_delete, _settle: lua/peeklock.lua's Client methods
 * of those names, each one C call from the caller's line to the core and back (no Lua frames
 * for the self, argument and option checks, which cost more than the wrappers they guard).
 * They check and word as the Lua checks did. Lua code runs inside them only to read self._h
 * and opts.timeout (through any __index; _settle reads its fields raw), to make error values
 * (fail(rc, op) -> nil, err, or the core's PL_EINVAL raised; last_error(rc, op) -> err;
 * closed(op) -> err; freed(op) -> err) and to raise (raise(msg),
 * outgoing_error(op, false, kind, key, ...):
 * at the user's line, past peeklock's own frames). A yield inside any of those fails
 * ("attempt to yield across a C-call boundary"): these are the blocking client's
 * methods (peeklock.resty has its own of these names). */
#define PL_LUA_UV_CLIENT         lua_upvalueindex(3)
#define PL_LUA_UV_MESSAGE        lua_upvalueindex(4)
#define PL_LUA_UV_DATETIME       lua_upvalueindex(5)
#define PL_LUA_UV_FAIL           lua_upvalueindex(6)
#define PL_LUA_UV_OUTGOING_ERROR lua_upvalueindex(7)
#define PL_LUA_UV_CLOSED         lua_upvalueindex(8)
#define PL_LUA_UV_RAISE          lua_upvalueindex(9)
#define PL_LUA_UV_LAST_ERROR     lua_upvalueindex(10)
#define PL_LUA_UV_FREED          lua_upvalueindex(11)
#define PL_LUA_UV_KEY_H          lua_upvalueindex(12)
#define PL_LUA_UV_KEY_CLIENT     lua_upvalueindex(13)
#define PL_LUA_UV_KEY_RENEWER    lua_upvalueindex(14)
#define PL_LUA_METHOD_ARGS       9 /* client_methods' arguments: upvalues 3 to 11 */

/* Raises the formatted message through peeklock.lua's raise (at the user's line). */
static int pl_lua_raise(lua_State *L, const char *fmt, ...)
{
    va_list ap;
    lua_pushvalue(L, PL_LUA_UV_RAISE);
    va_start(ap, fmt);
    lua_pushvfstring(L, fmt, ap);
    va_end(ap);
    lua_call(L, 1, 0);
    return lua_error(L); /* not reached: raise raises */
}

/* The "bad argument" error of peeklock.lua's argerror. */
static int pl_lua_argerror(lua_State *L, const char *fname, int n, const char *what, int idx)
{
    return pl_lua_raise(L, "bad argument #%d to '%s' (%s expected, got %s)", n, fname, what,
                        luaL_typename(L, idx));
}

/* Pushes nil, closed(fname) or nil, freed(fname) (which: the function's upvalue): 2 results. */
static int pl_lua_error_value(lua_State *L, int which, const char *fname)
{
    lua_pushnil(L);
    lua_pushvalue(L, which);
    lua_pushstring(L, fname);
    lua_call(L, 1, 1);
    return 2;
}

static int pl_lua_closed(lua_State *L, const char *fname)
{
    return pl_lua_error_value(L, PL_LUA_UV_CLOSED, fname);
}

/* Self (slot 1) as peeklock.lua's check_client: raises when self is no client. Else pushes
 * self._h and returns it, the handle of a live pl_client (left on the stack, so it stays
 * alive; its ptr is NULL once the client is closed, which Lua code run later, an __index or
 * a finalizer, may do: check it again before use); NULL with nil, err pushed (2 results)
 * when the client was closed. */
static pl_lua_handle *pl_lua_self_client(lua_State *L, const char *fname)
{
    pl_lua_handle *u;
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
    u = pl_lua_handle_at(L, -1);
    if (!u || !u->ptr || u->kind != &pl_lua_kind_pl_client)
        pl_lua_raise(L, "%s: the client's handle is not a live pl_client", fname);
    return u;
}

/* fail(rc, fname)'s results: nil, err, or (PL_EINVAL) the core's refusal raised at the
 * user's line. */
static int pl_lua_fail(lua_State *L, int rc, const char *fname)
{
    lua_pushvalue(L, PL_LUA_UV_FAIL);
    lua_pushinteger(L, rc);
    lua_pushstring(L, fname);
    lua_call(L, 2, 2);
    return 2;
}

/* client:send(entity, body, opts) -> true | nil, err */
static int pl_lua_client_send(lua_State *L)
{
    pl_lua_bad bad = {NULL, 0, 0, NULL};
    pl_outgoing *m;
    pl_lua_handle *u;
    int rc;
    lua_settop(L, 4);
    lua_pushvalue(L, PL_LUA_UV_DATETIME); /* 5: pl_lua_build's (body, opts, datetime_mt) are 3..5 */
    if (!(u = pl_lua_self_client(L, "send"))) return 2; /* 6: the client's handle */
    if (lua_type(L, 2) != LUA_TSTRING) return pl_lua_argerror(L, "send", 1, "string", 2);
    if (!pl_lua_whole(L, 2)) return pl_lua_argerror(L, "send", 1, "string without NUL bytes", 2);
    if (lua_type(L, 3) != LUA_TSTRING) return pl_lua_argerror(L, "send", 2, "string body", 3);
    if (!lua_isnil(L, 4) && lua_type(L, 4) != LUA_TTABLE)
        return pl_lua_argerror(L, "send", 3, "table or nil", 4);
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
static int pl_lua_client_receive(lua_State *L, const char *fname, int peek)
{
    pl_message *m = NULL;
    pl_lua_handle *u, *mu;
    lua_Number timeout;
    int rc, t = PL_DEFAULT_RECEIVE_TIMEOUT_S;
    lua_settop(L, 3);
    if (!(u = pl_lua_self_client(L, fname))) return 2; /* 4: the client's handle */
    if (lua_type(L, 2) != LUA_TSTRING) return pl_lua_argerror(L, fname, 1, "string", 2);
    if (!pl_lua_whole(L, 2)) return pl_lua_argerror(L, fname, 1, "string without NUL bytes", 2);
    if (!lua_isnil(L, 3)) {
        if (lua_type(L, 3) != LUA_TTABLE) return pl_lua_argerror(L, fname, 2, "table or nil", 3);
        lua_pushnil(L);
        while (lua_next(L, 3)) { /* timeout is the one option: a misspelt one is refused, not ignored */
            size_t klen = 0;
            const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tolstring(L, -2, &klen) : NULL;
            if (!k || klen != 7 || memcmp(k, "timeout", 7) != 0) {
                lua_getglobal(L, "tostring"); /* the key as tostring shows it */
                lua_pushvalue(L, -3);
                lua_call(L, 1, 1);
                return pl_lua_raise(L, "unknown option '%s' to '%s'", lua_tostring(L, -1), fname);
            }
            lua_pop(L, 1);
        }
        lua_getfield(L, 3, "timeout");
        if (!lua_isnil(L, -1)) {
            timeout = lua_tonumber(L, -1);
            if (lua_type(L, -1) != LUA_TNUMBER) /* NaN goes on: the core refuses it in its words */
                return pl_lua_raise(L, "bad option 'timeout' to '%s' (number expected, got %s)", fname,
                                    luaL_typename(L, -1));
            /* the core's whole seconds (a fraction rounded up) or its refusal */
            if ((t = pl_timeout_seconds((double)timeout)) < 0)
                return pl_lua_raise(L, "bad option 'timeout' to '%s' (%s)", fname, pl_lua_reason());
        }
        lua_settop(L, 4);
    }
    mu = pl_lua_new_handle(L); /* 5: made before the message, so handing it out cannot fail */
    if (!u->ptr) return pl_lua_closed(L, fname); /* closed by opts' __index or a finalizer */
    rc = peek ? pl_peek_lock(&m, (pl_client *)u->ptr, lua_tostring(L, 2), t)
              : pl_receive_and_delete(&m, (pl_client *)u->ptr, lua_tostring(L, 2), t);
    pl_lua_fill_handle(L, 5, mu, m, &pl_lua_kind_pl_message);
    if (rc < 0) return pl_lua_fail(L, rc, fname);
    if (rc == PL_EMPTY || !m) {
        lua_pushnil(L);
        lua_pushnil(L);
        return 2;
    }
    pl_lua_push_message(L, 1, 5, PL_LUA_UV_MESSAGE, PL_LUA_UV_KEY_H, PL_LUA_UV_KEY_CLIENT);
    return 1;
}

static int pl_lua_client_peek_lock(lua_State *L)
{
    return pl_lua_client_receive(L, "peek_lock", 1);
}
static int pl_lua_client_receive_and_delete(lua_State *L)
{
    return pl_lua_client_receive(L, "receive_and_delete", 0);
}

/* The live handle of kind k in slot idx (a value read from a field), else raises as the
 * generated wrappers' check does. */
static void *pl_lua_live(lua_State *L, int idx, const pl_lua_kind *k, const char *fname, int argnum)
{
    pl_lua_handle *u = pl_lua_handle_at(L, idx);
    if (!u || !u->ptr || u->kind != k)
        luaL_error(L, "%s: argument %d must be a live %s (got nil or a freed handle)", fname, argnum,
                   k->name);
    return u->ptr;
}

/* client:_settle(msg, op) -> true | nil, err: op ("renew", "abandon" or "complete") on
 * msg through the client, its renewal dropped first unless op renews (lua/peeklock.lua's
 * Message methods and with_lock end here). The blocking client's _h and _renewer and a
 * message's _h are raw fields (peeklock.lua sets them; _renewer is absent until the first
 * with_lock): read raw. */
static int pl_lua_client_settle(lua_State *L)
{
    static const char *const ops[] = {"renew", "abandon", "complete"};
    static const char *const wrapped[] = {"pl_renew_lock", "pl_unlock", "pl_complete"};
    pl_client *c;
    pl_message *m;
    size_t len = 0;
    const char *name;
    int op, rc;
    lua_settop(L, 3);
    luaL_checktype(L, 1, LUA_TTABLE);
    luaL_checktype(L, 2, LUA_TTABLE);
    name = lua_tolstring(L, 3, &len);
    for (op = 0; op < 3 && !(name && strlen(ops[op]) == len && memcmp(name, ops[op], len) == 0); op++) {}
    if (op == 3) return luaL_argerror(L, 3, "\"renew\", \"abandon\" or \"complete\" expected");
    lua_pushvalue(L, PL_LUA_UV_KEY_H);
    lua_rawget(L, 1); /* 4: self._h */
    if (!lua_toboolean(L, 4)) return pl_lua_error_value(L, PL_LUA_UV_CLOSED, ops[op]);
    lua_pushvalue(L, PL_LUA_UV_KEY_H);
    lua_rawget(L, 2); /* 5: msg._h */
    if (!lua_toboolean(L, 5)) return pl_lua_error_value(L, PL_LUA_UV_FREED, ops[op]);
    m = (pl_message *)pl_lua_live(L, 5, &pl_lua_kind_pl_message, wrapped[op], 2);
    if (op != 0) {
        lua_pushvalue(L, PL_LUA_UV_KEY_RENEWER);
        lua_rawget(L, 1); /* 6: self._renewer */
        if (lua_toboolean(L, 6))
            pl_renewer_remove(
                (pl_renewer *)pl_lua_live(L, 6, &pl_lua_kind_pl_renewer, "pl_renewer_remove", 1), m);
    }
    c = (pl_client *)pl_lua_live(L, 4, &pl_lua_kind_pl_client, wrapped[op], 1);
    rc = op == 0 ? pl_renew_lock(c, m) : op == 1 ? pl_unlock(c, m) : pl_complete(c, m);
    if (rc < 0) {
        lua_pushnil(L);
        lua_pushvalue(L, PL_LUA_UV_LAST_ERROR);
        lua_pushinteger(L, rc);
        lua_pushstring(L, ops[op]);
        lua_call(L, 2, 1);
        return 2;
    }
    lua_pushboolean(L, 1);
    return 1;
}

int pl_lua_client_methods(lua_State *L)
{
    static const lua_CFunction methods[] = {pl_lua_client_send, pl_lua_client_peek_lock,
                                            pl_lua_client_receive_and_delete, pl_lua_client_settle};
    size_t i;
    int k;
    for (k = 1; k <= 3; k++) luaL_checktype(L, k, LUA_TTABLE);
    for (k = 4; k <= PL_LUA_METHOD_ARGS; k++) luaL_checktype(L, k, LUA_TFUNCTION);
    lua_settop(L, PL_LUA_METHOD_ARGS);
    for (i = 0; i < sizeof methods / sizeof methods[0]; i++) {
        lua_pushvalue(L, PL_LUA_MT);
        lua_pushvalue(L, PL_LUA_FREED_MT);
        for (k = 1; k <= PL_LUA_METHOD_ARGS; k++) lua_pushvalue(L, k);
        lua_pushliteral(L, "_h");
        lua_pushliteral(L, "_client");
        lua_pushliteral(L, "_renewer");
        lua_pushcclosure(L, methods[i], PL_LUA_METHOD_ARGS + 5);
    }
    return (int)(sizeof methods / sizeof methods[0]);
}
