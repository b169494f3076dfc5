/* requests.c — what the cosocket driver (lua/peeklock/resty.lua) needs of the sans-I/O
 * core: a request's parts to write, an answer's parts turned into a response (and its
 * result), and the outcome module (csrc/outcome.c) that decides on retries: the driver
 * moves bytes and reports each attempt; the C module decides. */
#include <stdio.h>
#include <string.h>
#include "pl_lua.h"
#include "client_int.h"
#include "error_int.h"
#include "outcome_int.h"
#include "wire_int.h"

/* ASCII case-insensitive equality (HTTP header names). */
static int strcaseeq(const char *a, const char *b)
{
    for (; *a && *b; a++, b++) {
        char x = *a, y = *b;
        if (x >= 'A' && x <= 'Z') x = (char)(x - 'A' + 'a');
        if (y >= 'A' && y <= 'Z') y = (char)(y - 'A' + 'a');
        if (x != y) return 0;
    }
    return *a == *b;
}

static void push_request_body(lua_State *L, const pl_request *r)
{
    size_t len = 0;
    const void *b = pl_request_body(r, &len);
    lua_pushlstring(L, b ? (const char *)b : "", b ? len : 0);
}

/* request_body(req) -> string */
int pl_lua_request_body(lua_State *L)
{
    push_request_body(L, (pl_request *)pl_lua_check(L, 1, &pl_lua_kind_pl_request, "request_body"));
    return 1;
}

/* request_parts(req) -> method, url, body, { {name, value}, ... } (values include the
 * Authorization header: a secret, for the wire only). */
int pl_lua_request_parts(lua_State *L)
{
    pl_request *r = (pl_request *)pl_lua_check(L, 1, &pl_lua_kind_pl_request, "request_parts");
    size_t i, n = pl_request_header_count(r);
    lua_pushstring(L, pl_request_method(r));
    lua_pushstring(L, pl_request_url(r));
    push_request_body(L, r);
    lua_createtable(L, (int)n, 0);
    for (i = 0; i < n; i++) {
        lua_createtable(L, 2, 0);
        lua_pushstring(L, pl_request_header_name(r, i));
        lua_rawseti(L, -2, 1);
        lua_pushstring(L, pl_request_header_value(r, i));
        lua_rawseti(L, -2, 2);
        lua_rawseti(L, -2, (int)i + 1);
    }
    return 4;
}

/* request_head(req) -> method, url, body, headers, has_host, has_length: the request for a
 * raw HTTP/1.1 exchange, its headers already joined as "Name: value\r\n" lines (an empty
 * Expect, libcurl's way of switching 100-continue off, left out), and whether Host and
 * Content-Length are among them. The cosocket driver's one call per request: no table per
 * header. (Authorization is in headers: a secret, for the wire only.) */
int pl_lua_request_head(lua_State *L)
{
    pl_request *r = (pl_request *)pl_lua_check(L, 1, &pl_lua_kind_pl_request, "request_head");
    size_t i, n = pl_request_header_count(r), total = 0;
    int has_host = 0, has_length = 0;
    char small[2048], *buf = small, *at;
    lua_pushstring(L, pl_request_method(r));
    lua_pushstring(L, pl_request_url(r));
    push_request_body(L, r);
    /* joined into one buffer, pushed once (luaL_Buffer copies byte by byte on LuaJIT) */
    for (i = 0; i < n; i++) {
        const char *name = pl_request_header_name(r, i), *value = pl_request_header_value(r, i);
        if (name && value) total += strlen(name) + strlen(value) + 4;
    }
    if (total > sizeof small) buf = (char *)lua_newuserdata(L, total); /* collected, even on an error */
    at = buf;
    for (i = 0; i < n; i++) {
        const char *name = pl_request_header_name(r, i), *value = pl_request_header_value(r, i);
        size_t ln, lv;
        if (!name || !value) continue;
        if (strcaseeq(name, "host"))
            has_host = 1;
        else if (strcaseeq(name, "content-length"))
            has_length = 1;
        else if (strcaseeq(name, "expect") && !*value)
            continue;
        ln = strlen(name);
        lv = strlen(value);
        memcpy(at, name, ln);
        at += ln;
        memcpy(at, ": ", 2);
        at += 2;
        memcpy(at, value, lv);
        at += lv;
        memcpy(at, "\r\n", 2);
        at += 2;
    }
    lua_pushlstring(L, buf, (size_t)(at - buf));
    if (buf != small) lua_remove(L, -2);
    lua_pushboolean(L, has_host);
    lua_pushboolean(L, has_length);
    return 6;
}

/* The text of a header name or value at idx: a string as it is, a number written into buf
 * as tostring() writes it; NULL for anything else. Never allocates in Lua (lua_tostring
 * would, for a number), so no error can be raised while the response is being built. */
