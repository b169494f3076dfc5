/* Messages: outgoing (body, BrokerProperties, custom properties), batches, and
 * received messages with their BrokerProperties and custom properties. Pure. */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "error_int.h"
#include "message_int.h"

/* A received TimeToLive at or above TimeSpan.MaxValue in whole seconds: the
 * service's "never expires" (it sends 922337203685.47754). */
#define PL_TTL_NONE_SECONDS 922337203685.0

const char *const pl_outgoing_field_names[PL_OUT_NFIELDS] = {
    "MessageId",        "Label", "CorrelationId",   "SessionId", "PartitionKey", "ReplyTo",
    "ReplyToSessionId", "To",    "ViaPartitionKey",
};

/* The same fields as the bindings name them, for the argument errors. */
static const char *const field_args[PL_OUT_NFIELDS] = {
    "message_id",          "label", "correlation_id",    "session_id", "partition_key", "reply_to",
    "reply_to_session_id", "to",    "via_partition_key",
};

int pl_broker_field_count(void)
{
    return PL_OUT_NFIELDS;
}

const char *pl_broker_field_name(int i)
{
    return i >= 0 && i < PL_OUT_NFIELDS ? pl_outgoing_field_names[i] : NULL;
}

const char *pl_broker_field_arg(int i)
{
    return i >= 0 && i < PL_OUT_NFIELDS ? field_args[i] : NULL;
}

static const char *const received_string_fields[10] = {
    "MessageId",        "Label", "CorrelationId", "SessionId",       "PartitionKey", "ReplyTo",
    "ReplyToSessionId", "To",    "State",         "ViaPartitionKey",
};

/* Headers that are never custom properties, classified with one switch on the
 * (lower-cased) first letter and the length: this runs for every response
 * header of every receive. */
int pl_header_kind(const char *name, size_t n)
{
#define IS(s) (n == sizeof s - 1 && pl_strncaseeq(name, s, n))
    unsigned char c = (unsigned char)name[0];
    if (c >= 'A' && c <= 'Z') c = (unsigned char)(c + 32);
    switch (c) {
    case 'a':
        return IS("authorization") || IS("accept") || IS("accept-encoding") || IS("alt-svc") ||
                       IS("accept-ranges")
                   ? PL_HDR_RESERVED
                   : PL_HDR_CUSTOM;
    case 'b': return IS("brokerproperties") ? PL_HDR_BROKER : PL_HDR_CUSTOM;
    case 'c':
        if (IS("content-type")) return PL_HDR_CONTENT_TYPE;
        return IS("content-length") || IS("content-encoding") || IS("connection") || IS("cookie") ||
                       IS("cache-control")
                   ? PL_HDR_RESERVED
                   : PL_HDR_CUSTOM;
    case 'd': return IS("date") ? PL_HDR_DATE : PL_HDR_CUSTOM;
    case 'e': return IS("expect") || IS("expires") || IS("etag") ? PL_HDR_RESERVED : PL_HDR_CUSTOM;
    case 'h': return IS("host") ? PL_HDR_RESERVED : PL_HDR_CUSTOM;
    case 'i': return IS("if-match") ? PL_HDR_RESERVED : PL_HDR_CUSTOM;
    case 'k': return IS("keep-alive") ? PL_HDR_RESERVED : PL_HDR_CUSTOM;
    case 'l':
        if (IS("location")) return PL_HDR_LOCATION;
        return IS("last-modified") ? PL_HDR_RESERVED : PL_HDR_CUSTOM;
    case 'p':
        return IS("pragma") || IS("proxy-authorization") || IS("proxy-connection") ? PL_HDR_RESERVED
                                                                                   : PL_HDR_CUSTOM;
    case 'r': return IS("retry-after") ? PL_HDR_RETRY_AFTER : PL_HDR_CUSTOM;
    case 's':
        return IS("server") || IS("set-cookie") || IS("strict-transport-security") ? PL_HDR_RESERVED
                                                                                   : PL_HDR_CUSTOM;
    case 't': return IS("transfer-encoding") || IS("te") || IS("trailer") ? PL_HDR_RESERVED : PL_HDR_CUSTOM;
    case 'u': return IS("upgrade") || IS("user-agent") ? PL_HDR_RESERVED : PL_HDR_CUSTOM;
    case 'v': return IS("vary") || IS("via") ? PL_HDR_RESERVED : PL_HDR_CUSTOM;
    case 'x':
        return IS("x-ms-retrypolicy") || IS("x-content-type-options") || IS("x-powered-by") ||
                       IS("x-ms-version")
                   ? PL_HDR_RESERVED
                   : PL_HDR_CUSTOM;
    default: return PL_HDR_CUSTOM;
    }
#undef IS
}

int pl_header_is_reserved(const char *name);
int pl_header_is_reserved(const char *name)
{
    return pl_header_kind(name, strlen(name)) != PL_HDR_CUSTOM;
}

static int is_token_char(unsigned char c)
{
    return isalnum(c) || (c && strchr("!#$%&'*+-.^_`|~", c));
}

