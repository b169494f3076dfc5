/* stats.c — the stats and tallies structs as Lua tables, field by field as bindings/pl_fields.h
 * lists them (bindings/lua.i's typemaps call these). Counters are integers (pl_lua_pushint64),
 * durations numbers, a histogram a list. */
#include "pl_lua.h"
#include "pl_fields.h"

static void pl_lua_push_u64s(lua_State *L, const uint64_t *a, int n)
{
    int i;
    lua_createtable(L, n, 0);
    for (i = 0; i < n; i++) {
        pl_lua_pushint64(L, (int64_t)a[i]);
        lua_rawseti(L, -2, i + 1);
    }
}

#define PL_LUA_OUT_U64(v)  pl_lua_pushint64(L, (int64_t)(v))
#define PL_LUA_OUT_DBL(v)  lua_pushnumber(L, (lua_Number)(v))
#define PL_LUA_OUT_U64S(v) pl_lua_push_u64s(L, v, (int)(sizeof(v) / sizeof((v)[0])))
#define PL_LUA_SET(kind, f)                                                                                  \
    PL_LUA_OUT_##kind(s->f);                                                                                 \
    lua_setfield(L, -2, #f);
#define PL_LUA_COUNT(kind, f) +1
/* A function of pl_lua.h: pushes the table of a struct's fields, by pl_fields.h's list. */
#define PL_LUA_STATS_TABLE(fn, T, LIST)                                                                      \
    void fn(lua_State *L, const T *s)                                                                        \
    {                                                                                                        \
        lua_createtable(L, 0, 0 LIST(PL_LUA_COUNT));                                                         \
        LIST(PL_LUA_SET)                                                                                     \
    }
PL_LUA_STATS_TABLE(pl_lua_push_client_stats, pl_client_stats, PL_CLIENT_STATS_FIELDS)
PL_LUA_STATS_TABLE(pl_lua_push_renewer_stats, pl_renewer_stats, PL_RENEWER_STATS_FIELDS)
PL_LUA_STATS_TABLE(pl_lua_push_run_tallies, pl_run_tallies, PL_RUN_TALLIES_FIELDS)