static const char *header_text(lua_State *L, int idx, char *buf, size_t size)
{
    lua_Number v;
    if (lua_type(L, idx) == LUA_TSTRING) return lua_tostring(L, idx);
    if (lua_type(L, idx) != LUA_TNUMBER) return NULL;
#if LUA_VERSION_NUM >= 503
    if (lua_isinteger(L, idx)) {
        snprintf(buf, size, "%lld", (long long)lua_tointeger(L, idx));
        return buf;
    }
#endif
    v = lua_tonumber(L, idx);
    snprintf(buf, size, "%.14g", (double)v);
#if LUA_VERSION_NUM >= 503
    if (buf[strspn(buf, "-0123456789")] == '\0') strncat(buf, ".0", size - strlen(buf) - 1); /* as 5.4: 3.0 */
#endif
    return buf;
}

/* The response of (status, headers, body) at idx, idx + 1, idx + 2, headers either
 * { {name, value}, ... } or flat, { name, value, name, value, ... } (the cosocket driver's:
 * no table per header): PL_OK with *out set, or a negative rc (nothing built). */
static int build_response(lua_State *L, int idx, pl_response **out)
{
    pl_response *resp = NULL;
    int status = (int)luaL_checknumber(L, idx), headers = idx + 1;
    size_t i, n, len = 0;
    const char *body;
    int rc;
    luaL_checktype(L, headers, LUA_TTABLE);
    body = luaL_checklstring(L, idx + 2, &len);
    *out = NULL;
    rc = pl_response_new(&resp, status);
    if (rc != PL_OK) return rc;
    n = (size_t)pl_lua_objlen(L, headers);
    for (i = 1; i <= n && rc == PL_OK; i++) {
        char nbuf[64], vbuf[64];
        const char *name, *value;
        lua_rawgeti(L, headers, (int)i);
        if (lua_type(L, -1) == LUA_TSTRING) { /* flat: name, value, name, value, ... */
            lua_rawgeti(L, headers, (int)++i);
        } else if (lua_istable(L, -1)) { /* { {name, value}, ... } */
            lua_rawgeti(L, -1, 1);
            lua_rawgeti(L, -2, 2);
            lua_remove(L, -3);
        } else {
            lua_pop(L, 1);
            continue;
        }
        name = header_text(L, -2, nbuf, sizeof nbuf);
        value = header_text(L, -1, vbuf, sizeof vbuf);
        if (name && value) rc = pl_response_add_header(resp, name, value);
        lua_pop(L, 2);
    }
    if (rc == PL_OK) rc = pl_response_set_body(resp, body, len);
    if (rc != PL_OK) {
        pl_response_free(resp);
        return rc;
    }
    *out = resp;
    return PL_OK;
}

/* response_from(status, headers, body) -> rc, response */
int pl_lua_response_from(lua_State *L)
{
    pl_response *resp;
    int rc = build_response(L, 1, &resp);
    lua_pushinteger(L, rc);
    pl_lua_push_handle(L, resp, &pl_lua_kind_pl_response, 1);
    return 2;
}

/* result_from(client, request, message, status, headers, body, sent_ms) -> rc, message,
 * answered: response_from and pl_response_result in one call, with no handle for the
 * response (freed at once). answered is false when rc is from taking the answer in (it
 * could not be), true when it is pl_response_result's; message is its received message or
 * nil. message (argument 3) is nil or a message handle, as for pl_response_result. */
int pl_lua_result_from(lua_State *L)
{
    pl_client *c = (pl_client *)pl_lua_check(L, 1, &pl_lua_kind_pl_client, "result_from");
    pl_request *req = (pl_request *)pl_lua_check(L, 2, &pl_lua_kind_pl_request, "result_from");
    pl_message *m = NULL, *out = NULL;
    pl_response *resp;
    pl_lua_handle *u;
    int64_t sent_ms;
    int rc, answered = 0;
    if (pl_lua_arg(L, 3, &pl_lua_kind_pl_message, (void **)&m, "result_from", 3) < 0) return lua_error(L);
    luaL_checknumber(L, 7);
    sent_ms = pl_lua_toint64(L, 7);
    lua_settop(L, 7);
    u = pl_lua_new_handle(L); /* 8: the message, made before it so handing it out cannot fail */
    rc = build_response(L, 4, &resp);
    if (rc == PL_OK) {
        answered = 1;
        rc = pl_response_result(&out, c, req, m, resp, sent_ms);
        pl_response_free(resp);
    }
    pl_lua_fill_handle(L, 8, u, out, &pl_lua_kind_pl_message);
    lua_pushinteger(L, rc);
    lua_pushvalue(L, 8);
    lua_pushboolean(L, answered);
    return 3;
}

