/* options.c — client_new and renewer_new from Lua options tables: the options structs
 * filled through pl_client_options_init / pl_renewer_options_init (an absent key keeps
 * the core's default), then each key given set. lua/peeklock.lua checked the keys and
 * their types first; the checks here keep a direct caller of peeklock.core safe. */
#include <limits.h>
#include "pl_lua.h"

static const char *opt_string(lua_State *L, const char *fn, int t, const char *k, const char *dflt)
{
    const char *s = dflt;
    lua_getfield(L, t, k);
    if (!lua_isnil(L, -1)) {
        if (lua_type(L, -1) != LUA_TSTRING) luaL_error(L, "%s: option '%s' must be a string", fn, k);
        if (!(s = pl_lua_whole(L, -1))) luaL_error(L, "%s: option '%s' must not contain NUL bytes", fn, k);
    }
    lua_pop(L, 1); /* the string stays alive: it is referenced by the options table */
    return s;
}

/* An integer option of C type ctype (lo..hi): a number that is not one (a fraction, NaN,
 * an infinity, out of range) is refused here, before any cast, as a host-type error. */
static int64_t opt_integer(lua_State *L, const char *fn, int t, const char *k, int64_t dflt, int64_t lo,
                           int64_t hi, const char *ctype)
{
    int64_t v = dflt;
    lua_getfield(L, t, k);
    if (!lua_isnil(L, -1)) {
        if (lua_type(L, -1) != LUA_TNUMBER) luaL_error(L, "%s: option '%s' must be a number", fn, k);
        if (!pl_lua_integer_in(L, -1, lo, hi, &v)) {
            lua_pushvalue(L, -1);
            luaL_error(L, "%s: option '%s' must be an integer that fits a C %s (got %s)", fn, k, ctype,
                       lua_tostring(L, -1));
        }
    }
    lua_pop(L, 1);
    return v;
}
#define opt_long(L, fn, t, k, dflt) (long)opt_integer(L, fn, t, k, dflt, LONG_MIN, LONG_MAX, "long")
#define opt_int(L, fn, t, k, dflt)  (int)opt_integer(L, fn, t, k, dflt, INT_MIN, INT_MAX, "int")

/* client_new(opts) -> rc, client */
int pl_lua_client_new(lua_State *L)
{
    pl_client_options o;
    pl_client *c = NULL;
    int rc;
    luaL_checktype(L, 1, LUA_TTABLE);
    pl_client_options_init(&o, PL_CLIENT_OPTIONS_VERSION);
    o.connection_string = opt_string(L, "client_new", 1, "connection_string", o.connection_string);
    o.endpoint = opt_string(L, "client_new", 1, "endpoint", o.endpoint);
    o.key_name = opt_string(L, "client_new", 1, "key_name", o.key_name);
    o.key = opt_string(L, "client_new", 1, "key", o.key);
    o.sas_token = opt_string(L, "client_new", 1, "sas_token", o.sas_token);
    o.ca_file = opt_string(L, "client_new", 1, "ca_file", o.ca_file);
    o.connect_timeout_ms = opt_long(L, "client_new", 1, "connect_timeout_ms", o.connect_timeout_ms);
    o.request_timeout_ms = opt_long(L, "client_new", 1, "request_timeout_ms", o.request_timeout_ms);
    o.max_retries = opt_int(L, "client_new", 1, "max_retries", o.max_retries);
    o.retry_base_ms = opt_long(L, "client_new", 1, "retry_base_ms", o.retry_base_ms);
    o.retry_max_ms = opt_long(L, "client_new", 1, "retry_max_ms", o.retry_max_ms);
    o.pool_size = opt_int(L, "client_new", 1, "pool_size", o.pool_size);
    o.token_lifetime_s = opt_int(L, "client_new", 1, "token_lifetime_s", o.token_lifetime_s);
    rc = pl_client_new(&c, &o);
    lua_pushinteger(L, rc);
    pl_lua_push_handle(L, c, &pl_lua_kind_pl_client, 1);
    return 2;
}

/* renewer_new(client, opts) -> rc, renewer */
int pl_lua_renewer_new(lua_State *L)
{
    pl_renewer_options o;
    pl_renewer *r = NULL;
    int rc;
    pl_client *c = (pl_client *)pl_lua_check(L, 1, &pl_lua_kind_pl_client, "renewer_new");
    pl_renewer_options_init(&o, PL_RENEWER_OPTIONS_VERSION);
    if (lua_istable(L, 2)) {
        o.max_connections = opt_int(L, "renewer_new", 2, "max_connections", o.max_connections);
        o.margin_floor_ms = opt_long(L, "renewer_new", 2, "margin_floor_ms", o.margin_floor_ms);
        o.default_max_renew_ms =
            opt_long(L, "renewer_new", 2, "default_max_renew_ms", o.default_max_renew_ms);
        o.request_timeout_ms = opt_long(L, "renewer_new", 2, "request_timeout_ms", o.request_timeout_ms);
        lua_getfield(L, 2, "jitter");
        if (lua_type(L, -1) == LUA_TNUMBER) o.jitter = lua_tonumber(L, -1);
        lua_pop(L, 1);
    }
    rc = pl_renewer_new(&r, c, &o);
    lua_pushinteger(L, rc);
    pl_lua_push_handle(L, r, &pl_lua_kind_pl_renewer, 1);
    return 2;
}
