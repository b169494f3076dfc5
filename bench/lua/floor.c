/* The thinnest Lua binding of bench.lua's net iteration, for bench/lua/run.py's floor rows.
 *
 *   local floor = require "floor"      -- built by run.py for Lua 5.4 and for LuaJIT
 *   floor.open(CONNSTR)
 *   floor.send(entity, body, opts)
 *   local msg, body, message_id, properties = floor.peek_lock(entity, peek_opts)
 *   floor.complete(msg)
 *
 * One C call per operation, as in bench.lua's net loop: the same arguments are read
 * (body, opts.label, opts.properties, peek_opts.timeout), the C API does the request, and
 * peek_lock hands back what the loop reads of the message (body, id, properties as a table
 * of strings) with the message as a light userdata. No message object, methods, finalizer,
 * error values or argument checks beyond the Lua API's own (a message dropped without
 * complete leaks): less than any usable binding of the same calls does, so the distance
 * from C to this row is the language's share. */
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
    int rc = pl_client_new_from_connection_string(&client, luaL_checkstring(L, 1));
    if (rc) return fail(L, "client", rc);
    return 0;
}

/* the outgoing message of body (arg 2) and opts (arg 3), or a Lua error */
static pl_outgoing *outgoing(lua_State *L)
{
    size_t blen;
    const char *body = luaL_checklstring(L, 2, &blen);
    luaL_checktype(L, 3, LUA_TTABLE);
    pl_outgoing *m = NULL;
    int rc = pl_outgoing_new(&m, body, blen);
    lua_getfield(L, 3, "label");
    if (!rc && lua_type(L, -1) == LUA_TSTRING) rc = pl_outgoing_set_broker(m, "Label", lua_tostring(L, -1));
    lua_pop(L, 1);
    lua_getfield(L, 3, "properties");
    if (!rc && lua_type(L, -1) == LUA_TTABLE) {
        lua_pushnil(L);
        while (!rc && lua_next(L, -2)) {
            const char *name = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
            if (!name) {
                rc = PL_EINVAL;
            } else if (lua_type(L, -1) == LUA_TNUMBER) {
                double d = lua_tonumber(L, -1);
                if (d >= -9.2e18 && d <= 9.2e18 && d == (double)(int64_t)d) rc = pl_outgoing_add_int(m, name, (int64_t)d);
                else rc = pl_outgoing_add_double(m, name, d);
            } else {
                rc = pl_outgoing_add_string(m, name, lua_tostring(L, -1));
            }
            lua_pop(L, 1);
        }
        if (rc) lua_pop(L, 1); /* the key lua_next left */
    }
    lua_pop(L, 1);
    if (rc) {
        pl_outgoing_free(m);
        fail(L, "outgoing", rc);
    }
    return m;
}

/* send(entity, body, opts) */
static int f_send(lua_State *L)
{
    const char *entity = luaL_checkstring(L, 1);
    pl_outgoing *m = outgoing(L);
    int rc = pl_send(client, entity, m);
    pl_outgoing_free(m);
    if (rc) return fail(L, "send", rc);
    return 0;
}

/* peek_lock(entity, opts) -> message (a light userdata: nothing frees it but complete),
 * body, message_id, properties */
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
    lua_pushlightuserdata(L, msg);
    size_t len;
    const char *body = pl_message_body(msg, &len);
    lua_pushlstring(L, body, len);
    lua_pushstring(L, pl_message_id(msg));
    size_t n = pl_message_property_count(msg);
    lua_createtable(L, 0, (int)n);
    for (size_t p = 0; p < n; p++) {
        lua_pushstring(L, pl_message_property_string(msg, p));
        lua_setfield(L, -2, pl_message_property_name(msg, p));
    }
    return 4;
}

/* complete(message): completes and frees it */
static int f_complete(lua_State *L)
{
    pl_message *msg = lua_touserdata(L, 1);
    if (!msg) return luaL_argerror(L, 1, "message expected");
    int rc = pl_complete(client, msg);
    pl_message_free(msg);
    if (rc) return fail(L, "complete", rc);
    return 0;
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
