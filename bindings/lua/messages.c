/* messages.c — received messages as lua/peeklock.lua's tables: their body and properties
 * read in one call, the C __index of the Message class, and the constructor of its
 * tables; plus the few message and client calls a Lua driver (peeklock.resty) needs. */
#include <string.h>
#include "pl_lua.h"
#include "client_int.h"
#include "message_int.h"

/* body(msg) -> string */
static void push_body(lua_State *L, const pl_message *m)
{
    size_t n = 0;
    const void *b = pl_message_body(m, &n);
    lua_pushlstring(L, b ? (const char *)b : "", b ? n : 0);
}

int pl_lua_message_body(lua_State *L)
{
    push_body(L, (pl_message *)pl_lua_check(L, 1, &pl_lua_kind_pl_message, "message_body"));
    return 1;
}

/* message_properties(msg) -> { name = value } typed as the server typed them (strings,
 * integers, numbers, booleans; DateTime as its text): one call, no per-field trips. */
static void push_properties(lua_State *L, const pl_message *m)
{
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
            if (v)
                lua_pushstring(L, v);
            else
                lua_pushnil(L);
        }
        }
        lua_setfield(L, -2, name);
    }
}

int pl_lua_message_properties(lua_State *L)
{
    push_properties(L, (pl_message *)pl_lua_check(L, 1, &pl_lua_kind_pl_message, "message_properties"));
    return 1;
}

/* message_indexer(methods, slow) -> the __index of lua/peeklock.lua's messages: a key of
 * methods is its value; body, message_id and properties are read from the message's
 * handle (its raw field _h) and cached in the message table; any other key, or a freed
 * message, goes to slow(msg, key). One C call per first read, no Lua frame. */
static int message_index(lua_State *L)
{
#define PL_LUA_FIELD(name)                                                                                   \
    {                                                                                                        \
        name, sizeof name - 1                                                                                \
    }
    static const struct {
        const char *name;
        size_t len;
    } fields[] = {PL_LUA_FIELD("body"), PL_LUA_FIELD("message_id"), PL_LUA_FIELD("properties")};
#undef PL_LUA_FIELD
    const size_t nfields = sizeof fields / sizeof fields[0];
    size_t i = nfields;
    lua_settop(L, 2);
    /* the three fields are not keys of methods: they are matched first, the methods
     * table is read only for the other keys */
    if (lua_type(L, 1) == LUA_TTABLE && lua_type(L, 2) == LUA_TSTRING) {
        size_t klen;
        const char *k = lua_tolstring(L, 2, &klen);
        for (i = 0; i < nfields && !(klen == fields[i].len && memcmp(k, fields[i].name, klen) == 0); i++) {}
    }
    if (i == nfields) {
        lua_pushvalue(L, 2);
        lua_rawget(L, lua_upvalueindex(3));
        if (!lua_isnil(L, -1)) return 1;
        lua_pop(L, 1);
    } else {
        pl_lua_handle *u;
        lua_pushvalue(L, lua_upvalueindex(5)); /* "_h" */
        lua_rawget(L, 1);
        u = pl_lua_handle_at(L, 3);
        if (u && u->ptr && u->kind == &pl_lua_kind_pl_message) {
            const pl_message *m = (const pl_message *)u->ptr;
            if (i == 0)
                push_body(L, m);
            else if (i == 1)
                lua_pushstring(L, pl_message_id(m));
            else
                push_properties(L, m);
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

int pl_lua_message_indexer(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    lua_pushvalue(L, PL_LUA_MT);
    lua_pushvalue(L, PL_LUA_FREED_MT);
    lua_pushvalue(L, 1);
    lua_pushvalue(L, 2);
    lua_pushliteral(L, "_h");
    lua_pushcclosure(L, message_index, 5);
    return 1;
}

/* The message table is sized for the fields the indexer caches (no rehash on the first
 * reads). */
void pl_lua_push_message(lua_State *L, int client, int handle, int methods, int key_h, int key_client)
{
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
    /* the handle names its client for the collector's drop hook (handles.c) */
    if (lua_type(L, handle) == LUA_TUSERDATA && lua_istable(L, client)) {
        lua_pushvalue(L, client);
#if LUA_VERSION_NUM >= 502
        lua_setuservalue(L, handle);
#else
        lua_setfenv(L, handle);
#endif
    }
}

/* message_wrapper(methods) -> wrap(client, h): pl_lua_push_message as a function. */
static int wrap_message(lua_State *L)
{
    lua_settop(L, 2);
    pl_lua_push_message(L, 1, 2, lua_upvalueindex(1), lua_upvalueindex(2), lua_upvalueindex(3));
    return 1;
}

int pl_lua_message_wrapper(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    lua_pushliteral(L, "_h");
    lua_pushliteral(L, "_client");
    lua_pushcclosure(L, wrap_message, 3);
    return 1;
}

/* message_ref(h) -> a second owned handle of the same message (its own reference). */
int pl_lua_message_ref(lua_State *L)
{
    pl_message *m = (pl_message *)pl_lua_check(L, 1, &pl_lua_kind_pl_message, "message_ref");
    pl_message_ref(m);
    pl_lua_push_handle(L, m, &pl_lua_kind_pl_message, 1);
    return 1;
}

/* mark_lost(msg, reason): a held lock the caller's renewals could not keep (its estimate
 * ran out) is lost, as the C renewer marks it; true when it was held. */
int pl_lua_mark_lost(lua_State *L)
{
    pl_message *m = (pl_message *)pl_lua_check(L, 1, &pl_lua_kind_pl_message, "mark_lost");
    lua_pushboolean(L, pl_message_mark_lost(m, (int)luaL_checkinteger(L, 2), 0));
    return 1;
}

/* stat_request(client, requests, reused, retries): counts HTTP requests made outside the
 * C drivers (peeklock.resty's cosockets) in the client's stats. */
int pl_lua_stat_request(lua_State *L)
{
    pl_client *c = (pl_client *)pl_lua_check(L, 1, &pl_lua_kind_pl_client, "stat_request");
    pl_client_stat_add(c, PL_STAT_REQUESTS, (uint64_t)luaL_optinteger(L, 2, 0));
    pl_client_stat_add(c, PL_STAT_REUSED, (uint64_t)luaL_optinteger(L, 3, 0));
    pl_client_stat_add(c, PL_STAT_RETRIES, (uint64_t)luaL_optinteger(L, 4, 0));
    return 0;
}
