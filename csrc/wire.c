/* Sans-I/O wire layer: builds the HTTP request of each operation and interprets
 * each response. Pure: no I/O, no clock, no threads. */
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error_int.h"
#include "message_int.h"
#include "wire_int.h"

/* The operations' names, by PL_OP_* (0: a request of no other kind). */
static const char *const op_names[] = {
    [0] = "request",
    [PL_OP_SEND] = "send",
    [PL_OP_BATCH] = "send batch",
    [PL_OP_PEEKLOCK] = "peek-lock",
    [PL_OP_RECVDEL] = "receive-and-delete",
    [PL_OP_RENEW] = "renew-lock",
    [PL_OP_UNLOCK] = "unlock",
    [PL_OP_COMPLETE] = "complete",
};

const char *pl_wire_op_name(int op)
{
    return op > 0 && op < (int)(sizeof op_names / sizeof op_names[0]) ? op_names[op] : op_names[0];
}

const char *pl_op_name(int index)
{
    return index >= 0 && index < (int)(sizeof op_names / sizeof op_names[0]) ? op_names[index] : NULL;
}

/* ---- entity names ------------------------------------------------------- */

/* Why one path segment of an entity (seg, len bytes) is refused, or NULL when it is
 * fine: the segment rule of pl_entity_encode and entity_plain. */
static const char *entity_segment_error(const char *seg, size_t len)
{
    if (len == 0) return "has an empty path segment";
    if ((len == 1 && seg[0] == '.') || (len == 2 && seg[0] == '.' && seg[1] == '.'))
        return "must not contain '.' or '..' segments";
    if (len == 8 && pl_strncaseeq(seg, "messages", 8)) return "must not contain a 'messages' segment";
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)seg[i];
        if (c < 0x20 || c == 0x7f) return "contains a control character";
    }
    return NULL;
}

int pl_entity_encode(char **out, const char *entity)
{
    *out = NULL;
    if (!entity) return pl_error_inval("entity", "must not be NULL");
    size_t n = strlen(entity);
    if (n == 0) return pl_error_inval("entity", "must not be empty");
    if (n > PL_MAX_ENTITY_LEN)
        return pl_error_inval("entity", "is longer than " PL_STRINGIFY(PL_MAX_ENTITY_LEN) " characters");
    pl_buf b = PL_BUF_INIT;
    const char *p = entity;
    for (;;) {
        const char *slash = strchr(p, '/');
        size_t len = slash ? (size_t)(slash - p) : strlen(p);
        const char *why = entity_segment_error(p, len);
        if (why) {
            pl_buf_free(&b);
            return pl_error_inval("entity", why);
        }
        /* '$' stays literal ($DeadLetterQueue), as the service's own clients send it. */
        char *enc = pl_pct_encode(p, len, "$", 1);
        if (!enc) {
            pl_buf_free(&b);
            return pl_error_nomem();
        }
        if (b.len) pl_buf_puts(&b, "/");
        pl_buf_puts(&b, enc);
        free(enc);
        if (!slash) break;
        p = slash + 1;
    }
    *out = pl_buf_detach(&b);
    return *out ? PL_OK : pl_error_nomem();
}

/* 1 when pl_entity_encode would accept entity and return it unchanged (ASCII
 * unreserved characters and '$' only, valid segments); *len = its length. */
static int entity_plain(const char *entity, size_t *len)
{
    if (!entity) return 0;
    const char *p = entity, *seg = entity;
    for (;; p++) {
        unsigned char c = (unsigned char)*p;
        if (c == '/' || c == '\0') {
            if (entity_segment_error(seg, (size_t)(p - seg))) return 0;
            if (!c) break;
            seg = p + 1;
            continue;
        }
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
              c == '_' || c == '.' || c == '~' || c == '$'))
            return 0;
    }
    *len = (size_t)(p - entity);
    return *len <= PL_MAX_ENTITY_LEN;
}

int pl_entity_destination(char **out, char **out2, const char *entity)
{
    *out = NULL;
    *out2 = NULL;
    if (!entity) return pl_error_inval("entity", "must not be NULL");
    /* "<topic>/subscriptions/<name>[/...]": the service matches the segment in any case */
    const char *s1 = strchr(entity, '/');
    const char *s2 = s1 ? strchr(s1 + 1, '/') : NULL;
    size_t sub_len = s2 ? strcspn(s2 + 1, "/") : 0;
    int sub = s1 && s1 > entity && s2 && s2 - s1 - 1 == 13 && pl_strncaseeq(s1 + 1, "subscriptions", 13) &&
              sub_len > 0;
    *out = sub ? pl_strndup(entity, (size_t)(s1 - entity)) : pl_strdup(entity);
    if (sub && *out) *out2 = pl_strndup(s2 + 1, sub_len);
    if (!*out || (sub && !*out2)) {
        pl_free(*out);
        *out = NULL;
        return pl_error_nomem();
    }
    pl_error_ok();
    return PL_OK;
}

