/* schedule.c — the core's renewal schedule (csrc/schedule.c, the rules the C renewer
 * thread follows) for a driver that renews over its own sockets: peeklock.resty's
 * renewal loop asks it which lock to renew when and what a failure means, and only
 * sleeps and moves bytes.
 *
 *   schedule_new(seed) -> schedule (one per worker; not shared between Lua states)
 *   schedule_add(s, key, now, expiry, duration, cap) -> true | nil (no memory)
 *       starts tracking the lock of key (any Lua value but nil: the driver's own key
 *       of the message); times in ms on pl_now_mono_ms's scale, cap absolute
 *   schedule_remove(s, key)                       stops tracking it (no-op when unknown)
 *   schedule_pop(s, now) -> key, "renew" | "cap", late_ms
 *                        | nil, wait_ms           (nil, nil: nothing is tracked)
 *       the lock due now, taken out of the queue until schedule_renewed/_failed hands
 *       it back ("cap": the renewal cap was reached; remove it), or how long until the
 *       next is due
 *   schedule_renewed(s, key, now, new_expiry) -> true | false (no memory: retry as failed)
 *   schedule_failed(s, key, now, retry_after) -> true: queued again (backoff)
 *       (retry_after: the answer's Retry-After header or nil) | false: no lock time left,
 *       the lock is lost (no longer tracked)
 *   schedule_note_answer(s, ms, answered, timed_out)
 *       a renew's round trip and what became of it (answered: any HTTP status; timed_out:
 *       no answer in time); the schedule decides whether it widens the margin
 *   schedule_margin(s) -> ms                      p99 round trip + floor
 *
 * The entries live in userdata the schedule itself keeps referenced (key -> entry, and
 * entry -> key), so the heap never points at collected memory. */
#include <stdint.h>
#include "pl_lua.h"
#include "schedule_int.h"
#include "outcome_int.h"

#define SCHED_MT "peeklock.schedule"

typedef struct {
    pl_sched s;
    int bykey; /* registry ref: key -> entry userdata */
    int byptr; /* registry ref: lightuserdata(entry) -> key */
    int live;
} lua_sched;

/* A time or duration argument in ms. */
static int64_t arg_ms(lua_State *L, int idx)
{
    luaL_checknumber(L, idx);
    return pl_lua_toint64(L, idx);
}

static lua_sched *check_sched(lua_State *L, const char *fn)
{
    lua_sched *ls = (lua_sched *)luaL_checkudata(L, 1, SCHED_MT);
    if (!ls->live) luaL_error(L, "%s: the schedule is closed", fn);
    return ls;
}

static int sched_gc(lua_State *L)
{
    lua_sched *ls = (lua_sched *)luaL_checkudata(L, 1, SCHED_MT);
    if (ls->live) {
        pl_sched_destroy(&ls->s);
        luaL_unref(L, LUA_REGISTRYINDEX, ls->bykey);
        luaL_unref(L, LUA_REGISTRYINDEX, ls->byptr);
        ls->live = 0;
    }
    return 0;
}

int pl_lua_schedule_new(lua_State *L)
{
    pl_sched_config cfg = {0};
    lua_sched *ls;
    cfg.jitter = -1.0;       /* the defaults, as the C renewer's (PL_RENEWER_OPTIONS_INIT) */
    cfg.first_jitter = -1.0; /* from jitter, as the C renewer */
    lua_Number seed = luaL_optnumber(L, 1, 1);
    /* checked before the cast: a negative, NaN or huge seed would be undefined */
    luaL_argcheck(L, seed >= 0 && seed <= 9007199254740992.0, 1, "seed must be 0..2^53");
    cfg.seed = (uint64_t)seed;
    ls = (lua_sched *)lua_newuserdata(L, sizeof *ls);
    ls->live = 0;
    if (luaL_newmetatable(L, SCHED_MT)) {
        lua_pushcfunction(L, sched_gc);
        lua_setfield(L, -2, "__gc");
        lua_pushliteral(L, SCHED_MT);
        lua_setfield(L, -2, "__name");
    }
    lua_setmetatable(L, -2);
    if (pl_sched_init(&ls->s, &cfg) != 0) return luaL_error(L, "schedule_new: out of memory");
    lua_newtable(L);
    ls->bykey = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_newtable(L);
    ls->byptr = luaL_ref(L, LUA_REGISTRYINDEX);
    ls->live = 1;
    return 1;
}

/* The entry of the key at idx, or NULL. */
static pl_sched_entry *entry_of(lua_State *L, lua_sched *ls, int idx)
{
    pl_sched_entry *e;
    lua_rawgeti(L, LUA_REGISTRYINDEX, ls->bykey);
    lua_pushvalue(L, idx);
    lua_rawget(L, -2);
    e = (pl_sched_entry *)lua_touserdata(L, -1);
    lua_pop(L, 2);
    return e;
}