/* ------------------------------------------------------------------------ */
/* properties                                                                 */

static void prop_clear(pl_prop *p)
{
    free(p->name);
    free(p->raw);
    free(p->text);
    memset(p, 0, sizeof *p);
}

static void props_free(pl_prop *props, size_t n)
{
    for (size_t i = 0; i < n; i++) prop_clear(&props[i]);
    free(props);
}

/* Types v (n bytes) into p; p->text = t, which has room for n + 1 bytes. */
static void prop_parse_into(pl_prop *p, const char *v, size_t n, char *t)
{
    p->i = 0;
    p->d = 0;
    p->text = t;
    if (n >= 2 && v[0] == '"' && v[n - 1] == '"') {
        char *o = t;
        for (size_t k = 1; k + 1 < n; k++) {
            if (v[k] == '\\' && k + 2 < n && (v[k + 1] == '"' || v[k + 1] == '\\')) k++;
            *o++ = v[k];
        }
        *o = '\0';
        int64_t when = pl_http_date_parse(t);
        if (when >= 0) {
            p->type = PL_PROP_DATETIME;
            p->i = when;
        } else {
            p->type = PL_PROP_STRING;
            p->i = -1;
        }
        return;
    }
    memcpy(t, v, n + 1);
    if (pl_strcaseeq(v, "true") || pl_strcaseeq(v, "false")) {
        p->type = PL_PROP_BOOL;
        p->i = pl_strcaseeq(v, "true");
        p->d = (double)p->i;
        return;
    }
    const char *q = v;
    if (*q == '-' || *q == '+') q++;
    int digits = 0;
    while (isdigit((unsigned char)*q)) {
        q++;
        digits++;
    }
    if (digits && !*q && digits <= 19) {
        /* every 64-bit integer is an int; past its range the text is a double */
        errno = 0;
        long long iv = strtoll(v, NULL, 10);
        if (errno != ERANGE) {
            p->type = PL_PROP_INT;
            p->i = iv;
            p->d = (double)iv;
            return;
        }
    }
    if (n && (isdigit((unsigned char)v[0]) || v[0] == '-' || v[0] == '+' || v[0] == '.')) {
        char *end = NULL;
        double d = strtod(v, &end);
        if (end && !*end && isfinite(d)) {
            p->type = PL_PROP_DOUBLE;
            p->d = d;
            p->i = (d >= -9.2e18 && d <= 9.2e18) ? (int64_t)d : 0;
            return;
        }
    }
    p->type = PL_PROP_STRING;
    p->i = -1;
}

int pl_prop_parse_value(pl_prop *p, const char *v)
{
    size_t n = strlen(v);
    char *t = malloc(n + 1);
    if (!t) return PL_ENOMEM;
    prop_parse_into(p, v, n, t);
    return PL_OK;
}

/* 1 when p lies in m's own allocation (freed with it). */
static int in_arena(const pl_message *m, const void *p)
{
    uintptr_t a = (uintptr_t)p;
    return a >= (uintptr_t)m && a < (uintptr_t)m->arena_end;
}

static void msg_release(pl_message *m, void *p)
{
    if (p && !in_arena(m, p)) free(p);
}

/* n bytes of m's arena (aligned to align), or malloc'd. */
static void *msg_alloc(pl_message *m, size_t n, size_t align)
{
    if (m->arena_pos) {
        uintptr_t a = ((uintptr_t)m->arena_pos + (align - 1)) & ~(uintptr_t)(align - 1);
        if (a <= (uintptr_t)m->arena_end && n <= (uintptr_t)m->arena_end - a) {
            m->arena_pos = (char *)(a + n);
            return (void *)a;
        }
    }
    return malloc(n ? n : 1);
}