int pl_check_entity(const char *entity)
{
    size_t len;
    if (entity_plain(entity, &len)) {
        pl_error_ok();
        return PL_OK;
    }
    char *enc = NULL;
    int rc = pl_entity_encode(&enc, entity);
    free(enc);
    if (rc == PL_OK) pl_error_ok();
    return rc;
}

int pl_timeout_seconds(double seconds)
{
    /* NaN fails both comparisons */
    if (!(seconds >= 0.0 && seconds <= PL_MAX_RECEIVE_TIMEOUT_S))
        return pl_error_inval("timeout", "must be 0.." PL_STRINGIFY(PL_MAX_RECEIVE_TIMEOUT_S) " seconds");
    pl_error_ok();
    return (int)ceil(seconds); /* up: a 0.5 s wait must not become a 0 s poll */
}

int pl_check_timeout(int timeout_s)
{
    int t = pl_timeout_seconds((double)timeout_s);
    return t < 0 ? t : PL_OK;
}

int pl_wire_scope(char **out, const char *endpoint, const char *entity)
{
    char *enc = NULL;
    int rc = pl_entity_encode(&enc, entity);
    if (rc) return rc;
    pl_buf b = PL_BUF_INIT;
    pl_buf_puts(&b, endpoint);
    pl_buf_puts(&b, "/");
    pl_buf_puts(&b, enc);
    free(enc);
    char *s = pl_buf_detach(&b);
    if (!s) return pl_error_nomem();
    for (char *c = s; *c; c++) *c = (char)tolower((unsigned char)*c);
    *out = s;
    return PL_OK;
}

/* ---- requests ------------------------------------------------------------ */

/* A request with its url ("<url_a><url_b>"), scope and entity in one allocation.
 * The scope is lower-cased here when lower_scope. */
static pl_request *req_new(int op, const char *method, const char *url_a, const char *url_b,
                           const char *scope, int lower_scope, const char *entity)
{
    size_t la = strlen(url_a), lb = strlen(url_b), ls = strlen(scope), le = strlen(entity);
    pl_request *r = calloc(1, sizeof *r + la + lb + 1 + ls + 1 + le + 1);
    if (!r) return NULL;
    r->op = op;
    r->method = method;
    r->headers = r->hdr_inline;
    char *p = r->strs;
    r->url = p;
    memcpy(p, url_a, la);
    memcpy(p + la, url_b, lb + 1);
    p += la + lb + 1;
    r->scope = p;
    memcpy(p, scope, ls + 1);
    if (lower_scope)
        for (char *c = p; *c; c++) *c = (char)tolower((unsigned char)*c);
    p += ls + 1;
    r->entity = p;
    memcpy(p, entity, le + 1);
    return r;
}

void pl_request_free(pl_request *r)
{
    if (!r) return;
    for (size_t i = 0; i < r->nheaders; i++) {
        char *v = r->headers[i].value;
        memset(v, 0, strlen(v)); /* may be the Authorization value */
        free(r->headers[i].name);
    }
    if (r->headers != r->hdr_inline) free(r->headers);
    free(r->body);
    free(r);
}

/* "name\0value\0" in one allocation. */
static int header_pack(pl_header *h, const char *name, const char *value)
{
    size_t nl = strlen(name), vl = strlen(value);
    char *block = malloc(nl + vl + 2);
    if (!block) return pl_error_nomem();
    memcpy(block, name, nl + 1);
    memcpy(block + nl + 1, value, vl + 1);
    h->name = block;
    h->value = block + nl + 1;
    h->kind = -1;
    return PL_OK;
}

int pl_request_set_header(pl_request *r, const char *name, const char *value)
{
    for (size_t i = 0; i < r->nheaders; i++) {
        if (pl_strcaseeq(r->headers[i].name, name)) {
            pl_header old = r->headers[i];
            if (header_pack(&r->headers[i], old.name, value)) return PL_ENOMEM;
            memset(old.value, 0, strlen(old.value));
            free(old.name);
            return PL_OK;
        }
    }
    if (r->headers == r->hdr_inline && r->nheaders == PL_REQ_INLINE_HEADERS) {
        pl_header *nh = malloc((r->nheaders + 1) * sizeof *nh);
        if (!nh) return pl_error_nomem();
        memcpy(nh, r->hdr_inline, r->nheaders * sizeof *nh);
        r->headers = nh;
    } else if (r->headers != r->hdr_inline) {
        pl_header *nh = realloc(r->headers, (r->nheaders + 1) * sizeof *nh);
        if (!nh) return pl_error_nomem();
        r->headers = nh;
    }
    if (header_pack(&r->headers[r->nheaders], name, value)) return PL_ENOMEM;
    r->nheaders++;
    return PL_OK;
}