static void forget(lua_State *L, lua_sched *ls, int idx, pl_sched_entry *e)
{
    pl_sched_remove(&ls->s, e);
    lua_rawgeti(L, LUA_REGISTRYINDEX, ls->byptr);
    lua_pushlightuserdata(L, e);
    lua_pushnil(L);
    lua_rawset(L, -3);
    lua_pop(L, 1);
    lua_rawgeti(L, LUA_REGISTRYINDEX, ls->bykey);
    lua_pushvalue(L, idx);
    lua_pushnil(L);
    lua_rawset(L, -3);
    lua_pop(L, 1);
}

int pl_lua_schedule_add(lua_State *L)
{
    lua_sched *ls = check_sched(L, "schedule_add");
    int64_t now, expiry, duration, cap;
    pl_sched_entry *e;
    luaL_checkany(L, 2);
    if (lua_isnil(L, 2)) return luaL_argerror(L, 2, "a key, not nil");
    now = arg_ms(L, 3);
    expiry = arg_ms(L, 4);
    duration = arg_ms(L, 5);
    cap = lua_isnoneornil(L, 6) ? INT64_MAX : arg_ms(L, 6);
    lua_settop(L, 6);
    e = entry_of(L, ls, 2);
    if (e) forget(L, ls, 2, e);
    e = (pl_sched_entry *)lua_newuserdata(L, sizeof *e); /* 7 */
    e->heap_index = PL_SCHED_NOT_QUEUED;
    if (pl_sched_add(&ls->s, e, now, expiry, duration, cap) != 0) {
        lua_pushnil(L);
        return 1;
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, ls->bykey);
    lua_pushvalue(L, 2);
    lua_pushvalue(L, 7);
    lua_rawset(L, -3);
    lua_pop(L, 1);
    lua_rawgeti(L, LUA_REGISTRYINDEX, ls->byptr);
    lua_pushlightuserdata(L, e);
    lua_pushvalue(L, 2);
    lua_rawset(L, -3);
    lua_pop(L, 1);
    lua_pushboolean(L, 1);
    return 1;
}

int pl_lua_schedule_remove(lua_State *L)
{
    lua_sched *ls = check_sched(L, "schedule_remove");
    pl_sched_entry *e = entry_of(L, ls, 2);
    if (e) forget(L, ls, 2, e);
    return 0;
}

int pl_lua_schedule_pop(lua_State *L)
{
    lua_sched *ls = check_sched(L, "schedule_pop");
    int64_t now = arg_ms(L, 2), due = pl_sched_next_due(&ls->s);
    pl_sched_entry *e = NULL;
    int act;
    if (due == INT64_MAX) {
        lua_pushnil(L);
        lua_pushnil(L);
        return 2;
    }
    act = pl_sched_pop_due(&ls->s, now, &e);
    if (act == PL_SCHED_NONE) {
        lua_pushnil(L);
        lua_pushinteger(L, (lua_Integer)(due - now));
        return 2;
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, ls->byptr);
    lua_pushlightuserdata(L, e);
    lua_rawget(L, -2);
    lua_remove(L, -2);
    lua_pushstring(L, act == PL_SCHED_CAP ? "cap" : "renew");
    lua_pushinteger(L, (lua_Integer)(now - due));
    return 3;
}

int pl_lua_schedule_renewed(lua_State *L)
{
    lua_sched *ls = check_sched(L, "schedule_renewed");
    pl_sched_entry *e = entry_of(L, ls, 2);
    int64_t now = arg_ms(L, 3);
    int64_t expiry = arg_ms(L, 4);
    if (!e) return luaL_error(L, "schedule_renewed: the key is not in the schedule");
    lua_pushboolean(L, pl_sched_renewed(&ls->s, e, now, expiry) == 0);
    return 1;
}

int pl_lua_schedule_failed(lua_State *L)
{
    lua_sched *ls = check_sched(L, "schedule_failed");
    pl_sched_entry *e = entry_of(L, ls, 2);
    int64_t now = arg_ms(L, 3);
    long retry_after = pl_retry_after_ms(luaL_optstring(L, 4, NULL));
    int retry;
    if (!e) return luaL_error(L, "schedule_failed: the key is not in the schedule");
    retry = pl_sched_failed(&ls->s, e, now, retry_after > 0 ? retry_after : 0) == PL_SCHED_RETRY;
    if (!retry) forget(L, ls, 2, e);
    lua_pushboolean(L, retry);
    return 1;
}

int pl_lua_schedule_note_answer(lua_State *L)
{
    lua_sched *ls = check_sched(L, "schedule_note_answer");
    double ms = (double)luaL_checknumber(L, 2);
    if (ms >= 0) pl_sched_note_answer(&ls->s, ms, lua_toboolean(L, 3), lua_toboolean(L, 4));
    return 0;
}

int pl_lua_schedule_margin(lua_State *L)
{
    lua_sched *ls = check_sched(L, "schedule_margin");
    lua_pushnumber(L, (lua_Number)pl_sched_margin_ms(&ls->s));
    return 1;
}