char *pl_message_strndup(pl_message *m, const char *s, size_t n)
{
    char *d = msg_alloc(m, n + 1, 1);
    if (!d) return NULL;
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

int pl_message_add_received_prop_n(pl_message *m, const char *name, size_t nlen, const char *value,
                                   size_t vlen)
{
    if (m->nprops == m->props_cap) {
        size_t cap = m->props_cap ? m->props_cap * 2 : 4;
        pl_prop *np;
        if (m->props && in_arena(m, m->props)) {
            if ((np = malloc(cap * sizeof *np)) != NULL) memcpy(np, m->props, m->nprops * sizeof *np);
        } else {
            np = realloc(m->props, cap * sizeof *np);
        }
        if (!np) return pl_error_nomem();
        m->props = np;
        m->props_cap = cap;
    }
    pl_prop *p = &m->props[m->nprops];
    memset(p, 0, sizeof *p);
    p->name = pl_message_strndup(m, name, nlen);
    p->raw = pl_message_strndup(m, value, vlen);
    char *t = msg_alloc(m, vlen + 1, 1);
    if (!p->name || !p->raw || !t) {
        msg_release(m, p->name);
        msg_release(m, p->raw);
        msg_release(m, t);
        memset(p, 0, sizeof *p);
        return pl_error_nomem();
    }
    prop_parse_into(p, value, vlen, t);
    m->nprops++;
    return PL_OK;
}

int pl_message_add_received_prop(pl_message *m, const char *name, const char *value)
{
    return pl_message_add_received_prop_n(m, name, strlen(name), value, strlen(value));
}

/* ------------------------------------------------------------------------ */
/* received messages                                                          */

/* A zeroed message's counters and "absent" markers; returns m. */
static pl_message *message_init(pl_message *m)
{
    atomic_init(&m->refs, 1);
    atomic_init(&m->lock_state, PL_LOCK_NONE);
    atomic_init(&m->lost_reason, 0);
    atomic_init(&m->settle_kind, 0);
    atomic_init(&m->lock_expiry_mono_ms, 0);
    m->seq = m->enqueued_seq = m->enqueued_time = m->locked_until = -1;
    m->delivery_count = -1;
    m->ttl = -1;
    return m;
}

pl_message *pl_message_alloc_arena(size_t nprops_cap, size_t arena)
{
    size_t table = nprops_cap * sizeof(pl_prop);
    pl_message *m = malloc(sizeof *m + table + arena);
    if (!m) return NULL;
    memset(m, 0, sizeof *m);
    m->arena_pos = (char *)(m + 1);
    m->arena_end = m->arena_pos + table + arena;
    if (nprops_cap) {
        m->props = msg_alloc(m, table, _Alignof(pl_prop));
        m->props_cap = nprops_cap;
    }
    return message_init(m);
}

pl_message *pl_message_alloc(void)
{
    pl_message *m = calloc(1, sizeof *m);
    if (!m) return NULL;
    return message_init(m);
}

void pl_message_free(pl_message *m)
{
    if (!m) return;
    if (atomic_fetch_sub(&m->refs, 1) != 1) return;
    msg_release(m, m->entity);
    msg_release(m, m->location);
    msg_release(m, m->scope);
    if (m->lock_token) {
        memset(m->lock_token, 0, strlen(m->lock_token));
        msg_release(m, m->lock_token);
    }
    msg_release(m, m->body);
    msg_release(m, m->content_type);
    if (m->broker_json) {
        memset(m->broker_json, 0, strlen(m->broker_json));
        msg_release(m, m->broker_json);
    }
    for (size_t i = 0; i < 10; i++) msg_release(m, m->broker_str[i]);
    for (size_t i = 0; i < m->nprops; i++) {
        msg_release(m, m->props[i].name);
        msg_release(m, m->props[i].raw);
        msg_release(m, m->props[i].text);
    }
    msg_release(m, m->props);
    void (*release)(void *) = m->owner_release;
    void *owner = m->owner;
    free(m);
    if (release) release(owner);
}

int pl_message_mark_lost(pl_message *m, int reason, int from_settling)
{
    int made = pl_message_cas_state(m, PL_LOCK_HELD, PL_LOCK_LOST);
    if (!made && from_settling) made = pl_message_cas_state(m, PL_LOCK_SETTLING, PL_LOCK_LOST);
    if (made) atomic_store(&m->lost_reason, reason);
    return made;
}

static int broker_index_n(const char *field, size_t n)
{
    static const size_t lens[10] = {9, 5, 13, 9, 12, 7, 16, 2, 5, 15};
    for (int i = 0; i < 10; i++)
        if (lens[i] == n && field[0] == received_string_fields[i][0] &&
            memcmp(field, received_string_fields[i], n) == 0)
            return i;
    return -1;
}

int pl_message_broker_index(const char *field)
{
    static const size_t lens[10] = {9, 5, 13, 9, 12, 7, 16, 2, 5, 15};
    if (!field) return -1;
    size_t n = strlen(field);
    for (int i = 0; i < 10; i++)
        if (lens[i] == n && field[0] == received_string_fields[i][0] &&
            memcmp(field, received_string_fields[i], n) == 0)
            return i;
    return -1;
}

static int json_int64(const cJSON *it, int64_t *out)
{
    if (cJSON_IsNumber(it)) {
        double d = it->valuedouble;
        if (!isfinite(d) || d < -9.2e18 || d > 9.2e18 || floor(d) != d) return -1;
        *out = (int64_t)d;
        return 0;
    }
    if (cJSON_IsString(it) && it->valuestring[0]) {
        char *end = NULL;
        long long v = strtoll(it->valuestring, &end, 10);
        if (!end || *end) return -1;
        *out = v;
        return 0;
    }
    return -1;
}

int pl_message_parse_broker(pl_message *m, const char *json, size_t len)
{
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(json, len, &end, 0);
    if (!root) return pl_error_set(PL_EPROTOCOL, 0, 0, "BrokerProperties header is not valid JSON");
    int rc = PL_OK;
    if (!cJSON_IsObject(root)) {
        rc = pl_error_set(PL_EPROTOCOL, 0, 0, "BrokerProperties header is not a JSON object");
        goto done;
    }
    /* trailing garbage after the object */
    for (const char *p = end; p && p < json + len; p++) {
        if (!isspace((unsigned char)*p)) {
            rc = pl_error_set(PL_EPROTOCOL, 0, 0, "BrokerProperties header has text after the JSON object");
            goto done;
        }
    }
    for (const cJSON *it = root->child; it; it = it->next) {
        const char *k = it->string;
        if (!k || cJSON_IsNull(it)) continue;
        size_t kl = strlen(k);
#define KEY(s) (kl == sizeof s - 1 && memcmp(k, s, sizeof s - 1) == 0)
        int si = broker_index_n(k, kl);
        if (si >= 0) {
            if (!cJSON_IsString(it)) {
                rc = pl_error_set(PL_EPROTOCOL, 0, 0, "BrokerProperties: %s is not a string", k);
                goto done;
            }
            msg_release(m, m->broker_str[si]);
            m->broker_str[si] = pl_message_strndup(m, it->valuestring, strlen(it->valuestring));
            if (!m->broker_str[si]) {
                rc = pl_error_nomem();
                goto done;
            }
        } else if (KEY("LockToken")) {
            if (!cJSON_IsString(it) || !it->valuestring[0]) {
                rc = pl_error_set(PL_EPROTOCOL, 0, 0, "BrokerProperties: LockToken is not a string");
                goto done;
            }
            for (const char *c = it->valuestring; *c; c++) {
                if (!isalnum((unsigned char)*c) && *c != '-') {
                    rc = pl_error_set(PL_EPROTOCOL, 0, 0,
                                      "BrokerProperties: LockToken has an invalid character");
                    goto done;
                }
            }
            if (m->lock_token) memset(m->lock_token, 0, strlen(m->lock_token));
            msg_release(m, m->lock_token);
            m->lock_token = pl_message_strndup(m, it->valuestring, strlen(it->valuestring));
            if (!m->lock_token) {
                rc = pl_error_nomem();
                goto done;
            }
        } else if (KEY("SequenceNumber") || KEY("EnqueuedSequenceNumber")) {
            if (json_int64(it, k[0] == 'S' ? &m->seq : &m->enqueued_seq)) {
                rc = pl_error_set(PL_EPROTOCOL, 0, 0, "BrokerProperties: %s is not an integer", k);
                goto done;
            }
        } else if (KEY("DeliveryCount")) {
            int64_t v;
            if (json_int64(it, &v) || v < 0 || v > 1000000000) {
                rc = pl_error_set(PL_EPROTOCOL, 0, 0, "BrokerProperties: DeliveryCount is not a count");
                goto done;
            }
            m->delivery_count = (int)v;
        } else if (KEY("EnqueuedTimeUtc") || KEY("LockedUntilUtc")) {
            int64_t t = cJSON_IsString(it) ? pl_http_date_parse(it->valuestring) : -1;
            if (t < 0) {
                rc = pl_error_set(PL_EPROTOCOL, 0, 0, "BrokerProperties: %s is not an RFC 1123 date", k);
                goto done;
            }
            if (k[0] == 'E')
                m->enqueued_time = t;
            else
                m->locked_until = t;
        } else if (KEY("TimeToLive")) {
            double d = -1;
            if (cJSON_IsNumber(it))
                d = it->valuedouble;
            else if (cJSON_IsString(it) && it->valuestring[0]) {
                char *e = NULL;
                d = strtod(it->valuestring, &e);
                if (!e || *e) d = -1;
            }
            if (!isfinite(d) || d < 0) {
                rc = pl_error_set(PL_EPROTOCOL, 0, 0,
                                  "BrokerProperties: TimeToLive is not a number of seconds");
                goto done;
            }
            /* TimeSpan.MaxValue (922337203685.4775807 s) is the service's "no time to
             * live": reported as absent, -1 */
            m->ttl = d >= PL_TTL_NONE_SECONDS ? -1 : d;
        }
    }
#undef KEY
    if (m->broker_json) memset(m->broker_json, 0, strlen(m->broker_json));
    msg_release(m, m->broker_json);
    /* The raw copy is a block of its own, outside the message's arena: that
     * keeps a typical received message under glibc's 1 KiB large-request size,
     * whose malloc first consolidates every small chunk freed before (cJSON
     * frees about thirty per parse, a Lua or Python host far more). */
    if (!(m->broker_json = pl_strndup(json, len))) rc = pl_error_nomem();
done:
    cJSON_Delete(root);
    return rc;
}

const void *pl_message_body(const pl_message *m, size_t *len)
{
    if (!m) {
        if (len) *len = 0;
        return NULL;
    }
    if (len) *len = m->body_len;
    return m->body ? (const void *)m->body : (const void *)"";
}
const char *pl_message_content_type(const pl_message *m)
{
    return m ? m->content_type : NULL;
}
const char *pl_message_entity(const pl_message *m)
{
    return m ? m->entity : NULL;
}
const char *pl_message_broker(const pl_message *m, const char *field)
{
    int i = pl_message_broker_index(field);
    return (m && i >= 0) ? m->broker_str[i] : NULL;
}
const char *pl_message_id(const pl_message *m)
{
    return m ? m->broker_str[0] : NULL;
}
int64_t pl_message_sequence_number(const pl_message *m)
{
    return m ? m->seq : -1;
}
int64_t pl_message_enqueued_sequence_number(const pl_message *m)
{
    return m ? m->enqueued_seq : -1;
}
int pl_message_delivery_count(const pl_message *m)
{
    return m ? m->delivery_count : -1;
}
int64_t pl_message_enqueued_time(const pl_message *m)
{
    return m ? m->enqueued_time : -1;
}
int64_t pl_message_locked_until(const pl_message *m)
{
    return m ? m->locked_until : -1;
}
double pl_message_time_to_live(const pl_message *m)
{
    return m ? m->ttl : -1;
}
const char *pl_message_broker_properties_json(const pl_message *m)
{
    return m ? m->broker_json : NULL;
}
const char *pl_message_lock_token(const pl_message *m)
{
    return m ? m->lock_token : NULL;
}
size_t pl_message_property_count(const pl_message *m)
{
    return m ? m->nprops : 0;
}
const char *pl_message_property_name(const pl_message *m, size_t i)
{
    return (m && i < m->nprops) ? m->props[i].name : NULL;
}
int pl_message_property_type(const pl_message *m, size_t i)
{
    return (m && i < m->nprops) ? m->props[i].type : 0;
}
const char *pl_message_property_raw(const pl_message *m, size_t i)
{
    return (m && i < m->nprops) ? m->props[i].raw : NULL;
}
const char *pl_message_property_string(const pl_message *m, size_t i)
{
    return (m && i < m->nprops) ? m->props[i].text : NULL;
}
int64_t pl_message_property_int(const pl_message *m, size_t i)
{
    return (m && i < m->nprops) ? m->props[i].i : 0;
}
double pl_message_property_double(const pl_message *m, size_t i)
{
    return (m && i < m->nprops) ? m->props[i].d : 0;
}
int pl_message_property_bool(const pl_message *m, size_t i)
{
    return (m && i < m->nprops && m->props[i].type == PL_PROP_BOOL) ? (int)m->props[i].i : 0;
}
int64_t pl_message_property_datetime(const pl_message *m, size_t i)
{
    return (m && i < m->nprops && m->props[i].type == PL_PROP_DATETIME) ? m->props[i].i : -1;
}
const char *pl_lock_state_name(int state)
{
    static const char *const names[] = {
        [PL_LOCK_NONE] = "none",       [PL_LOCK_HELD] = "held", [PL_LOCK_SETTLING] = "settling",
        [PL_LOCK_SETTLED] = "settled", [PL_LOCK_LOST] = "lost", [PL_LOCK_UNKNOWN] = "unknown",
    };
    return (state >= 0 && state < (int)(sizeof names / sizeof names[0])) ? names[state] : NULL;
}
int pl_message_lock_state(const pl_message *m)
{
    return m ? pl_message_state(m) : PL_LOCK_NONE;
}
int pl_message_settle_kind(const pl_message *m)
{
    return m ? atomic_load(&((pl_message *)m)->settle_kind) : 0;
}
int64_t pl_message_lock_duration_ms(const pl_message *m)
{
    return m ? m->lock_duration_ms : 0;
}
int64_t pl_message_lock_expiry_mono_ms(const pl_message *m)
{
    return m ? atomic_load(&((pl_message *)m)->lock_expiry_mono_ms) : 0;
}
int pl_message_lost_reason(const pl_message *m)
{
    return m ? atomic_load(&((pl_message *)m)->lost_reason) : 0;
}

/* ------------------------------------------------------------------------ */
/* outgoing                                                                   */

int pl_outgoing_new(pl_outgoing **out, const void *body, size_t len)
{
    if (!out) return pl_error_inval("out", "must not be NULL");
    *out = NULL;
    if (!body && len) return pl_error_inval("body", "is NULL but len is not 0");
    pl_outgoing *m = calloc(1, sizeof *m);
    if (!m) return pl_error_nomem();
    m->body = malloc(len + 1);
    if (!m->body) {
        free(m);
        return pl_error_nomem();
    }
    if (len) memcpy(m->body, body, len);
    m->body[len] = 0;
    m->body_len = len;
    m->ttl = -1;
    m->scheduled = -1;
    m->force_persistence = -1;
    *out = m;
    pl_error_ok();
    return PL_OK;
}

void pl_outgoing_free(pl_outgoing *m)
{
    if (!m) return;
    free(m->body);
    free(m->content_type);
    for (int i = 0; i < PL_OUT_NFIELDS; i++) free(m->fields[i]);
    props_free(m->props, m->nprops);
    free(m);
}

static int check_header_text(const char *arg, const char *v)
{
    for (const unsigned char *p = (const unsigned char *)v; *p; p++)
        if ((*p < 0x20 && *p != '\t') || *p == 0x7f)
            return pl_error_inval(arg, "contains a control character (not allowed in a header)");
    return PL_OK;
}

int pl_outgoing_set_content_type(pl_outgoing *m, const char *ct)
{
    if (!m) return pl_error_inval("m", "must not be NULL");
    if (ct && (!*ct || check_header_text("content_type", ct)))
        return ct && !*ct ? pl_error_inval("content_type", "must not be empty") : PL_EINVAL;
    char *d = NULL;
    if (ct && !(d = pl_strdup(ct))) return pl_error_nomem();
    free(m->content_type);
    m->content_type = d;
    pl_error_ok();
    return PL_OK;
}

int pl_outgoing_set_broker(pl_outgoing *m, const char *field, const char *value)
{
    if (!m) return pl_error_inval("m", "must not be NULL");
    if (!field) return pl_error_inval("field", "must not be NULL");
    int idx = -1;
    for (int i = 0; i < PL_OUT_NFIELDS; i++)
        if (strcmp(field, pl_outgoing_field_names[i]) == 0) idx = i;
    if (idx < 0)
        return pl_error_set(PL_EINVAL, 0, 0, "field: '%.64s' is not a settable BrokerProperties string field",
                            field);
    if (value && !*value)
        return pl_error_set(PL_EINVAL, 0, 0, "%s: must not be empty (leave it unset instead)",
                            field_args[idx]);
    if (value && (idx == 0 || idx == 3 || idx == 4)) {
        size_t chars = 0; /* UTF-8 characters: every byte but a continuation byte */
        for (const unsigned char *p = (const unsigned char *)value; *p; p++) chars += (*p & 0xC0) != 0x80;
        if (chars > 128)
            return pl_error_set(PL_EINVAL, 0, 0, "%s: must be at most 128 characters", field_args[idx]);
    }
    char *d = NULL;
    if (value && !(d = pl_strdup(value))) return pl_error_nomem();
    free(m->fields[idx]);
    m->fields[idx] = d;
    pl_error_ok();
    return PL_OK;
}

int pl_outgoing_set_time_to_live(pl_outgoing *m, double seconds)
{
    if (!m) return pl_error_inval("m", "must not be NULL");
    if (!isfinite(seconds) || seconds <= 0)
        return pl_error_inval("time_to_live", "must be a positive number of seconds");
    m->ttl = seconds;
    pl_error_ok();
    return PL_OK;
}

int pl_outgoing_set_scheduled_enqueue_time(pl_outgoing *m, double unix_seconds)
{
    if (!m) return pl_error_inval("m", "must not be NULL");
    /* the second the time falls in (floor: -0.5 is in 1969); NaN fails the test */
    double s = floor(unix_seconds);
    if (!(s >= 0.0 && s <= 253402300799.0))
        return pl_error_inval("scheduled_enqueue_time", "must be between 1970 and 9999");
    m->scheduled = (int64_t)s;
    pl_error_ok();
    return PL_OK;
}

int pl_outgoing_set_force_persistence(pl_outgoing *m, int on)
{
    if (!m) return pl_error_inval("m", "must not be NULL");
    m->force_persistence = on ? 1 : 0;
    pl_error_ok();
    return PL_OK;
}

int pl_outgoing_set_resend(pl_outgoing *m, int on)
{
    if (!m) return pl_error_inval("m", "must not be NULL");
    m->resend = on ? 1 : 0;
    pl_error_ok();
    return PL_OK;
}

/* Adds or replaces a custom property; takes ownership of raw. */
static int add_prop(pl_outgoing *m, const char *name, int type, char *raw, int64_t i, double d)
{
    if (!m) {
        free(raw);
        return pl_error_inval("m", "must not be NULL");
    }
    if (!name || !*name) {
        free(raw);
        return pl_error_inval("property name", "must be a non-empty string");
    }
    if (!raw) return pl_error_nomem();
    for (const unsigned char *p = (const unsigned char *)name; *p; p++)
        if (!is_token_char(*p)) {
            free(raw);
            return pl_error_inval("property name",
                                  "must be an HTTP token (letters, digits, !#$%&'*+-.^_`|~)");
        }
    if (strlen(name) > 256) {
        free(raw);
        return pl_error_inval("property name", "is longer than 256 characters");
    }
    if (pl_header_is_reserved(name)) {
        free(raw);
        return pl_error_set(PL_EINVAL, 0, 0, "property name: '%s' is a reserved HTTP header", name);
    }
    for (size_t k = 0; k < m->nprops; k++) {
        if (pl_strcaseeq(m->props[k].name, name)) {
            free(m->props[k].raw);
            m->props[k].raw = raw;
            m->props[k].type = type;
            m->props[k].i = i;
            m->props[k].d = d;
            pl_error_ok();
            return PL_OK;
        }
    }
    pl_prop *np = realloc(m->props, (m->nprops + 1) * sizeof *np);
    if (!np) {
        free(raw);
        return pl_error_nomem();
    }
    m->props = np;
    pl_prop *p = &np[m->nprops];
    memset(p, 0, sizeof *p);
    p->name = pl_strdup(name);
    if (!p->name) {
        free(raw);
        return pl_error_nomem();
    }
    p->raw = raw;
    p->type = type;
    p->i = i;
    p->d = d;
    m->nprops++;
    pl_error_ok();
    return PL_OK;
}

int pl_outgoing_add_string(pl_outgoing *m, const char *name, const char *value)
{
    if (!value) return pl_error_inval("value", "must not be NULL");
    if (check_header_text("value", value)) return PL_EINVAL;
    pl_buf b = PL_BUF_INIT;
    pl_buf_puts(&b, "\"");
    for (const char *p = value; *p; p++) {
        if (*p == '"' || *p == '\\') pl_buf_puts(&b, "\\");
        pl_buf_append(&b, p, 1);
    }
    pl_buf_puts(&b, "\"");
    char *raw = pl_buf_detach(&b);
    return add_prop(m, name, PL_PROP_STRING, raw, 0, 0);
}

int pl_outgoing_add_int(pl_outgoing *m, const char *name, int64_t value)
{
    char tmp[32];
    snprintf(tmp, sizeof tmp, "%lld", (long long)value);
    return add_prop(m, name, PL_PROP_INT, pl_strdup(tmp), value, (double)value);
}

int pl_outgoing_add_double(pl_outgoing *m, const char *name, double value)
{
    if (!isfinite(value))
        return pl_error_set(PL_EINVAL, 0, 0, "property '%.256s': must be a finite number", name ? name : "");
    char tmp[40];
    snprintf(tmp, sizeof tmp, "%.15g", value);
    if (strtod(tmp, NULL) != value) snprintf(tmp, sizeof tmp, "%.17g", value);
    if (!strpbrk(tmp, ".eE")) strcat(tmp, ".0"); /* keep it typed as a double */
    return add_prop(m, name, PL_PROP_DOUBLE, pl_strdup(tmp), (int64_t)value, value);
}

int pl_outgoing_add_bool(pl_outgoing *m, const char *name, int value)
{
    return add_prop(m, name, PL_PROP_BOOL, pl_strdup(value ? "true" : "false"), value ? 1 : 0, value ? 1 : 0);
}

int pl_check_datetime(const char *name, double unix_seconds)
{
    if (!(unix_seconds >= 0.0 && unix_seconds <= 253402300799.0)) /* NaN fails both */
        return pl_error_set(PL_EINVAL, 0, 0, "property '%.256s': must be between 1970 and 9999",
                            name ? name : "");
    /* the service types a DateTime only in RFC 1123 form: a fraction would be lost */
    if (unix_seconds != floor(unix_seconds))
        return pl_error_set(
            PL_EINVAL, 0, 0,
            "property '%.256s': DateTime keeps whole seconds; round it or send it as a string",
            name ? name : "");
    pl_error_ok();
    return PL_OK;
}

int pl_outgoing_add_datetime(pl_outgoing *m, const char *name, double unix_seconds)
{
    int rc = pl_check_datetime(name, unix_seconds);
    if (rc) return rc;
    int64_t s = (int64_t)unix_seconds;
    char d[40], q[48];
    pl_http_date_format(d, sizeof d, s);
    snprintf(q, sizeof q, "\"%s\"", d);
    return add_prop(m, name, PL_PROP_DATETIME, pl_strdup(q), s, unix_seconds);
}

static cJSON *broker_object(const pl_outgoing *m)
{
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    for (int i = 0; i < PL_OUT_NFIELDS; i++)
        if (m->fields[i] && !cJSON_AddStringToObject(o, pl_outgoing_field_names[i], m->fields[i])) goto fail;
    if (m->force_persistence >= 0 && !cJSON_AddBoolToObject(o, "ForcePersistence", m->force_persistence))
        goto fail;
    if (m->scheduled >= 0) {
        char d[40];
        pl_http_date_format(d, sizeof d, m->scheduled);
        if (!cJSON_AddStringToObject(o, "ScheduledEnqueueTimeUtc", d)) goto fail;
    }
    if (m->ttl > 0 && !cJSON_AddNumberToObject(o, "TimeToLive", m->ttl)) goto fail;
    return o;
fail:
    cJSON_Delete(o);
    return NULL;
}

int pl_outgoing_broker_json(char **out, const pl_outgoing *m)
{
    *out = NULL;
    cJSON *o = broker_object(m);
    if (!o) return pl_error_nomem();
    if (!o->child) {
        cJSON_Delete(o);
        return PL_OK;
    }
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (!s) return pl_error_nomem();
    *out = pl_strdup(s);
    cJSON_free(s);
    return *out ? PL_OK : pl_error_nomem();
}

int pl_outgoing_clone(pl_outgoing **out, const pl_outgoing *m)
{
    int rc = pl_outgoing_new(out, m->body, m->body_len);
    if (rc) return rc;
    pl_outgoing *c = *out;
    c->ttl = m->ttl;
    c->scheduled = m->scheduled;
    c->force_persistence = m->force_persistence;
    c->resend = m->resend;
    if (m->content_type && !(c->content_type = pl_strdup(m->content_type))) goto oom;
    for (int i = 0; i < PL_OUT_NFIELDS; i++)
        if (m->fields[i] && !(c->fields[i] = pl_strdup(m->fields[i]))) goto oom;
    if (m->nprops) {
        c->props = calloc(m->nprops, sizeof *c->props);
        if (!c->props) goto oom;
        for (size_t i = 0; i < m->nprops; i++) {
            c->props[i] = m->props[i];
            c->props[i].name = pl_strdup(m->props[i].name);
            c->props[i].raw = pl_strdup(m->props[i].raw);
            c->props[i].text = NULL;
            c->nprops = i + 1;
            if (!c->props[i].name || !c->props[i].raw) goto oom;
        }
    }
    return PL_OK;
oom:
    pl_outgoing_free(c);
    *out = NULL;
    return pl_error_nomem();
}

/* ------------------------------------------------------------------------ */
/* batches                                                                    */

int pl_batch_new(pl_batch **out)
{
    if (!out) return pl_error_inval("out", "must not be NULL");
    *out = calloc(1, sizeof **out);
    if (!*out) return pl_error_nomem();
    pl_error_ok();
    return PL_OK;
}

void pl_batch_free(pl_batch *b)
{
    if (!b) return;
    for (size_t i = 0; i < b->n; i++) pl_outgoing_free(b->items[i]);
    free(b->items);
    free(b);
}

int pl_batch_add(pl_batch *b, const pl_outgoing *m)
{
    if (!b) return pl_error_inval("b", "must not be NULL");
    if (!m) return pl_error_inval("m", "must not be NULL");
    if (memchr(m->body, 0, m->body_len))
        return pl_error_inval(
            "message", "a batched message body is carried as JSON text and must not contain NUL bytes");
    if (m->content_type)
        return pl_error_inval("message", "a batched message cannot carry a content type (the service "
                                         "marks every message of a batch \"application/xml; "
                                         "charset=utf-8\"): send messages with a content type one by one");
    if (b->n == b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 8;
        pl_outgoing **ni = realloc(b->items, cap * sizeof *ni);
        if (!ni) return pl_error_nomem();
        b->items = ni;
        b->cap = cap;
    }
    pl_outgoing *c = NULL;
    int rc = pl_outgoing_clone(&c, m);
    if (rc) return rc;
    b->items[b->n++] = c;
    pl_error_ok();
    return PL_OK;
}

size_t pl_batch_count(const pl_batch *b)
{
    return b ? b->n : 0;
}

int pl_batch_json(char **out, size_t *len, const pl_batch *b)
{
    *out = NULL;
    cJSON *arr = cJSON_CreateArray();
    if (!arr) return pl_error_nomem();
    for (size_t i = 0; i < b->n; i++) {
        const pl_outgoing *m = b->items[i];
        cJSON *e = cJSON_CreateObject();
        if (!e || !cJSON_AddItemToArray(arr, e)) {
            cJSON_Delete(e);
            goto oom;
        }
        if (!cJSON_AddStringToObject(e, "Body", (const char *)m->body)) goto oom;
        cJSON *bp = broker_object(m);
        if (!bp || !cJSON_AddItemToObject(e, "BrokerProperties", bp)) {
            cJSON_Delete(bp);
            goto oom;
        }
        if (m->nprops) {
            cJSON *up = cJSON_CreateObject();
            if (!up || !cJSON_AddItemToObject(e, "UserProperties", up)) {
                cJSON_Delete(up);
                goto oom;
            }
            for (size_t k = 0; k < m->nprops; k++) {
                const pl_prop *p = &m->props[k];
                cJSON *v = NULL;
                switch (p->type) {
                case PL_PROP_INT: v = cJSON_CreateNumber((double)p->i); break;
                case PL_PROP_DOUBLE: v = cJSON_CreateNumber(p->d); break;
                case PL_PROP_BOOL: v = cJSON_CreateBool(p->i != 0); break;
                case PL_PROP_DATETIME: {
                    char d[40];
                    pl_http_date_format(d, sizeof d, p->i);
                    v = cJSON_CreateString(d);
                    break;
                }
                default: {
                    /* raw is the quoted, escaped header form; unquote it */
                    pl_prop t = {0};
                    if (pl_prop_parse_value(&t, p->raw) != PL_OK) goto oom;
                    v = cJSON_CreateString(t.text);
                    free(t.text);
                }
                }
                if (!v || !cJSON_AddItemToObject(up, p->name, v)) {
                    cJSON_Delete(v);
                    goto oom;
                }
            }
        }
    }
    char *s = cJSON_PrintUnformatted(arr);
    cJSON_Delete(arr);
    if (!s) return pl_error_nomem();
    *out = pl_strdup(s);
    cJSON_free(s);
    if (!*out) return pl_error_nomem();
    *len = strlen(*out);
    return PL_OK;
oom:
    cJSON_Delete(arr);
    return pl_error_nomem();
}