static int req_base(pl_request **out, int op, const char *method, const char *endpoint, const char *entity,
                    const char *suffix, const char *auth)
{
    *out = NULL;
    if (!endpoint) return pl_error_inval("endpoint", "must not be NULL");
    char *enc = NULL;
    int rc;
    size_t ln;
    if (entity_plain(entity, &ln)) {
        enc = (char *)entity; /* encodes to itself */
    } else {
        if ((rc = pl_entity_encode(&enc, entity)) != PL_OK) return rc;
        ln = strlen(enc);
    }
    /* scope = endpoint + "/" + encoded entity; url = scope (as is) + suffix */
    size_t le = strlen(endpoint);
    char small[512], *scope = le + ln + 2 <= sizeof small ? small : malloc(le + ln + 2);
    if (!scope) {
        if (enc != entity) free(enc);
        return pl_error_nomem();
    }
    memcpy(scope, endpoint, le);
    scope[le] = '/';
    memcpy(scope + le + 1, enc, ln + 1);
    if (enc != entity) free(enc);
    pl_request *r = req_new(op, method, scope, suffix, scope, 1, entity);
    if (scope != small) free(scope);
    if (!r) return pl_error_nomem();
    if (auth && (rc = pl_request_set_header(r, "Authorization", auth)) != PL_OK) {
        pl_request_free(r);
        return rc;
    }
    *out = r;
    return PL_OK;
}

/* Whether m may be sent again after a lost answer: PL_EINVAL when it opted in
 * without the MessageId that duplicate detection keys on. */
static int resend_check(const pl_outgoing *m, const char *arg)
{
    if (m->resend && (!m->fields[0] || !m->fields[0][0]))
        return pl_error_inval(arg, "resend needs a MessageId (the entity's duplicate detection keys on it)");
    return PL_OK;
}

int pl_wire_send(pl_request **out, const char *endpoint, const char *entity, const pl_outgoing *m,
                 const char *auth)
{
    if (!m) return pl_error_inval("m", "must not be NULL");
    if (resend_check(m, "m")) return PL_EINVAL;
    pl_request *r;
    int rc = req_base(&r, PL_OP_SEND, "POST", endpoint, entity, "/messages", auth);
    if (rc) return rc;
    char *bp = NULL;
    if ((rc = pl_outgoing_broker_json(&bp, m)) != PL_OK) goto fail;
    rc = pl_request_set_header(r, "Content-Type",
                               m->content_type ? m->content_type : "application/octet-stream");
    if (!rc && bp) rc = pl_request_set_header(r, "BrokerProperties", bp);
    free(bp);
    for (size_t i = 0; !rc && i < m->nprops; i++)
        rc = pl_request_set_header(r, m->props[i].name, m->props[i].raw);
    if (rc) goto fail;
    r->body = malloc(m->body_len + 1);
    if (!r->body) {
        rc = pl_error_nomem();
        goto fail;
    }
    memcpy(r->body, m->body, m->body_len);
    r->body_len = m->body_len;
    r->msg_count = 1;
    r->resend_ok = m->resend;
    *out = r;
    return PL_OK;
fail:
    pl_request_free(r);
    return rc;
}

int pl_wire_batch(pl_request **out, const char *endpoint, const char *entity, const pl_batch *b,
                  const char *auth)
{
    if (!b) return pl_error_inval("b", "must not be NULL");
    if (b->n == 0) return pl_error_inval("messages", "must not be empty");
    int resend_all = 1;
    for (size_t i = 0; i < b->n; i++) {
        if (resend_check(b->items[i], "messages")) return PL_EINVAL;
        resend_all = resend_all && b->items[i]->resend;
    }
    pl_request *r;
    int rc = req_base(&r, PL_OP_BATCH, "POST", endpoint, entity, "/messages", auth);
    if (rc) return rc;
    rc = pl_request_set_header(r, "Content-Type", "application/vnd.microsoft.servicebus.json");
    if (!rc) rc = pl_batch_json((char **)&r->body, &r->body_len, b);
    if (rc) {
        pl_request_free(r);
        return rc;
    }
    r->msg_count = b->n;
    r->resend_ok = resend_all;
    *out = r;
    return PL_OK;
}

