/* options.c — client_new, renewer_new and run_new from Lua options tables: the options structs
 * filled through their _options_init (an absent key keeps the core's default), then each key
 * given set, as the struct's list in bindings/pl_fields.h says (a new option is one line
 * there). client_new refuses first, in the words peeklock.client's users see, a key that is
 * none of the client's options (nor of extra's, nor renewer = { the renewer's options }) or a
 * value of the wrong type; the fills' checks keep a direct caller of peeklock.core safe too. */
#include <limits.h>
#include <stddef.h>
#include <string.h>
#include "pl_lua.h"
#include "pl_fields.h"

enum { PL_LUA_OPT_STR, PL_LUA_OPT_INT, PL_LUA_OPT_LONG, PL_LUA_OPT_DBL };

/* One option: its key (the struct field's name), the field's C type, where the
 * field is, and (integers) the range of that type, named in the error. */
typedef struct {
    const char *key;
    int type;
    size_t offset;
    int64_t lo, hi;
    const char *ctype;
} pl_lua_option_row;

/* A row for a line X(s, f, kind) of pl_fields.h. */
#define PL_LUA_RANGE_STR       0, 0, NULL
#define PL_LUA_RANGE_INT       INT_MIN, INT_MAX, "int"
#define PL_LUA_RANGE_LONG      LONG_MIN, LONG_MAX, "long"
#define PL_LUA_RANGE_DBL       0, 0, NULL
#define PL_LUA_ROW(s, f, kind) {#f, PL_LUA_OPT_##kind, PL_FIELD_OFFSET(s, f, kind), PL_LUA_RANGE_##kind},

static const pl_lua_option_row client_rows[] = {PL_CLIENT_OPTIONS_FIELDS(PL_LUA_ROW)};
static const pl_lua_option_row renewer_rows[] = {PL_RENEWER_OPTIONS_FIELDS(PL_LUA_ROW)};
static const pl_lua_option_row run_rows[] = {PL_RUN_OPTIONS_FIELDS(PL_LUA_ROW)};
#undef PL_LUA_ROW
#undef PL_LUA_RANGE_STR
#undef PL_LUA_RANGE_INT
#undef PL_LUA_RANGE_LONG
#undef PL_LUA_RANGE_DBL

#define PL_LUA_ROWS(a) (a), (sizeof(a) / sizeof((a)[0]))

/* The row of key k among rows (n of them), or NULL. */
static const pl_lua_option_row *pl_lua_row(const char *k, const pl_lua_option_row *rows, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++)
        if (strcmp(rows[i].key, k) == 0) return &rows[i];
    return NULL;
}

/* Raises "unknown option" for the key at index -2 (any type, shown as tostring shows it,
 * NUL bytes included). */
static void pl_lua_unknown_option(lua_State *L, const char *fname)
{
    lua_pushliteral(L, "unknown option '");
    lua_getglobal(L, "tostring");
    lua_pushvalue(L, -4);
    lua_call(L, 1, 1);
    lua_pushfstring(L, "' to '%s'", fname);
    lua_concat(L, 3);
    lua_error(L);
}

/* Raises "bad option" unless the value on top has the Lua type want ("number": not NaN). */
static void pl_lua_option_type(lua_State *L, const char *fname, const char *key, const char *want)
{
    const char *got = luaL_typename(L, -1);
    if (strcmp(got, want) == 0 &&
        (lua_type(L, -1) != LUA_TNUMBER || lua_tonumber(L, -1) == lua_tonumber(L, -1)))
        return;
    lua_pushfstring(L, "bad option '%s' to '%s' (%s expected, got %s)", key, fname, want, got);
    lua_error(L);
}

/* Refuses (raises, with no position: the Lua layer raises it again at its caller's line) a
 * key of the table at t that is not one of rows (n of them) nor of the table at extra (0:
 * none; name -> Lua type name), or a value of the wrong type; with sub, a key "renewer"
 * is a table whose keys are checked against sub's rows (nsub of them). fname names the
 * call in the error. */
static void pl_lua_check_keys(lua_State *L, const char *fname, int t, int extra,
                              const pl_lua_option_row *rows, size_t n, const pl_lua_option_row *sub,
                              size_t nsub)
{
    if (t < 0) t = lua_gettop(L) + t + 1;
    lua_pushnil(L);
    while (lua_next(L, t)) {
        const pl_lua_option_row *r = NULL;
        const char *k = lua_type(L, -2) == LUA_TSTRING ? pl_lua_whole(L, -2) : NULL;
        if (k && (r = pl_lua_row(k, rows, n))) {
            pl_lua_option_type(L, fname, k, r->type == PL_LUA_OPT_STR ? "string" : "number");
        } else if (k && sub && strcmp(k, "renewer") == 0) {
            pl_lua_option_type(L, fname, k, "table");
            pl_lua_check_keys(L, fname, -1, 0, sub, nsub, NULL, 0);
        } else if (k && extra) {
            lua_getfield(L, extra, k);
            if (lua_type(L, -1) != LUA_TSTRING) {
                lua_pop(L, 1);
                pl_lua_unknown_option(L, fname);
            }
            lua_pushvalue(L, -2);
            pl_lua_option_type(L, fname, k, lua_tostring(L, -2));
            lua_pop(L, 2);
        } else {
            pl_lua_unknown_option(L, fname);
        }
        lua_pop(L, 1);
    }
}

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
        if (r->type == PL_LUA_OPT_STR) {
            const char *s;
            if (lua_type(L, -1) != LUA_TSTRING) luaL_error(L, "%s: option '%s' must be a string", fn, r->key);
            if (!(s = pl_lua_whole(L, -1)))
                luaL_error(L, "%s: option '%s' must not contain NUL bytes", fn, r->key);
            *(const char **)(void *)field = s;
        } else if (lua_type(L, -1) != LUA_TNUMBER) {
            luaL_error(L, "%s: option '%s' must be a number", fn, r->key);
        } else if (r->type == PL_LUA_OPT_DBL) {
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

/* client_new(opts [, extra]) -> rc, client. extra: the caller's own options (name -> Lua
 * type name), let through; a key renewer = { the renewer's options } is checked, for
 * renewer_new. */
int pl_lua_client_new(lua_State *L)
{
    pl_client_options o;
    pl_client *c = NULL;
    int rc;
    luaL_checktype(L, 1, LUA_TTABLE);
    if (!lua_isnoneornil(L, 2)) luaL_checktype(L, 2, LUA_TTABLE);
    pl_lua_check_keys(L, "client", 1, lua_isnoneornil(L, 2) ? 0 : 2, PL_LUA_ROWS(client_rows),
                      PL_LUA_ROWS(renewer_rows));
    pl_client_options_init(&o, PL_CLIENT_OPTIONS_VERSION);
    pl_lua_fill_options(L, "client_new", 1, &o, PL_LUA_ROWS(client_rows));
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
    if (lua_istable(L, 2)) pl_lua_fill_options(L, "renewer_new", 2, &o, PL_LUA_ROWS(renewer_rows));
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
    if (lua_istable(L, 2)) pl_lua_fill_options(L, "run_new", 2, &o, PL_LUA_ROWS(run_rows));
    rc = pl_run_new(&run, &o, now);
    lua_pushinteger(L, rc);
    pl_lua_push_handle(L, run, &pl_lua_kind_pl_run, 1);
    return 2;
}
