/* A minimal C-API binding of bench.lua's net calls, for bench/lua/run.py's floor rows.
 *
 *   local floor = require "floor"      -- built by run.py for Lua 5.4 and for LuaJIT
 *   floor.open(CONNSTR)
 *   assert(floor.send(entity, body, opts))
 *   local msg, body, message_id, properties = floor.peek_lock(entity, peek_opts)
 *   assert(floor.complete(msg))
 *
 * One C call per operation, as in bench.lua's net loop: the same arguments are read
 * (body, opts.label, opts.properties, peek_opts.timeout), the C API does the request, and
 * peek_lock hands back what the loop reads of the message (body, id, the properties typed
 * as peeklock types them) with the message as a light userdata. No message object,
 * methods, finalizer, error values or argument checks beyond the Lua API's own: a message
 * dropped without complete leaks, and completing one twice frees it twice. Less than any
 * usable binding of these calls on the Lua C API does, so its distance from C is the
 * interpreter's share on this machine. */
#include <lauxlib.h>
#include <lua.h>
#include <stdint.h>

#include "peeklock.h"

static pl_client *client;

static int fail(lua_State *L, const char *what, int rc)
{
    return luaL_error(L, "floor: %s failed: %d %s", what, rc, pl_error_last()->message);
}

static int f_open(lua_State *L)
{
    const char *conn = luaL_checkstring(L, 1);
    pl_client_free(client);
    client = NULL;
    int rc = pl_client_new_from_connection_string(&client, conn);
    if (rc) return fail(L, "client", rc);
    return 0;
}

/* Adds the property at the top of the stack (value) under the key below it; 0 or PL_E*. */
static int add_property(lua_State *L, pl_outgoing *m)
{
    if (lua_type(L, -2) != LUA_TSTRING) return PL_EINVAL;
    const char *name = lua_tostring(L, -2);
    if (lua_type(L, -1) == LUA_TNUMBER) {
#if LUA_VERSION_NUM >= 503
        /* as peeklock: an integer is Int64, a float (3.0 too) a Double */
        if (lua_isinteger(L, -1)) return pl_outgoing_add_int(m, name, (int64_t)lua_tointeger(L, -1));
        return pl_outgoing_add_double(m, name, lua_tonumber(L, -1));
#else
        double d = lua_tonumber(L, -1); /* LuaJIT: whole numbers within 2^53 are Int64 */
        if (d > -9007199254740992.0 && d < 9007199254740992.0 && d == (double)(int64_t)d)
            return pl_outgoing_add_int(m, name, (int64_t)d);
        return pl_outgoing_add_double(m, name, d);
#endif
    }
    if (lua_type(L, -1) != LUA_TSTRING) return PL_EINVAL;
    return pl_outgoing_add_string(m, name, lua_tostring(L, -1));
}

/* send(entity, body, opts) -> true. Every Lua read that can raise (a field through a
 * metamethod) happens before the outgoing message exists; only raw reads after it. */
static int f_send(lua_State *L)
{
    const char *entity = luaL_checkstring(L, 1);
    size_t blen;
    const char *body = luaL_checklstring(L, 2, &blen);
    luaL_checktype(L, 3, LUA_TTABLE);
    lua_getfield(L, 3, "label");      /* index 4 */
    lua_getfield(L, 3, "properties"); /* index 5 */
    pl_outgoing *m = NULL;
    int rc = pl_outgoing_new(&m, body, blen);
    if (!rc && lua_type(L, 4) == LUA_TSTRING) rc = pl_outgoing_set_broker(m, "Label", lua_tostring(L, 4));
    if (!rc && lua_type(L, 5) == LUA_TTABLE) {
        lua_pushnil(L);
        while (lua_next(L, 5)) {
            rc = add_property(L, m);
            lua_pop(L, 1);
            if (rc) {
                lua_pop(L, 1);
                break;
            } /* the key lua_next left */
        }
    }
    if (!rc) rc = pl_send(client, entity, m);
    pl_outgoing_free(m);
    if (rc) return fail(L, "send", rc);
    lua_pushboolean(L, 1);
    return 1;
}

static void push_properties(lua_State *L, const pl_message *msg)
{
    size_t n = pl_message_property_count(msg);
    lua_createtable(L, 0, (int)n);
    for (size_t p = 0; p < n; p++) {
        const char *name = pl_message_property_name(msg, p);
        if (!name) continue;
        switch (pl_message_property_type(msg, p)) {
        case PL_PROP_INT: lua_pushinteger(L, (lua_Integer)pl_message_property_int(msg, p)); break;
        case PL_PROP_DOUBLE: lua_pushnumber(L, pl_message_property_double(msg, p)); break;
        case PL_PROP_BOOL: lua_pushboolean(L, pl_message_property_bool(msg, p)); break;
        default: lua_pushstring(L, pl_message_property_string(msg, p));
        }
        lua_setfield(L, -2, name);
    }
}

/* peek_lock(entity, opts) -> message (a light userdata), body, message_id, properties */
static int f_peek_lock(lua_State *L)
{
    const char *entity = luaL_checkstring(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_getfield(L, 2, "timeout");
    int timeout = (int)lua_tointeger(L, -1);
    lua_pop(L, 1);
    pl_message *msg = NULL;
    int rc = pl_peek_lock(&msg, client, entity, timeout);
    if (rc) return fail(L, "peek_lock", rc);
    /* (a memory error in the pushes below would leak msg: a benchmark's risk) */
    lua_pushlightuserdata(L, msg);
    size_t len;
    const char *body = pl_message_body(msg, &len);
    lua_pushlstring(L, body, len);
    lua_pushstring(L, pl_message_id(msg));
    push_properties(L, msg);
    return 4;
}

/* complete(message) -> true: completes the message and frees it */
static int f_complete(lua_State *L)
{
    pl_message *msg = lua_touserdata(L, 1);
    if (!msg) return luaL_argerror(L, 1, "message expected");
    int rc = pl_complete(client, msg);
    pl_message_free(msg);
    if (rc) return fail(L, "complete", rc);
    lua_pushboolean(L, 1);
    return 1;
}

int luaopen_floor(lua_State *L)
{
    lua_newtable(L);
    lua_pushcfunction(L, f_open);
    lua_setfield(L, -2, "open");
    lua_pushcfunction(L, f_send);
    lua_setfield(L, -2, "send");
    lua_pushcfunction(L, f_peek_lock);
    lua_setfield(L, -2, "peek_lock");
    lua_pushcfunction(L, f_complete);
    lua_setfield(L, -2, "complete");
    return 1;
}