int pl_wire_receive(pl_request **out, const char *endpoint, const char *entity, int timeout_s, int peek_lock,
                    const char *auth)
{
    if (pl_check_timeout(timeout_s)) return PL_EINVAL;
    char suffix[48] = "/messages/head?timeout=";
    char *d = suffix + sizeof "/messages/head?timeout=" - 1;
    if (timeout_s >= 100) *d++ = (char)('0' + timeout_s / 100);
    if (timeout_s >= 10) *d++ = (char)('0' + timeout_s / 10 % 10);
    *d++ = (char)('0' + timeout_s % 10);
    *d = '\0';
    int rc = req_base(out, peek_lock ? PL_OP_PEEKLOCK : PL_OP_RECVDEL, peek_lock ? "POST" : "DELETE",
                      endpoint, entity, suffix, auth);
    if (rc) return rc;
    (*out)->timeout_s = timeout_s;
    return PL_OK;
}

/* 1 when url is on the same scheme://host[:port] as endpoint and has a path. */
static int same_origin(const char *endpoint, const char *url)
{
    size_t n = strlen(endpoint);
    return pl_strncaseeq(endpoint, url, n) && url[n] == '/';
}

int pl_wire_settle(pl_request **out, const char *endpoint, const pl_message *m, int op, const char *auth)
{
    *out = NULL;
    if (!m) return pl_error_inval("m", "must not be NULL");
    if (op != PL_SETTLE_RENEW && op != PL_SETTLE_UNLOCK && op != PL_SETTLE_COMPLETE)
        return pl_error_inval("op", "must be PL_SETTLE_RENEW, PL_SETTLE_UNLOCK or PL_SETTLE_COMPLETE");
    if (!m->location || !m->lock_token)
        return pl_error_set(PL_ESTATE, 0, 0,
                            "message was not received with peek-lock: there is no lock to settle");
    if (!same_origin(endpoint, m->location))
        return pl_error_set(PL_EPROTOCOL, 0, 0, "message lock location is not on the client's endpoint");
    static const int ops[] = {0, PL_OP_RENEW, PL_OP_UNLOCK, PL_OP_COMPLETE};
    static const char *const methods[] = {"", "POST", "PUT", "DELETE"};
    /* The receive's scope (kept by the message), else made from the entity. */
    char *scope = NULL;
    int rc = PL_OK;
    if (!m->scope && m->entity && (rc = pl_wire_scope(&scope, endpoint, m->entity)) != PL_OK) return rc;
    pl_request *r = req_new(ops[op], methods[op], m->location, "",
                            m->scope ? m->scope
                            : scope  ? scope
                                     : "",
                            0, m->entity ? m->entity : "");
    int had_scope = m->scope || scope;
    free(scope);
    if (!r) return pl_error_nomem();
    if (!had_scope) r->scope = NULL;
    if (auth && (rc = pl_request_set_header(r, "Authorization", auth)) != PL_OK) {
        pl_request_free(r);
        return rc;
    }
    *out = r;
    return PL_OK;
}

const char *pl_request_method(const pl_request *r)
{
    return r ? r->method : NULL;
}
const char *pl_request_url(const pl_request *r)
{
    return r ? r->url : NULL;
}
size_t pl_request_header_count(const pl_request *r)
{
    return r ? r->nheaders : 0;
}
const char *pl_request_header_name(const pl_request *r, size_t i)
{
    return (r && i < r->nheaders) ? r->headers[i].name : NULL;
}
const char *pl_request_header_value(const pl_request *r, size_t i)
{
    return (r && i < r->nheaders) ? r->headers[i].value : NULL;
}
const void *pl_request_body(const pl_request *r, size_t *len)
{
    if (len) *len = r ? r->body_len : 0;
    return r ? r->body : NULL;
}

/* ---- responses ------------------------------------------------------------ */

int pl_response_new(pl_response **out, int status)
{
    if (!out) return pl_error_inval("out", "must not be NULL");
    *out = NULL;
    if (status < 100 || status > 999) return pl_error_inval("status", "must be an HTTP status 100..999");
    pl_response *r = calloc(1, sizeof *r);
    if (!r) return pl_error_nomem();
    r->status = status;
    *out = r;
    return PL_OK;
}

void pl_response_free(pl_response *r)
{
    if (!r) return;
    free(r->body);
    if (r->release) {
        r->release(r);
        return;
    }
    for (size_t i = 0; i < r->nheaders; i++) {
        free(r->headers[i].value);
        free(r->headers[i].name);
    }
    free(r->headers);
    free(r);
}