/* outcome_new(client, request, seed, once) -> call (under the client's own retry options;
 * once: a single attempt, for a caller whose retries another rule times: the renewal
 * schedule's)
 * outcome_report(call, how, status, code, retry_after, message, msg) ->
 *   true, delay_ms          send the request again after delay_ms
 *   false, code, orphaned   done: code is the result (pl_error_last() describes it);
 *                           orphaned: peek-lock attempts whose lock may be held by nobody
 * how: "unsent", "unanswered", "malformed" or "answered"; status: the HTTP status (0 when
 * none); code: the attempt's PL_* code (answered: result_from's); retry_after: the answer's
 * Retry-After header value or nil; message: the attempt's own error text when it was not
 * answered (nil otherwise); msg: the message handle of a renew/unlock/complete, or nil.
 * fence_enter(msg, op) / fence_leave(msg, rc): the settle fence (op: PL_SETTLE_*). */
typedef struct {
    pl_call call;
    pl_policy policy;
    pl_client *client;
} outcome_call;

int pl_lua_outcome_new(lua_State *L)
{
    pl_client *c = (pl_client *)pl_lua_check(L, 1, &pl_lua_kind_pl_client, "outcome_new");
    pl_request *req = (pl_request *)pl_lua_check(L, 2, &pl_lua_kind_pl_request, "outcome_new");
    outcome_call *lc = (outcome_call *)lua_newuserdata(L, sizeof *lc);
    pl_call_init(&lc->call, req->op, req->entity, (uint64_t)luaL_optnumber(L, 3, 1));
    lc->call.resend_ok = req->resend_ok;
    lc->policy = *pl_client_policy(c);
    if (lua_toboolean(L, 4)) lc->policy.max_retries = 0; /* once: the caller times retries */
    lc->client = c;
    return 1;
}

int pl_lua_outcome_report(lua_State *L)
{
    outcome_call *lc = (outcome_call *)lua_touserdata(L, 1);
    const char *how = luaL_checkstring(L, 2);
    int status = (int)luaL_optinteger(L, 3, 0), code = (int)luaL_checkinteger(L, 4), io, next;
    long ra = pl_retry_after_ms(luaL_optstring(L, 5, NULL));
    const char *text = luaL_optstring(L, 6, NULL);
    pl_message *m = NULL;
    int64_t left = 0;
    if (!lc) return luaL_error(L, "outcome_report: argument 1 must be a call");
    if (pl_lua_arg(L, 7, &pl_lua_kind_pl_message, (void **)&m, "outcome_report", 7) < 0) return lua_error(L);
    if (!strcmp(how, "unsent"))
        io = PL_IO_NOT_SENT;
    else if (!strcmp(how, "unanswered"))
        io = PL_IO_UNANSWERED;
    else if (!strcmp(how, "malformed"))
        io = PL_IO_MALFORMED;
    else
        io = PL_IO_ANSWERED;
    if (text) pl_error_set(code, status, code != PL_EPROTOCOL, "%s", text);
    if (m && lc->call.op != PL_OP_PEEKLOCK && lc->call.op != PL_OP_RECVDEL)
        left = pl_message_lock_remaining_ms(m);
    next = pl_call_report(&lc->call, &lc->policy, io, status, code, ra, left);
    pl_client_call_reported(lc->client, &lc->call, next, status, 1);
    if (next == PL_NEXT_RETRY) {
        pl_client_stat_add(lc->client, PL_STAT_RETRIES, 1);
        lua_pushboolean(L, 1);
        lua_pushinteger(L, (lua_Integer)lc->call.delay_ms);
        return 2;
    }
    if (lc->call.orphaned) pl_client_stat_add(lc->client, PL_STAT_ORPHANED, (uint64_t)lc->call.orphaned);
    lua_pushboolean(L, 0);
    lua_pushinteger(L, lc->call.code);
    lua_pushinteger(L, lc->call.orphaned);
    return 3;
}

int pl_lua_fence_enter(lua_State *L)
{
    pl_message *m = (pl_message *)pl_lua_check(L, 1, &pl_lua_kind_pl_message, "fence_enter");
    int op = (int)luaL_checkinteger(L, 2);
    lua_pushinteger(L, pl_fence_enter(m, op == PL_SETTLE_RENEW    ? PL_OP_RENEW
                                         : op == PL_SETTLE_UNLOCK ? PL_OP_UNLOCK
                                                                  : PL_OP_COMPLETE));
    return 1;
}

int pl_lua_fence_leave(lua_State *L)
{
    pl_message *m = (pl_message *)pl_lua_check(L, 1, &pl_lua_kind_pl_message, "fence_leave");
    pl_fence_leave(m, (int)luaL_checkinteger(L, 2));
    return 0;
}
