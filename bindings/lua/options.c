/* options.c — client_new, renewer_new and run_new from Lua options tables: the options structs
 * filled through their _options_init (an absent key keeps
 * the core's default), then each key given set, as one table of rows says (a new option
 * is one row). lua/peeklock.lua checked the keys and their types first; the checks here
 * keep a direct caller of peeklock.core safe. */
#include <limits.h>
#include <stddef.h>
#include "pl_lua.h"

enum { PL_LUA_OPT_STRING, PL_LUA_OPT_INT, PL_LUA_OPT_LONG, PL_LUA_OPT_DOUBLE };

/* One option: its key (the struct field's name), the field's C type, where the
 * field is, and (integers) the range of that type, named in the error. */
typedef struct {
    const char *key;
    int type;
    size_t offset;
    int64_t lo, hi;
    const char *ctype;
} pl_lua_option_row;

/* A row's fields for field f of struct s, by the field's C type (its key is the
 * field's name): a row whose type is not the field's does not compile (_Generic has
 * no other association). */
#define PL_LUA_AT(s, f, T) _Generic(((s *)0)->f, T : offsetof(s, f))
#define PL_LUA_STR(s, f)   #f, PL_LUA_OPT_STRING, PL_LUA_AT(s, f, const char *), 0, 0, NULL
#define PL_LUA_INT(s, f)   #f, PL_LUA_OPT_INT, PL_LUA_AT(s, f, int), INT_MIN, INT_MAX, "int"
#define PL_LUA_LONG(s, f)  #f, PL_LUA_OPT_LONG, PL_LUA_AT(s, f, long), LONG_MIN, LONG_MAX, "long"
#define PL_LUA_DBL(s, f)   #f, PL_LUA_OPT_DOUBLE, PL_LUA_AT(s, f, double), 0, 0, NULL

static const pl_lua_option_row client_rows[] = {
    {PL_LUA_STR(pl_client_options, connection_string)},
    {PL_LUA_STR(pl_client_options, endpoint)},
    {PL_LUA_STR(pl_client_options, key_name)},
    {PL_LUA_STR(pl_client_options, key)},
    {PL_LUA_STR(pl_client_options, sas_token)},
    {PL_LUA_STR(pl_client_options, ca_file)},
    {PL_LUA_LONG(pl_client_options, connect_timeout_ms)},
    {PL_LUA_LONG(pl_client_options, request_timeout_ms)},
    {PL_LUA_INT(pl_client_options, max_retries)},
    {PL_LUA_LONG(pl_client_options, retry_base_ms)},
    {PL_LUA_LONG(pl_client_options, retry_max_ms)},
    {PL_LUA_INT(pl_client_options, pool_size)},
    {PL_LUA_INT(pl_client_options, token_lifetime_s)},
};

static const pl_lua_option_row renewer_rows[] = {
    {PL_LUA_INT(pl_renewer_options, max_connections)},
    {PL_LUA_LONG(pl_renewer_options, margin_floor_ms)},
    {PL_LUA_LONG(pl_renewer_options, default_max_renew_ms)},
    {PL_LUA_LONG(pl_renewer_options, request_timeout_ms)},
    {PL_LUA_DBL(pl_renewer_options, jitter)},
};

static const pl_lua_option_row run_rows[] = {
    {PL_LUA_LONG(pl_run_options, max_messages)},
    {PL_LUA_DBL(pl_run_options, idle_timeout)},
};
#undef PL_LUA_AT
#undef PL_LUA_STR
#undef PL_LUA_INT
#undef PL_LUA_LONG
#undef PL_LUA_DBL

/* Sets the fields of the struct at base from the table at t, by rows (n of them): a key
 * absent or nil keeps the field. A string must have no NUL byte (it stays alive: the
 * options table references it); an integer must fit its field's C type, checked before
 * any cast (a fraction, NaN, an infinity or a value out of range is refused as a
 * host-type error); fn names the call in the error. */
static void pl_lua_fill_options(lua_State *L, const char *fn, int t, void *base,
                                const pl_lua_option_row *rows, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++) {
        const pl_lua_option_row *r = &rows[i];
        char *field = (char *)base + r->offset;
        int64_t v;
        lua_getfield(L, t, r->key);
        if (lua_isnil(L, -1)) {
            lua_pop(L, 1);
            continue;
        }
        if (r->type == PL_LUA_OPT_STRING) {
            const char *s;
            if (lua_type(L, -1) != LUA_TSTRING) luaL_error(L, "%s: option '%s' must be a string", fn, r->key);
            if (!(s = pl_lua_whole(L, -1)))
                luaL_error(L, "%s: option '%s' must not contain NUL bytes", fn, r->key);
            *(const char **)(void *)field = s;
        } else if (lua_type(L, -1) != LUA_TNUMBER) {
            luaL_error(L, "%s: option '%s' must be a number", fn, r->key);
        } else if (r->type == PL_LUA_OPT_DOUBLE) {
            *(double *)(void *)field = (double)lua_tonumber(L, -1);
        } else if (!pl_lua_integer_in(L, -1, r->lo, r->hi, &v)) {
            lua_pushvalue(L, -1);
            luaL_error(L, "%s: option '%s' must be an integer that fits a C %s (got %s)", fn, r->key,
                       r->ctype, lua_tostring(L, -1));
        } else if (r->type == PL_LUA_OPT_INT) {
            *(int *)(void *)field = (int)v;
        } else {
            *(long *)(void *)field = (long)v;
        }
        lua_pop(L, 1);
    }
}

/* client_new(opts) -> rc, client */
int pl_lua_client_new(lua_State *L)
{
    pl_client_options o;
    pl_client *c = NULL;
    int rc;
    luaL_checktype(L, 1, LUA_TTABLE);
    pl_client_options_init(&o, PL_CLIENT_OPTIONS_VERSION);
    pl_lua_fill_options(L, "client_new", 1, &o, client_rows, sizeof client_rows / sizeof client_rows[0]);
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
    if (lua_istable(L, 2))
        pl_lua_fill_options(L, "renewer_new", 2, &o, renewer_rows,
                            sizeof renewer_rows / sizeof renewer_rows[0]);
    rc = pl_renewer_new(&r, c, &o);
    lua_pushinteger(L, rc);
    pl_lua_push_handle(L, r, &pl_lua_kind_pl_renewer, 1);
    return 2;
}

/* run_new(now_ms, opts) -> rc, run */
int pl_lua_run_new(lua_State *L)
{
    pl_run_options o;
    pl_run *run = NULL;
    int64_t now;
    int rc;
    if (!pl_lua_integer_in(L, 1, INT64_MIN, INT64_MAX, &now))
        return luaL_error(L, "run_new: argument 1 must be an integer that fits an int64_t");
    pl_run_options_init(&o, PL_RUN_OPTIONS_VERSION);
    if (lua_istable(L, 2))
        pl_lua_fill_options(L, "run_new", 2, &o, run_rows, sizeof run_rows / sizeof run_rows[0]);
    rc = pl_run_new(&run, &o, now);
    lua_pushinteger(L, rc);
    pl_lua_push_handle(L, run, &pl_lua_kind_pl_run, 1);
    return 2;
}