int pl_response_add_header(pl_response *r, const char *name, const char *value)
{
    if (!r) return pl_error_inval("resp", "must not be NULL");
    if (!name || !*name) return pl_error_inval("name", "must be a non-empty string");
    if (!value) return pl_error_inval("value", "must not be NULL");
    if (r->release) return pl_error_inval("resp", "was collected by a driver (read-only)");
    if (r->nheaders >= PL_MAX_HEADERS) {
        r->too_big = 1;
        return pl_error_set(PL_EPROTOCOL, 0, 0, "response has more than %d headers", PL_MAX_HEADERS);
    }
    if (strlen(name) > 1024 || strlen(value) > PL_MAX_HEADER_BYTES) {
        r->too_big = 1;
        return pl_error_set(PL_EPROTOCOL, 0, 0, "response header is longer than %d bytes",
                            PL_MAX_HEADER_BYTES);
    }
    size_t cap = r->nheaders + 1 > r->headers_cap ? r->nheaders + 1 : r->headers_cap;
    pl_header *nh = realloc(r->headers, cap * sizeof *nh);
    if (!nh) return pl_error_nomem();
    r->headers = nh;
    r->headers_cap = cap;
    nh[r->nheaders].name = pl_strdup(name);
    nh[r->nheaders].value = pl_strdup(value);
    if (!nh[r->nheaders].name || !nh[r->nheaders].value) {
        free(nh[r->nheaders].name);
        free(nh[r->nheaders].value);
        return pl_error_nomem();
    }
    nh[r->nheaders].kind = pl_header_kind(name, strlen(name));
    r->nheaders++;
    return PL_OK;
}

int pl_response_append_body(pl_response *r, const void *p, size_t n)
{
    if (n > PL_MAX_BODY_BYTES - r->body_len) {
        r->too_big = 1;
        return pl_error_set(PL_EPROTOCOL, 0, 0, "response body is larger than %zu bytes", PL_MAX_BODY_BYTES);
    }
    if (r->body_len + n + 1 > r->body_cap) {
        size_t cap = r->body_cap ? r->body_cap : 1024;
        while (cap < r->body_len + n + 1) cap *= 2;
        unsigned char *nb = realloc(r->body, cap);
        if (!nb) return pl_error_nomem();
        r->body = nb;
        r->body_cap = cap;
    }
    if (n) memcpy(r->body + r->body_len, p, n);
    r->body_len += n;
    r->body[r->body_len] = 0;
    return PL_OK;
}

int pl_response_set_body(pl_response *r, const void *body, size_t len)
{
    if (!r) return pl_error_inval("resp", "must not be NULL");
    if (!body && len) return pl_error_inval("body", "is NULL but len is not 0");
    r->body_len = 0;
    return pl_response_append_body(r, body, len);
}

const char *pl_response_header(const pl_response *r, const char *name)
{
    for (size_t i = 0; i < r->nheaders; i++)
        if (pl_strcaseeq(r->headers[i].name, name)) return r->headers[i].value;
    return NULL;
}

/* ---- errors --------------------------------------------------------------- */

static int hexval(int c)
{
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

/* s[0..n) lower-cased with every %XX decoded, as often as it stays encoded (a
 * crafted body may encode twice): a comparable form that literal patterns cannot
 * dodge. NULL when out of memory. */
static char *canonical(const char *s, size_t n)
{
    char *a = malloc(n + 1);
    if (!a) return NULL;
    for (size_t i = 0; i < n; i++) a[i] = (char)tolower((unsigned char)s[i]);
    a[n] = '\0';
    for (int round = 0; round < 4; round++) {
        size_t o = 0, changed = 0;
        for (size_t i = 0; a[i]; i++) {
            int h, l;
            if (a[i] == '%' && (h = hexval(a[i + 1])) >= 0 && (l = hexval(a[i + 2])) >= 0) {
                a[o++] = (char)tolower(h * 16 + l);
                i += 2;
                changed = 1;
            } else {
                a[o++] = a[i];
            }
        }
        a[o] = '\0';
        if (!changed) break;
    }
    return a;
}

/* 1 when the canonical hay holds the canonical form of the secret s. */
static int holds(const char *hay, const char *s, size_t n)
{
    if (!s || n < 4) return 0;
    char *c = canonical(s, n);
    int r = c ? strstr(hay, c) != NULL : 1;
    free(c);
    return r;
}

/* Whether [start, end) of an answer, decoded, holds anything that is or looks like
 * a secret: the request's lock token or signature (by value, however encoded), the
 * Authorization value, or the names that introduce one (pl_names_secret). */
static int echoes_secret(const char *start, const char *end, const pl_request *req, const char *token)
{
    char *hay = canonical(start, (size_t)(end - start));
    if (!hay) return 1;
    int r = pl_names_secret(hay) || holds(hay, token, token ? strlen(token) : 0);
    for (size_t i = 0; !r && req && i < req->nheaders; i++) {
        if (!pl_strcaseeq(req->headers[i].name, "Authorization")) continue;
        const char *v = req->headers[i].value, *sig = strstr(v, "sig=");
        if (sig) {
            sig += 4;
            r = holds(hay, sig, strcspn(sig, "&"));
        }
        r = r || holds(hay, v, strlen(v));
    }
    if (!r && req && req->op >= PL_OP_RENEW) { /* a settle URL ends with the lock token */
        const char *slash = strrchr(req->url, '/');
        if (slash) r = holds(hay, slash + 1, strcspn(slash + 1, "?"));
    }
    free(hay);
    return r;
}

/* Copies the <Detail> text (or the body) into out, control characters as spaces,
 * the client's own secret and every secret form (pl_redact) as <redacted>. An
 * answer that echoes anything like a request's secret (echoes_secret) is withheld
 * whole. */
static void error_detail(char *out, size_t outlen, const pl_response *resp, const pl_request *req,
                         const char *secret)
{
    out[0] = '\0';
    if (!resp->body || !resp->body_len) return;
    const char *b = (const char *)resp->body, *start = b, *end = b + resp->body_len;
    const char *d = strstr(b, "<Detail>");
    if (d) {
        start = d + 8;
        const char *e = strstr(start, "</Detail>");
        if (e) end = e;
    }
    if (echoes_secret(start, end, req, secret)) {
        snprintf(out, outlen, "(detail withheld: the answer echoed what may be a secret)");
        return;
    }
    pl_buf plain = PL_BUF_INIT, red = PL_BUF_INIT;
    size_t slen = secret ? strlen(secret) : 0;
    for (const char *p = start; p < end; p++) {
        if (slen && (size_t)(end - p) >= slen && pl_strncaseeq(p, secret, slen)) {
            pl_buf_puts(&plain, "<redacted>");
            p += slen - 1;
            continue;
        }
        unsigned char c = (unsigned char)*p;
        char ch = (c < 0x20 || c == 0x7f) ? ' ' : (char)c;
        pl_buf_append(&plain, &ch, 1);
    }
    if (!plain.oom) pl_redact_append(&red, plain.data ? plain.data : "", plain.len);
    if (plain.oom || red.oom)
        snprintf(out, outlen, "(detail withheld: out of memory)");
    else
        snprintf(out, outlen, "%s", red.data ? red.data : "");
    pl_buf_free(&plain);
    pl_buf_free(&red);
}

static int contains_ci(const char *hay, size_t n, const char *needle)
{
    size_t k = strlen(needle);
    for (size_t i = 0; i + k <= n; i++)
        if (pl_strncaseeq(hay + i, needle, k)) return 1;
    return 0;
}

/* The code an HTTP error status stands for, and whether retrying may succeed: the one
 * table (pl_http_status_error's comment in peeklock.h). A 404 of a settle is the lock's
 * end (the message or its lock is gone); body (len bytes) only tells a 403 for a size
 * apart. */
static int status_code(int st, int settle, const char *body, size_t len, int *retry)
{
    *retry = 0;
    switch (st) {
    case 400: return PL_EBADREQUEST;
    case 401: return PL_EAUTH;
    case 403:
        return (contains_ci(body, len, "size") || contains_ci(body, len, "too large")) ? PL_ETOOLARGE
                                                                                       : PL_EAUTH;
    case 404: return settle ? PL_ELOCKLOST : PL_ENOTFOUND;
    case 410: return PL_ENOTFOUND;
    case 409: return PL_ECONFLICT;
    case 429:
    case 503: *retry = 1; return PL_ETHROTTLED;
    default:
        if (st >= 500 && st <= 599) {
            *retry = 1;
            return PL_ESERVER;
        }
        return PL_EHTTP;
    }
}

int pl_http_status_error(int status, const char *body, const char *what)
{
    int retry, code = status_code(status, 0, body ? body : "", body ? strlen(body) : 0, &retry);
    return pl_error_set(code, status, retry, "%.200s: HTTP %d", what ? what : "request", status);
}

int pl_wire_status_error_m(const pl_request *req, const pl_response *resp, const pl_message *m);
int pl_wire_status_error_m(const pl_request *req, const pl_response *resp, const pl_message *m)
{
    int st = resp->status, retry;
    int settle = req->op == PL_OP_RENEW || req->op == PL_OP_UNLOCK || req->op == PL_OP_COMPLETE;
    const char *body = resp->body ? (const char *)resp->body : "";
    int code = status_code(st, settle, body, resp->body_len, &retry);
    char detail[240];
    error_detail(detail, sizeof detail, resp, req, m ? m->lock_token : NULL);
    return pl_error_set(code, st, retry, "%s on '%.200s': HTTP %d%s%s", pl_wire_op_name(req->op),
                        req->entity ? req->entity : "", st, detail[0] ? ": " : "", detail);
}

int pl_wire_status_error(const pl_request *req, const pl_response *resp)
{
    return pl_wire_status_error_m(req, resp, NULL);
}

/* ---- results ------------------------------------------------------------- */

static int build_message(pl_message **out, const char *endpoint, const pl_request *req,
                         const pl_response *resp, int64_t sent_mono_ms)
{
    int peek = req->op == PL_OP_PEEKLOCK;
    /* One pass over the headers (each classified once, when collected): the
     * first Content-Type, BrokerProperties, Location and Date (as
     * pl_response_header would find them), which headers are custom
     * properties, and the size of everything the message keeps, so that it
     * is one allocation. */
    const char *ct = NULL, *bp = NULL, *loc = NULL, *date = NULL;
    size_t ctlen = 0, bplen = 0, loclen = 0, ncustom = 0;
    size_t elen = strlen(req->entity), slen = peek && req->scope ? strlen(req->scope) : 0;
    size_t arena = elen + 1 + resp->body_len + 1 + (peek && req->scope ? slen + 1 : 0);
    for (size_t i = 0; i < resp->nheaders; i++) {
        const pl_header *h = &resp->headers[i];
        size_t vlen = strlen(h->value);
        switch (h->kind >= 0 ? h->kind : pl_header_kind(h->name, strlen(h->name))) {
        case PL_HDR_CUSTOM:
            ncustom++;
            arena += strlen(h->name) + 1 + 2 * (vlen + 1);
            break;
        case PL_HDR_CONTENT_TYPE:
            if (!ct) {
                ct = h->value;
                ctlen = vlen;
            }
            break;
        case PL_HDR_BROKER:
            if (!bp) {
                bp = h->value;
                bplen = vlen;
            }
            break;
        case PL_HDR_LOCATION:
            if (!loc) {
                loc = h->value;
                loclen = vlen;
            }
            break;
        case PL_HDR_DATE:
            if (!date) date = h->value;
            break;
        default: break;
        }
    }
    if (ct) arena += ctlen + 1;
    /* its string values (never longer decoded than quoted; the raw JSON is
     * copied apart, see pl_message_parse_broker) */
    if (bp) arena += bplen + 1;
    if (peek && loc) arena += loclen + 1;
    pl_message *m = pl_message_alloc_arena(ncustom, arena);
    if (!m) return pl_error_nomem();
    int rc = PL_OK;
    m->entity = pl_message_strndup(m, req->entity, elen);
    m->body = (unsigned char *)pl_message_strndup(
        m, (const char *)(resp->body ? resp->body : (const unsigned char *)""), resp->body_len);
    if (!m->entity || !m->body) {
        rc = pl_error_nomem();
        goto fail;
    }
    m->body_len = resp->body_len;
    if (ct && !(m->content_type = pl_message_strndup(m, ct, ctlen)))
        rc = pl_error_nomem();
    else if (bp)
        rc = pl_message_parse_broker(m, bp, bplen);
    else /* a 200 without it is not a message: e.g. an answer cut short after the status line */
        rc = pl_error_set(PL_EPROTOCOL, resp->status, 0, "%s response has no BrokerProperties",
                          peek ? "peek-lock" : "receive-and-delete");
    for (size_t i = 0; !rc && i < resp->nheaders; i++) {
        const pl_header *h = &resp->headers[i];
        if ((h->kind >= 0 ? h->kind : pl_header_kind(h->name, strlen(h->name))) == PL_HDR_CUSTOM)
            rc = pl_message_add_received_prop_n(m, h->name, strlen(h->name), h->value, strlen(h->value));
    }
    if (rc) goto fail;
    if (peek) {
        if (!loc || !*loc) {
            rc = pl_error_set(PL_EPROTOCOL, resp->status, 0, "peek-lock response has no Location");
            goto fail;
        }
        if (!same_origin(endpoint, loc)) {
            rc = pl_error_set(PL_EPROTOCOL, resp->status, 0,
                              "peek-lock Location does not point at the client's endpoint");
            goto fail;
        }
        for (const unsigned char *c = (const unsigned char *)loc; *c; c++)
            if (*c <= 0x20 || *c == 0x7f) {
                rc = pl_error_set(PL_EPROTOCOL, resp->status, 0, "peek-lock Location is not a valid URL");
                goto fail;
            }
        if (!m->lock_token) {
            rc = pl_error_set(PL_EPROTOCOL, resp->status, 0, "peek-lock response has no LockToken");
            goto fail;
        }
        if (!(m->location = pl_message_strndup(m, loc, loclen))) {
            rc = pl_error_nomem();
            goto fail;
        }
        if (req->scope && !(m->scope = pl_message_strndup(m, req->scope, slen))) {
            rc = pl_error_nomem();
            goto fail;
        }
        /* Lock duration: LockedUntilUtc minus the response's Date (same server clock). */
        int64_t date_s = m->locked_until >= 0 ? pl_http_date_parse(date) : -1;
        int64_t dur = 60000;
        if (m->locked_until >= 0 && date_s >= 0) {
            int64_t d = m->locked_until - date_s;
            if (d < 1 || d > 3600) {
                rc = pl_error_set(
                    PL_EPROTOCOL, resp->status, 0,
                    "peek-lock response: LockedUntilUtc minus Date is %lld s, not a lock duration",
                    (long long)d);
                goto fail;
            }
            dur = d * 1000;
        }
        m->lock_duration_ms = dur;
        pl_message_set_state(m, PL_LOCK_HELD);
        pl_message_extend(m, sent_mono_ms);
    }
    *out = m;
    return PL_OK;
fail:
    pl_message_free(m);
    return rc;
}

int pl_wire_result(pl_message **out, const char *endpoint, const pl_request *req, pl_message *m,
                   const pl_response *resp, int64_t sent_mono_ms)
{
    if (out) *out = NULL;
    if (!req) return pl_error_inval("req", "must not be NULL");
    if (!resp) return pl_error_inval("resp", "must not be NULL");
    if (resp->too_big)
        return pl_error_set(PL_EPROTOCOL, resp->status, 0, "%s: response exceeded a size limit",
                            pl_wire_op_name(req->op));
    int st = resp->status;
    switch (req->op) {
    case PL_OP_SEND:
    case PL_OP_BATCH:
        if (st == 200 || st == 201) {
            pl_error_ok();
            return PL_OK;
        }
        return pl_wire_status_error(req, resp);
    case PL_OP_PEEKLOCK:
    case PL_OP_RECVDEL:
        if (!out) return pl_error_inval("out", "must not be NULL for a receive");
        if (st == 204) {
            pl_error_ok();
            return PL_EMPTY;
        }
        if (st == 200 || st == 201) {
            int rc = build_message(out, endpoint, req, resp, sent_mono_ms);
            if (rc)
                pl_error_prefix(pl_wire_op_name(req->op));
            else
                pl_error_ok();
            return rc;
        }
        return pl_wire_status_error(req, resp);
    case PL_OP_RENEW:
    case PL_OP_UNLOCK:
    case PL_OP_COMPLETE:
        if (!m) return pl_error_inval("m", "must not be NULL for a renew, unlock or complete");
        if (st >= 200 && st <= 299) {
            if (req->op == PL_OP_RENEW) {
                if (pl_message_state(m) == PL_LOCK_HELD) pl_message_extend(m, sent_mono_ms);
            } else if (!pl_message_cas_state(m, PL_LOCK_SETTLING, PL_LOCK_SETTLED)) {
                pl_message_cas_state(m, PL_LOCK_HELD, PL_LOCK_SETTLED);
            }
            pl_error_ok();
            return PL_OK;
        }
        {
            int rc = pl_wire_status_error_m(req, resp, m);
            if (rc == PL_ELOCKLOST || rc == PL_ENOTFOUND) {
                if (req->op == PL_OP_RENEW) {
                    /* A renew never decides the fate of a message being settled:
                     * if a settle started meanwhile, its own answer counts. */
                    if (!pl_message_mark_lost(m, rc, 0) && pl_message_state(m) != PL_LOCK_LOST)
                        return pl_error_set(PL_ESTATE, resp->status, 0,
                                            "renew-lock: the message was settled meanwhile");
                } else {
                    pl_message_mark_lost(m, rc, 1);
                }
            }
            return rc;
        }
    default: return pl_error_set(PL_EINTERNAL, 0, 0, "unknown request kind");
    }
}
