/* The blocking driver: pl_client over libcurl. A small pool of easy handles,
 * each keeping its own connection (no connection cache shared across threads),
 * a SAS token cache per scope, the retry policy, and statistics. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#include "ca_int.h"
#include "client_int.h"
#include "connstr_int.h"
#include "error_int.h"
#include "message_int.h"
#include "outcome_int.h"
#include "wire_int.h"

#define PL_RTT_SAMPLES     512
#define PL_TOKEN_CACHE_MAX 64

/* A pooled easy handle and the per-request options last set on it, so that a
 * request only sets what differs from the previous one on this handle. Its
 * callbacks get the slot (userdata set once) and collect into slot->resp. */
struct pl_easy {
    CURL *e;
    pl_response *resp;       /* collector of the transfer under way */
    struct curl_slist *hdrs; /* CURLOPT_HTTPHEADER as set (owned; may hold the
                                  Authorization value: wiped when freed) */
    int set;                 /* the fields below hold what is set */
    long timeout_ms;
    const char *method; /* CURLOPT_CUSTOMREQUEST as set (static) or NULL */
    const char *body;   /* CURLOPT_POSTFIELDS as set */
    curl_off_t body_len;
    char errbuf[CURL_ERROR_SIZE]; /* CURLOPT_ERRORBUFFER: which TLS check failed */
};

typedef struct pl_token {
    char *scope;
    char *value;      /* full Authorization value */
    int64_t renew_at; /* wall-clock Unix seconds at which to re-sign */
} pl_token;

struct pl_client {
    atomic_int refs;
    atomic_int closed;
    atomic_int receives_interrupted; /* pl_client_interrupt_receives */
    char *endpoint;
    char *entity_path;
    int https;

    /* credentials */
    char *key_name, *key, *sas_token;
    pl_token_cb token_cb;
    void *token_userdata;
    pl_log_fn log_fn; /* retries and failed calls (pl_client_call_reported) */
    void *log_userdata;
    char *bearer; /* "Bearer ..." or NULL, under lock */
    int64_t bearer_expires;

    /* options */
    long connect_timeout_ms, request_timeout_ms;
    pl_policy policy; /* retries (outcome.c decides with it) */
    int pool_size, token_lifetime_s;
    char *ca_file;

    pthread_mutex_t lock;    /* pool, tokens, bearer, rtt */
    pthread_mutex_t cb_lock; /* serialises token_cb */
    pl_easy **pool;
    int npool;
    pl_token tokens[PL_TOKEN_CACHE_MAX];
    int ntokens;
    double rtt[PL_RTT_SAMPLES];
    uint64_t nrtt;

    atomic_uint_least64_t stats[PL_STAT__COUNT];
};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc = CURLE_OK;
static void curl_init_once(void)
{
    curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

int64_t pl_now_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void pl_sleep_ms(int64_t ms)
{
    if (ms <= 0) return;
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR) {}
}

int64_t pl_message_lock_remaining_ms(const pl_message *m)
{
    if (!m) return 0;
    int s = pl_message_state(m);
    if (s != PL_LOCK_HELD && s != PL_LOCK_SETTLING) return 0;
    return pl_message_lock_expiry_mono_ms(m) - pl_now_mono_ms();
}

static void free_secret(char *s)
{
    if (!s) return;
    memset(s, 0, strlen(s));
    free(s);
}

/* ---- lifetime ------------------------------------------------------------- */

/* Frees a header list, wiping each line first (one may be the Authorization). */
static void slist_free_wipe(struct curl_slist *h)
{
    for (struct curl_slist *t = h; t; t = t->next) memset(t->data, 0, strlen(t->data));
    curl_slist_free_all(h);
}

static void easy_free(pl_easy *s)
{
    if (!s) return;
    curl_easy_cleanup(s->e);
    slist_free_wipe(s->hdrs);
    free(s);
}

static void client_destroy(pl_client *c)
{
    for (int i = 0; i < c->npool; i++) easy_free(c->pool[i]);
    free(c->pool);
    for (int i = 0; i < c->ntokens; i++) {
        free(c->tokens[i].scope);
        free_secret(c->tokens[i].value);
    }
    free(c->endpoint);
    free(c->entity_path);
    free(c->key_name);
    free_secret(c->key);
    free_secret(c->sas_token);
    free_secret(c->bearer);
    free(c->ca_file);
    pthread_mutex_destroy(&c->lock);
    pthread_mutex_destroy(&c->cb_lock);
    free(c);
}

void pl_client_ref(pl_client *c)
{
    atomic_fetch_add(&c->refs, 1);
}

void pl_client_unref(pl_client *c)
{
    if (c && atomic_fetch_sub(&c->refs, 1) == 1) client_destroy(c);
}

/* A message's owner hook: drops the reference pl_client_adopt took. */
static void release_owner(void *c)
{
    pl_client_unref(c);
}

void pl_client_adopt(pl_client *c, pl_message *m)
{
    pl_client_ref(c);
    m->owner = c;
    m->owner_release = release_owner;
}

pl_client *pl_message_client(const pl_message *m)
{
    return m->owner_release == release_owner ? m->owner : NULL;
}

int pl_client_closed(const pl_client *c)
{
    return atomic_load(&((pl_client *)c)->closed);
}

void pl_client_free(pl_client *c)
{
    if (!c) return;
    atomic_store(&c->closed, 1);
    pl_client_unref(c);
}

static int dup_opt(char **slot, const char *v)
{
    if (!v) return PL_OK;
    *slot = pl_strdup(v);
    return *slot ? PL_OK : pl_error_nomem();
}

/* An http:// endpoint (UseDevelopmentEmulator=true, or an http:// URL) sends the
 * Authorization (a SAS token or bearer token) in clear: only to a loopback host,
 * or to the one host the connection string names in AllowPlaintextHost=. */
static int plaintext_check(const pl_client *c, const char *allowed)
{
    if (c->https || (!c->key && !c->sas_token && !c->token_cb)) return PL_OK;
    const char *h = c->endpoint + 7; /* after "http://" */
    size_t n = h[0] == '[' ? strcspn(h, "]") + 1 : strcspn(h, ":/");
    if ((n == 9 && pl_strncaseeq(h, "localhost", 9)) || (n == 5 && strncmp(h, "[::1]", 5) == 0) ||
        (n >= 7 && strncmp(h, "127.", 4) == 0 && strspn(h, "0123456789.") == n)) /* 127/8, dotted */
        return PL_OK;
    if (allowed && strlen(allowed) == n && pl_strncaseeq(h, allowed, n)) return PL_OK;
    return pl_error_set(
        PL_EINVAL, 0, 0,
        "endpoint: http:// to '%.*s', which is not a loopback host, would send the SAS or bearer "
        "token in clear; use https, or name the host in the connection string "
        "(AllowPlaintextHost=%.*s) to accept that",
        (int)(n > 200 ? 200 : n), h, (int)(n > 200 ? 200 : n), h);
}

int pl_client_options_init(pl_client_options *opts, unsigned int version)
{
    if (!opts) return pl_error_inval("opts", "must not be NULL");
    if (version != PL_CLIENT_OPTIONS_VERSION && version != 1)
        return pl_error_inval("version", "must be 1 or PL_CLIENT_OPTIONS_VERSION");
    const pl_client_options init = PL_CLIENT_OPTIONS_INIT;
    *opts = init;
    opts->version = version;
    return PL_OK;
}

int pl_client_new(pl_client **out, const pl_client_options *o)
{
    if (!out) return pl_error_inval("out", "must not be NULL");
    *out = NULL;
    if (!o) return pl_error_inval("opts", "must not be NULL");
    if (o->version != PL_CLIENT_OPTIONS_VERSION && o->version != 1) /* 1: no log hook */
        return pl_error_inval("version", "must be PL_CLIENT_OPTIONS_VERSION (use PL_CLIENT_OPTIONS_INIT)");
    if (o->connect_timeout_ms < 0) return pl_error_inval("connect_timeout_ms", "must not be negative");
    if (o->request_timeout_ms < 0) return pl_error_inval("request_timeout_ms", "must not be negative");
    if (o->max_retries < -1 || o->max_retries > 100) return pl_error_inval("max_retries", "must be -1..100");
    if (o->retry_base_ms < 0) return pl_error_inval("retry_base_ms", "must not be negative");
    if (o->retry_max_ms < 0) return pl_error_inval("retry_max_ms", "must not be negative");
    if (o->pool_size < 0 || o->pool_size > 1024) return pl_error_inval("pool_size", "must be 0..1024");
    if (o->token_lifetime_s < 0) return pl_error_inval("token_lifetime_s", "must not be negative");
    if (o->connection_string && o->endpoint)
        return pl_error_inval("endpoint", "give either connection_string or endpoint, not both");
    if (!o->connection_string && !o->endpoint)
        return pl_error_inval("connection_string", "connection_string or endpoint is required");
    int nauth = (o->key != NULL) + (o->sas_token != NULL) + (o->token_cb != NULL);
    if (nauth > 1) return pl_error_inval("key", "give only one of key, sas_token, token_cb");
    if ((o->key != NULL) != (o->key_name != NULL))
        return pl_error_inval(o->key ? "key_name" : "key", "key_name and key go together");
    if (o->key && !*o->key) return pl_error_inval("key", "must not be empty");
    if (o->key_name && !*o->key_name) return pl_error_inval("key_name", "must not be empty");
    if (o->ca_file && !*o->ca_file)
        return pl_error_inval("ca_file", "must not be empty (NULL: the default CA bundle)");
    if (o->sas_token && strncmp(o->sas_token, "SharedAccessSignature ", 22) != 0)
        return pl_error_inval("sas_token", "must start with 'SharedAccessSignature '");

    pthread_once(&curl_once, curl_init_once);
    if (curl_init_rc != CURLE_OK) return pl_error_set(PL_EINTERNAL, 0, 0, "curl_global_init failed");

    pl_client *c = calloc(1, sizeof *c);
    if (!c) return pl_error_nomem();
    atomic_init(&c->refs, 1);
    atomic_init(&c->closed, 0);
    atomic_init(&c->receives_interrupted, 0);
    for (int i = 0; i < PL_STAT__COUNT; i++) atomic_init(&c->stats[i], 0);
    pthread_mutex_init(&c->lock, NULL);
    pthread_mutex_init(&c->cb_lock, NULL);
    c->connect_timeout_ms = o->connect_timeout_ms ? o->connect_timeout_ms : PL_DEFAULT_CONNECT_TIMEOUT_MS;
    c->request_timeout_ms = o->request_timeout_ms ? o->request_timeout_ms : PL_DEFAULT_REQUEST_TIMEOUT_MS;
    c->policy.max_retries = o->max_retries < 0 ? PL_DEFAULT_MAX_RETRIES : o->max_retries;
    c->policy.retry_base_ms = o->retry_base_ms ? o->retry_base_ms : PL_DEFAULT_RETRY_BASE_MS;
    c->policy.retry_max_ms = o->retry_max_ms ? o->retry_max_ms : PL_DEFAULT_RETRY_MAX_MS;
    c->pool_size = o->pool_size ? o->pool_size : PL_DEFAULT_POOL_SIZE;
    c->token_lifetime_s = o->token_lifetime_s ? o->token_lifetime_s : PL_DEFAULT_TOKEN_LIFETIME_S;
    c->token_cb = o->token_cb;
    c->token_userdata = o->token_userdata;
    if (o->version >= 2) {
        c->log_fn = o->log_fn;
        c->log_userdata = o->log_userdata;
    }

    int rc = PL_OK;
    char *plaintext_host = NULL;
    if (o->connection_string) {
        pl_connstr *cs = NULL;
        if ((rc = pl_connstr_parse(&cs, o->connection_string)) != PL_OK) goto fail;
        if (cs->issuer && !cs->key && !cs->sas_token && !o->key && !o->sas_token && !o->token_cb) {
            pl_connstr_free(cs);
            rc = pl_error_inval(
                "connection string",
                "SharedSecretIssuer/SharedSecretValue (ACS) authentication is retired; use a SAS key");
            goto fail;
        }
        c->https = !cs->dev;
        if (!rc && cs->plaintext_host) rc = dup_opt(&plaintext_host, cs->plaintext_host);
        rc = rc ? rc : dup_opt(&c->endpoint, cs->endpoint);
        if (!rc) rc = dup_opt(&c->entity_path, cs->entity_path);
        if (!rc && nauth == 0) {
            rc = dup_opt(&c->key_name, cs->key_name);
            if (!rc) rc = dup_opt(&c->key, cs->key);
            if (!rc) rc = dup_opt(&c->sas_token, cs->sas_token);
        }
        pl_connstr_free(cs);
        if (rc) goto fail;
    } else {
        int dev = pl_strncaseeq(o->endpoint, "http://", 7);
        if ((rc = pl_endpoint_normalize(&c->endpoint, NULL, o->endpoint, dev, "endpoint")) != PL_OK)
            goto fail;
        c->https = !dev;
    }
    if (!rc) rc = dup_opt(&c->key_name, c->key_name ? NULL : o->key_name);
    if (!rc) rc = dup_opt(&c->key, c->key ? NULL : o->key);
    if (!rc) rc = dup_opt(&c->sas_token, c->sas_token ? NULL : o->sas_token);
    if (!rc) rc = dup_opt(&c->ca_file, o->ca_file);
    if (!rc) rc = plaintext_check(c, plaintext_host);
    free(plaintext_host);
    plaintext_host = NULL;
    if (rc) goto fail;
    c->pool = calloc((size_t)c->pool_size, sizeof *c->pool);
    if (!c->pool) {
        rc = pl_error_nomem();
        goto fail;
    }
    *out = c;
    pl_error_ok();
    return PL_OK;
fail:
    free(plaintext_host);
    client_destroy(c);
    return rc;
}

int pl_client_new_from_connection_string(pl_client **out, const char *conn)
{
    pl_client_options o = PL_CLIENT_OPTIONS_INIT;
    if (!conn) {
        if (out) *out = NULL;
        return pl_error_inval("conn", "must not be NULL");
    }
    o.connection_string = conn;
    return pl_client_new(out, &o);
}

const char *pl_client_endpoint(const pl_client *c)
{
    return c ? c->endpoint : NULL;
}
const char *pl_client_entity_path(const pl_client *c)
{
    return c ? c->entity_path : NULL;
}
long pl_client_connect_timeout_ms(const pl_client *c)
{
    return c ? c->connect_timeout_ms : 0;
}
long pl_client_request_timeout_ms(const pl_client *c)
{
    return c ? c->request_timeout_ms : 0;
}
int pl_client_pool_size(const pl_client *c)
{
    return c ? c->pool_size : 0;
}
const pl_policy *pl_client_policy(const pl_client *c)
{
    return &c->policy;
}

int pl_client_set_bearer_token(pl_client *c, const char *token, int64_t expires_unix)
{
    if (!c) return pl_error_inval("client", "must not be NULL");
    if (!token || !*token) return pl_error_inval("token", "must be a non-empty string");
    for (const unsigned char *p = (const unsigned char *)token; *p; p++)
        if (*p < 0x21 || *p == 0x7f) return pl_error_inval("token", "contains a space or control character");
    pl_buf b = PL_BUF_INIT;
    pl_buf_printf(&b, "Bearer %s", token);
    char *v = pl_buf_detach(&b);
    if (!v) return pl_error_nomem();
    pthread_mutex_lock(&c->lock);
    free_secret(c->bearer);
    c->bearer = v;
    c->bearer_expires = expires_unix;
    pthread_mutex_unlock(&c->lock);
    pl_error_ok();
    return PL_OK;
}

/* ---- statistics ------------------------------------------------------------ */

void pl_client_stat_add(pl_client *c, pl_stat which, uint64_t n)
{
    if (c && which < PL_STAT__COUNT) atomic_fetch_add(&c->stats[which], n);
}

void pl_client_record_renew_rtt(pl_client *c, double ms)
{
    pthread_mutex_lock(&c->lock);
    c->rtt[c->nrtt % PL_RTT_SAMPLES] = ms;
    c->nrtt++;
    pthread_mutex_unlock(&c->lock);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void rtt_pcts(pl_client *c, double *p50, double *p99, double *custom, double pct)
{
    double tmp[PL_RTT_SAMPLES];
    pthread_mutex_lock(&c->lock);
    size_t n = c->nrtt < PL_RTT_SAMPLES ? (size_t)c->nrtt : PL_RTT_SAMPLES;
    memcpy(tmp, c->rtt, n * sizeof *tmp);
    pthread_mutex_unlock(&c->lock);
    if (!n) {
        if (p50) *p50 = 0;
        if (p99) *p99 = 0;
        if (custom) *custom = 0;
        return;
    }
    qsort(tmp, n, sizeof *tmp, cmp_double);
#define PCT(q) tmp[(size_t)((q) / 100.0 * (double)(n - 1) + 0.5)]
    if (p50) *p50 = PCT(50);
    if (p99) *p99 = PCT(99);
    if (custom) *custom = PCT(pct < 0 ? 0 : pct > 100 ? 100 : pct);
#undef PCT
}

double pl_client_renew_rtt_pct(pl_client *c, double pct)
{
    double v = 0;
    rtt_pcts(c, NULL, NULL, &v, pct);
    return v;
}

int pl_client_stats_get(const pl_client *cc, pl_client_stats *out)
{
    if (!cc) return pl_error_inval("client", "must not be NULL");
    if (!out) return pl_error_inval("out", "must not be NULL");
    pl_client *c = (pl_client *)cc;
    memset(out, 0, sizeof *out);
    out->requests = atomic_load(&c->stats[PL_STAT_REQUESTS]);
    out->reused_connections = atomic_load(&c->stats[PL_STAT_REUSED]);
    out->retries = atomic_load(&c->stats[PL_STAT_RETRIES]);
    out->sent = atomic_load(&c->stats[PL_STAT_SENT]);
    out->received = atomic_load(&c->stats[PL_STAT_RECEIVED]);
    out->completed = atomic_load(&c->stats[PL_STAT_COMPLETED]);
    out->abandoned = atomic_load(&c->stats[PL_STAT_ABANDONED]);
    out->renewed = atomic_load(&c->stats[PL_STAT_RENEWED]);
    out->lost = atomic_load(&c->stats[PL_STAT_LOST]);
    out->orphaned_locks = atomic_load(&c->stats[PL_STAT_ORPHANED]);
    out->failed = atomic_load(&c->stats[PL_STAT_FAILED]);
    out->renew_failures = atomic_load(&c->stats[PL_STAT_RENEW_FAILURES]);
    rtt_pcts(c, &out->renew_p50_ms, &out->renew_p99_ms, NULL, 0);
    pl_error_ok();
    return PL_OK;
}

/* ---- the log hook ------------------------------------------------------------ */

static const char *log_op_name(int op)
{
    switch (op) {
    case PL_OP_SEND: return "send";
    case PL_OP_BATCH: return "send_batch";
    case PL_OP_PEEKLOCK: return "peek_lock";
    case PL_OP_RECVDEL: return "receive_and_delete";
    case PL_OP_RENEW: return "renew_lock";
    case PL_OP_UNLOCK: return "unlock";
    default: return "complete";
    }
}

void pl_client_call_reported(pl_client *c, const pl_call *call, int next, int status, int log)
{
    int retry = next == PL_NEXT_RETRY;
    if (!retry && call->code >= 0) return;
    if (call->op == PL_OP_RENEW) pl_client_stat_add(c, PL_STAT_RENEW_FAILURES, 1);
    if (!retry) pl_client_stat_add(c, PL_STAT_FAILED, 1);
    if (!log || !c->log_fn) return;
    /* The hook gets a copy of the thread's last error, which is put back after it. */
    pl_error saved = *pl_error_last();
    char text[512];
    snprintf(text, sizeof text, "%s", saved.message);
    pl_log_record rec = {retry ? PL_LOG_RETRY : PL_LOG_FAILED,
                         log_op_name(call->op),
                         call->entity ? call->entity : "",
                         retry ? saved.code : call->code,
                         status,
                         call->attempts,
                         retry ? call->delay_ms : 0,
                         text};
    c->log_fn(c->log_userdata, &rec);
    pl_error_set(saved.code, saved.http_status, saved.retryable, "%s", text);
}

/* ---- authorization ---------------------------------------------------------- */

int pl_client_auth(pl_client *c, const char *scope, char **out)
{
    *out = NULL;
    if (c->sas_token) {
        *out = pl_strdup(c->sas_token);
        return *out ? PL_OK : pl_error_nomem();
    }
    int64_t now = (int64_t)time(NULL);
    if (c->key) {
        pthread_mutex_lock(&c->lock);
        for (int i = 0; i < c->ntokens; i++) {
            if (strcmp(c->tokens[i].scope, scope) == 0 && now < c->tokens[i].renew_at) {
                *out = pl_strdup(c->tokens[i].value);
                pthread_mutex_unlock(&c->lock);
                return *out ? PL_OK : pl_error_nomem();
            }
        }
        pthread_mutex_unlock(&c->lock);
        char *tok = NULL;
        int64_t se = now + c->token_lifetime_s;
        int rc = pl_sas_token(&tok, scope, c->key_name, c->key, se);
        if (rc) return rc;
        /* Re-sign at half the lifetime: well before the server would reject it. */
        int64_t renew_at = now + c->token_lifetime_s / 2;
        pthread_mutex_lock(&c->lock);
        int slot = -1;
        for (int i = 0; i < c->ntokens; i++)
            if (strcmp(c->tokens[i].scope, scope) == 0) slot = i;
        if (slot < 0 && c->ntokens < PL_TOKEN_CACHE_MAX) {
            slot = c->ntokens;
            c->tokens[slot].scope = pl_strdup(scope);
            if (c->tokens[slot].scope)
                c->ntokens++;
            else
                slot = -1;
        }
        if (slot < 0) slot = (int)(now % PL_TOKEN_CACHE_MAX) % (c->ntokens ? c->ntokens : 1);
        if (slot < c->ntokens) {
            char *copy = pl_strdup(tok);
            if (copy) {
                if (strcmp(c->tokens[slot].scope, scope) != 0) {
                    char *sc = pl_strdup(scope);
                    if (sc) {
                        free(c->tokens[slot].scope);
                        c->tokens[slot].scope = sc;
                    }
                }
                free_secret(c->tokens[slot].value);
                c->tokens[slot].value = copy;
                c->tokens[slot].renew_at = renew_at;
            }
        }
        pthread_mutex_unlock(&c->lock);
        *out = tok;
        return PL_OK;
    }
    /* Bearer: cached value, refreshed through the callback PL_BEARER_REFRESH_MARGIN_S
     * before expiry. */
    pthread_mutex_lock(&c->lock);
    if (c->bearer && (!c->token_cb || now < c->bearer_expires - PL_BEARER_REFRESH_MARGIN_S)) {
        *out = pl_strdup(c->bearer);
        pthread_mutex_unlock(&c->lock);
        return *out ? PL_OK : pl_error_nomem();
    }
    pthread_mutex_unlock(&c->lock);
    if (!c->token_cb) return PL_OK; /* no credentials: no Authorization header */
    pthread_mutex_lock(&c->cb_lock);
    char buf[8192];
    int64_t exp = 0;
    buf[0] = '\0';
    int cbrc = c->token_cb(c->token_userdata, "https://servicebus.azure.net/.default", buf, sizeof buf, &exp);
    buf[sizeof buf - 1] = '\0';
    pthread_mutex_unlock(&c->cb_lock);
    if (cbrc != 0 || !buf[0]) {
        memset(buf, 0, sizeof buf);
        return pl_error_set(PL_EAUTH, 0, 1, "token callback failed (returned %d)", cbrc);
    }
    int rc = pl_client_set_bearer_token(c, buf, exp);
    memset(buf, 0, sizeof buf);
    if (rc) return rc;
    pthread_mutex_lock(&c->lock);
    *out = pl_strdup(c->bearer);
    pthread_mutex_unlock(&c->lock);
    return *out ? PL_OK : pl_error_nomem();
}

/* ---- public sans-I/O builders ---------------------------------------------- */

static int check_client(pl_client *c)
{
    if (!c) return pl_error_inval("client", "must not be NULL");
    return PL_OK;
}

/* Adds the Authorization header for the request's scope (token cache). */
static int add_auth(pl_client *c, pl_request *req)
{
    if (c->key && !c->sas_token && req->scope) {
        /* Cached SAS token: copied straight into the request, under the lock. */
        int64_t now = (int64_t)time(NULL);
        pthread_mutex_lock(&c->lock);
        for (int i = 0; i < c->ntokens; i++) {
            if (now < c->tokens[i].renew_at && strcmp(c->tokens[i].scope, req->scope) == 0) {
                int rc = pl_request_set_header(req, "Authorization", c->tokens[i].value);
                pthread_mutex_unlock(&c->lock);
                return rc;
            }
        }
        pthread_mutex_unlock(&c->lock);
    }
    char *auth = NULL;
    int rc = pl_client_auth(c, req->scope, &auth);
    if (!rc && auth) rc = pl_request_set_header(req, "Authorization", auth);
    free_secret(auth);
    return rc;
}

static int finish_build(pl_client *c, pl_request **out, int rc)
{
    if (rc == PL_OK && (rc = add_auth(c, *out)) != PL_OK) {
        pl_request_free(*out);
        *out = NULL;
    }
    return rc;
}

int pl_request_send(pl_request **out, pl_client *c, const char *entity, const pl_outgoing *m)
{
    if (!out) return pl_error_inval("out", "must not be NULL");
    *out = NULL;
    if (check_client(c)) return PL_EINVAL;
    if (!m) return pl_error_inval("m", "must not be NULL");
    return finish_build(c, out, pl_wire_send(out, c->endpoint, entity, m, NULL));
}

int pl_request_send_batch(pl_request **out, pl_client *c, const char *entity, const pl_batch *b)
{
    if (!out) return pl_error_inval("out", "must not be NULL");
    *out = NULL;
    if (check_client(c)) return PL_EINVAL;
    if (!b) return pl_error_inval("b", "must not be NULL");
    return finish_build(c, out, pl_wire_batch(out, c->endpoint, entity, b, NULL));
}

int pl_request_receive(pl_request **out, pl_client *c, const char *entity, int timeout_s, int peek_lock)
{
    if (!out) return pl_error_inval("out", "must not be NULL");
    *out = NULL;
    if (check_client(c)) return PL_EINVAL;
    return finish_build(c, out, pl_wire_receive(out, c->endpoint, entity, timeout_s, peek_lock, NULL));
}

int pl_client_settle_request(pl_request **out, pl_client *c, const pl_message *m, int op)
{
    *out = NULL;
    if (!m->entity || !m->location)
        return pl_error_set(PL_ESTATE, 0, 0,
                            "message was not received with peek-lock: there is no lock to settle");
    return finish_build(c, out, pl_wire_settle(out, c->endpoint, m, op, NULL));
}

int pl_request_settle(pl_request **out, pl_client *c, const pl_message *m, int op)
{
    if (!out) return pl_error_inval("out", "must not be NULL");
    *out = NULL;
    if (check_client(c)) return PL_EINVAL;
    if (!m) return pl_error_inval("m", "must not be NULL");
    return pl_client_settle_request(out, c, m, op);
}

static void count_result(pl_client *c, const pl_request *req, int rc)
{
    switch (req->op) {
    case PL_OP_SEND:
    case PL_OP_BATCH:
        if (rc == PL_OK) pl_client_stat_add(c, PL_STAT_SENT, req->msg_count);
        break;
    case PL_OP_PEEKLOCK:
    case PL_OP_RECVDEL:
        if (rc == PL_OK) pl_client_stat_add(c, PL_STAT_RECEIVED, 1);
        break;
    case PL_OP_RENEW:
        if (rc == PL_OK) pl_client_stat_add(c, PL_STAT_RENEWED, 1);
        break;
    case PL_OP_UNLOCK:
        if (rc == PL_OK) pl_client_stat_add(c, PL_STAT_ABANDONED, 1);
        break;
    case PL_OP_COMPLETE:
        if (rc == PL_OK) pl_client_stat_add(c, PL_STAT_COMPLETED, 1);
        break;
    }
    if ((req->op == PL_OP_RENEW || req->op == PL_OP_UNLOCK || req->op == PL_OP_COMPLETE) &&
        (rc == PL_ELOCKLOST || rc == PL_ENOTFOUND))
        pl_client_stat_add(c, PL_STAT_LOST, 1);
}

void pl_client_count_result(pl_client *c, const pl_request *req, int rc)
{
    count_result(c, req, rc);
}

int pl_response_result(pl_message **out, pl_client *c, const pl_request *req, pl_message *m,
                       const pl_response *resp, int64_t sent_mono_ms)
{
    if (out) *out = NULL;
    if (check_client(c)) return PL_EINVAL;
    if (!req) return pl_error_inval("req", "must not be NULL");
    if (!resp) return pl_error_inval("resp", "must not be NULL");
    int rc = pl_wire_result(out, c->endpoint, req, m, resp, sent_mono_ms);
    if (out && *out) pl_client_adopt(c, *out);
    count_result(c, req, rc);
    return rc;
}

/* ---- libcurl --------------------------------------------------------------- */

/* 1 when a header block lies in k->strs (freed with k). */
static int inline_block(const pl_collector *k, const char *p)
{
    return (uintptr_t)p >= (uintptr_t)k->strs && (uintptr_t)p < (uintptr_t)(k->strs + sizeof k->strs);
}

static size_t on_header(char *buf, size_t size, size_t n, void *ud)
{
    pl_collector *k = pl_collector_of(ud);
    pl_response *r = &k->resp;
    size_t len = size * n;
    if (len >= 5 && memcmp(buf, "HTTP/", 5) == 0) {
        /* A new status line (e.g. after 100 Continue): start over. */
        for (size_t i = 0; i < r->nheaders; i++)
            if (!inline_block(k, r->headers[i].name)) free(r->headers[i].name);
        r->nheaders = 0;
        k->strs_used = 0;
        k->nseen = 0;
        k->headers_done = 0;
        return len;
    }
    if (len <= 2 && (buf[0] == '\r' || buf[0] == '\n')) {
        k->headers_done = 1;
        return len;
    }
    const char *colon = memchr(buf, ':', len);
    if (!colon || colon == buf || buf[0] == ' ' || buf[0] == '\t') return len;
    size_t nlen = (size_t)(colon - buf);
    if (k->only_retry_after && !(nlen == 11 && pl_strncaseeq(buf, "Retry-After", 11))) return len;
    const char *v = colon + 1, *end = buf + len;
    while (v < end && (*v == ' ' || *v == '\t')) v++;
    while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' ' || end[-1] == '\t')) end--;
    if (nlen > 1024 || (size_t)(end - v) > PL_MAX_HEADER_BYTES || k->nseen >= PL_MAX_HEADERS) {
        r->too_big = 1;
        return 0;
    }
    size_t vlen = (size_t)(end - v);
    /* Embedded NULs would truncate silently: treat them as malformed. */
    if (memchr(v, 0, vlen)) {
        r->too_big = 1;
        return 0;
    }
    k->nseen++;
    /* A receive needs the custom properties and the headers it reads; the rest
     * (Server, Content-Length, ...) are counted against the limit and dropped. */
    int kind = k->only_retry_after ? PL_HDR_RETRY_AFTER : pl_header_kind(buf, nlen);
    if (kind == PL_HDR_RESERVED) return len;
    if (r->nheaders == r->headers_cap) {
        size_t cap = r->headers_cap ? r->headers_cap * 2 : 16;
        pl_header *nh;
        if (r->headers == k->hdr_inline) {
            if ((nh = malloc(cap * sizeof *nh)) != NULL) memcpy(nh, r->headers, r->nheaders * sizeof *nh);
        } else {
            nh = realloc(r->headers, cap * sizeof *nh);
        }
        if (!nh) return 0;
        r->headers = nh;
        r->headers_cap = cap;
    }
    /* One block per header, "name\0value\0": in the response while it has room. */
    size_t need = nlen + vlen + 2;
    char *block;
    if (need <= sizeof k->strs - k->strs_used) {
        block = k->strs + k->strs_used;
        k->strs_used += need;
    } else if (!(block = malloc(need))) {
        return 0;
    }
    memcpy(block, buf, nlen);
    block[nlen] = '\0';
    memcpy(block + nlen + 1, v, vlen);
    block[nlen + 1 + vlen] = '\0';
    r->headers[r->nheaders].name = block;
    r->headers[r->nheaders].value = block + nlen + 1;
    r->headers[r->nheaders].kind = kind;
    r->nheaders++;
    return len;
}

static size_t on_body(char *buf, size_t size, size_t n, void *ud)
{
    pl_response *r = ud;
    size_t len = size * n;
    if (pl_response_append_body(r, buf, len) != PL_OK) return 0;
    return len;
}

/* Called before each time libcurl puts the request on the wire. libcurl sends it
 * again on its own when a reused connection dies before any answer byte: the first
 * copy may have been carried out, so that second send is refused here and the
 * attempt ends as "sent and unanswered" for outcome.c to decide about. */
static int on_prereq(void *ud, char *ip, char *lip, int port, int lport)
{
    (void)ip;
    (void)lip;
    (void)port;
    (void)lport;
    if (++pl_collector_of(ud)->sends > 1) return CURL_PREREQFUNC_ABORT;
    return CURL_PREREQFUNC_OK;
}

/* Appends "name: value" to a header list without printf. */
static struct curl_slist *append_header(struct curl_slist *h, const char *name, const char *value)
{
    size_t n = strlen(name), v = strlen(value);
    char stackbuf[512], *line = n + v + 3 <= sizeof stackbuf ? stackbuf : malloc(n + v + 3);
    if (!line) return NULL;
    memcpy(line, name, n);
    line[n] = ':';
    line[n + 1] = ' ';
    memcpy(line + n + 2, value, v + 1);
    struct curl_slist *t = curl_slist_append(h, line);
    memset(line, 0, n + v + 2); /* may hold the Authorization value */
    if (line != stackbuf) free(line);
    return t;
}

/* Options that never change for a handle of this client. */
static void easy_static_opts(pl_client *c, CURL *e)
{
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, c->connect_timeout_ms);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
    if (c->https) {
        curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
        curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
        const char *ca = c->ca_file ? c->ca_file : pl_ca_default();
        if (ca) curl_easy_setopt(e, CURLOPT_CAINFO, ca);
    }
}

/* The header list of req: its headers, an empty "Expect:" and, without a
 * Content-Type of its own, an empty "Content-Type:". NULL when out of memory. */
static struct curl_slist *build_headers(const pl_request *req)
{
    struct curl_slist *h = NULL, *t;
    int has_ct = 0;
    for (size_t i = 0; i < req->nheaders; i++) {
        if (!(t = append_header(h, req->headers[i].name, req->headers[i].value))) goto oom;
        h = t;
        if (pl_strcaseeq(req->headers[i].name, "Content-Type")) has_ct = 1;
    }
    if (!(t = curl_slist_append(h, "Expect:"))) goto oom;
    h = t;
    if (!has_ct) {
        if (!(t = curl_slist_append(h, "Content-Type:"))) goto oom;
        h = t;
    }
    return h;
oom:
    slist_free_wipe(h);
    return NULL;
}

/* 1 when h is exactly the list build_headers(req) would make. */
static int headers_match(const struct curl_slist *h, const pl_request *req)
{
    int has_ct = 0;
    for (size_t i = 0; i < req->nheaders; i++, h = h->next) {
        if (!h) return 0;
        const char *n = req->headers[i].name, *d = h->data;
        size_t nl = strlen(n);
        if (strncmp(d, n, nl) != 0 || d[nl] != ':' || d[nl + 1] != ' ' ||
            strcmp(d + nl + 2, req->headers[i].value) != 0)
            return 0;
        if (!has_ct && pl_strcaseeq(n, "Content-Type")) has_ct = 1;
    }
    if (!h || strcmp(h->data, "Expect:") != 0) return 0;
    h = h->next;
    if (!has_ct) {
        if (!h || strcmp(h->data, "Content-Type:") != 0) return 0;
        h = h->next;
    }
    return h == NULL;
}

/* pl_response_free's release hook for a collector: its headers are blocks
 * "name\0value\0" (free name only), in k->strs while there was room. */
static void collector_release(pl_response *r)
{
    pl_collector *k = pl_collector_of(r);
    for (size_t i = 0; i < r->nheaders; i++)
        if (!inline_block(k, r->headers[i].name)) free(r->headers[i].name);
    if (r->headers != k->hdr_inline) free(r->headers);
    free(k);
}

static pl_response *new_collector(const pl_request *req)
{
    /* Everything but the inline header blocks zeroed. */
    pl_collector *k = malloc(sizeof *k);
    if (!k) return NULL;
    memset(k, 0, offsetof(pl_collector, strs));
    k->resp.headers = k->hdr_inline;
    k->resp.headers_cap = PL_RESP_INLINE_HEADERS;
    k->resp.release = collector_release;
    k->only_retry_after = req->op != PL_OP_PEEKLOCK && req->op != PL_OP_RECVDEL;
    return &k->resp;
}

static int setup_easy(pl_client *c, CURL *e, const pl_request *req, long extra_timeout_ms,
                      struct curl_slist **hdrs_out, pl_response **resp_out)
{
    *hdrs_out = NULL;
    *resp_out = NULL;
    pl_response *resp = new_collector(req);
    if (!resp) return pl_error_nomem();
    struct curl_slist *h = build_headers(req);
    if (!h) {
        free(resp);
        return pl_error_nomem();
    }
    /* No curl_easy_reset: every per-request option is set below, the static ones
     * too, and a driver's own options (e.g. CURLOPT_PRIVATE) survive. */
    easy_static_opts(c, e);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_PREREQFUNCTION, on_prereq);
    curl_easy_setopt(e, CURLOPT_URL, req->url);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, c->request_timeout_ms + extra_timeout_ms);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
    /* Every method sends its body (or an explicit empty one: Content-Length: 0). */
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, req->body ? (const char *)req->body : "");
    curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, strcmp(req->method, "POST") != 0 ? req->method : NULL);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, resp);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, resp);
    curl_easy_setopt(e, CURLOPT_PREREQDATA, resp);
    *hdrs_out = h;
    *resp_out = resp;
    return PL_OK;
}

static size_t slot_on_header(char *buf, size_t size, size_t n, void *ud)
{
    return on_header(buf, size, n, ((pl_easy *)ud)->resp);
}
static size_t slot_on_body(char *buf, size_t size, size_t n, void *ud)
{
    return on_body(buf, size, n, ((pl_easy *)ud)->resp);
}
static int slot_on_prereq(void *ud, char *ip, char *lip, int port, int lport)
{
    return on_prereq(((pl_easy *)ud)->resp, ip, lip, port, lport);
}

/* Prepares a pooled handle for req: sets the URL, and the other per-request
 * options only where they differ from what the handle last carried. */
static int setup_pooled(pl_client *c, pl_easy *s, const pl_request *req, long extra_timeout_ms)
{
    pl_response *resp = new_collector(req);
    if (!resp) return pl_error_nomem();
    CURL *e = s->e;
    if (!s->hdrs || !headers_match(s->hdrs, req)) {
        struct curl_slist *h = build_headers(req);
        if (!h) {
            free(resp);
            return pl_error_nomem();
        }
        curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
        slist_free_wipe(s->hdrs);
        s->hdrs = h;
    }
    curl_easy_setopt(e, CURLOPT_URL, req->url);
    long timeout_ms = c->request_timeout_ms + extra_timeout_ms;
    if (!s->set || timeout_ms != s->timeout_ms) {
        curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, timeout_ms);
        s->timeout_ms = timeout_ms;
    }
    /* Every method sends its body (or an explicit empty one: Content-Length: 0). */
    const char *body = req->body ? (const char *)req->body : "";
    curl_off_t body_len = (curl_off_t)req->body_len;
    if (!s->set || body != s->body || body_len != s->body_len) {
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, body_len);
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, body);
        s->body = body;
        s->body_len = body_len;
    }
    const char *method = strcmp(req->method, "POST") != 0 ? req->method : NULL;
    if (!s->set || (method != s->method && (!method || !s->method || strcmp(method, s->method) != 0))) {
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
        s->method = method;
    }
    s->set = 1;
    s->resp = resp;
    return PL_OK;
}

int pl_client_setup_easy(pl_client *c, CURL *e, const pl_request *req, long extra_timeout_ms,
                         struct curl_slist **hdrs_out, pl_response **resp_out)
{
    return setup_easy(c, e, req, extra_timeout_ms, hdrs_out, resp_out);
}

int pl_client_curl_error(CURLcode rc, const pl_response *resp)
{
    return pl_client_curl_error_easy(rc, resp, NULL, NULL);
}

/* EMFILE or ENFILE when no socket can be opened now, else 0 (libcurl reports that
 * as "Couldn't connect", not always with its errno). */
static long fds_exhausted(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd >= 0) {
        close(fd);
        return 0;
    }
    return errno == EMFILE || errno == ENFILE ? errno : 0;
}

int pl_client_curl_error_easy(CURLcode rc, const pl_response *resp, CURL *e, const char *errbuf)
{
    long os_errno = 0;
    if (e) curl_easy_getinfo(e, CURLINFO_OS_ERRNO, &os_errno);
    if (os_errno != EMFILE && os_errno != ENFILE &&
        (rc == CURLE_COULDNT_CONNECT || rc == CURLE_COULDNT_RESOLVE_HOST || rc == CURLE_OUT_OF_MEMORY))
        os_errno = fds_exhausted();
    const char *tls = errbuf && *errbuf ? errbuf : curl_easy_strerror(rc);
    if (os_errno == EMFILE || os_errno == ENFILE)
        return pl_error_set(PL_ECONNECT, 0, 1,
                            "out of file descriptors (%s): could not open a connection; "
                            "close some, or raise the limit (ulimit -n)",
                            os_errno == EMFILE ? "EMFILE" : "ENFILE");
    switch (rc) {
    case CURLE_SSL_CACERT_BADFILE:
        return pl_error_set(PL_EINVAL, 0, 0, "ca_file: cannot be used as a TLS CA bundle (%.200s)", tls);
    case CURLE_PEER_FAILED_VERIFICATION:
        return pl_error_set(PL_ECONNECT, 0, 0, "TLS: the server's certificate failed verification: %.200s",
                            tls);
    case CURLE_SSL_CONNECT_ERROR: return pl_error_set(PL_ECONNECT, 0, 1, "TLS handshake failed: %.200s", tls);
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_ENGINE_NOTFOUND:
    case CURLE_SSL_ENGINE_SETFAILED:
    case CURLE_SSL_ENGINE_INITFAILED:
    case CURLE_SSL_CRL_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS: return pl_error_set(PL_ECONNECT, 0, 0, "TLS: %.200s", tls);
    default: break;
    }
    if (resp && resp->too_big)
        return pl_error_set(PL_EPROTOCOL, 0, 0, "response exceeded a size limit or was malformed");
    if (rc == CURLE_OK) /* libcurl's success, but the headers never ended */
        return pl_error_set(PL_EPROTOCOL, 0, 0, "malformed response: cut short in its headers");
    if (rc == CURLE_ABORTED_BY_CALLBACK && resp && pl_collector_of(resp)->sends > 1)
        return pl_error_set(PL_ECONNECT, 0, 1,
                            "the connection closed before an answer came (not sent again "
                            "on a new connection: the first copy may have been carried out)");
    switch (rc) {
    case CURLE_OPERATION_TIMEDOUT:
        return pl_error_set(PL_ETIMEOUT, 0, 1, "request timed out: %s", curl_easy_strerror(rc));
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_CONNECT:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
        return pl_error_set(PL_ECONNECT, 0, 1, "connection failed: %s", curl_easy_strerror(rc));
    case CURLE_OUT_OF_MEMORY: return pl_error_nomem();
    case CURLE_WRITE_ERROR:
    case CURLE_WEIRD_SERVER_REPLY:
    case CURLE_UNSUPPORTED_PROTOCOL: /* e.g. an HTTP/0.9 answer */
    case CURLE_PARTIAL_FILE:
    case CURLE_BAD_CONTENT_ENCODING:
        return pl_error_set(PL_EPROTOCOL, 0, 0, "malformed response: %s", curl_easy_strerror(rc));
    default: return pl_error_set(PL_ECONNECT, 0, 1, "transfer failed: %s", curl_easy_strerror(rc));
    }
}

int pl_client_transfer_io(CURLcode rc, const pl_response *resp)
{
    if (rc == CURLE_OK)
        return resp && (resp->too_big || !pl_collector_of(resp)->headers_done) ? PL_IO_MALFORMED
                                                                               : PL_IO_ANSWERED;
    /* Nothing went on the wire before the prerequest callback ran. */
    if (!resp || pl_collector_of(resp)->sends == 0) return PL_IO_NOT_SENT;
    if (resp->too_big) return PL_IO_MALFORMED;
    switch (rc) {
    case CURLE_WRITE_ERROR:
    case CURLE_WEIRD_SERVER_REPLY:
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_PARTIAL_FILE:
    case CURLE_BAD_CONTENT_ENCODING: return PL_IO_MALFORMED;
    default: return PL_IO_UNANSWERED;
    }
}

/* Long polls watch for pl_client_interrupt_receives (libcurl calls this about
 * once a second while a transfer waits, and as data moves). */
static int on_xferinfo(void *ud, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal, curl_off_t ulnow)
{
    (void)dltotal;
    (void)dlnow;
    (void)ultotal;
    (void)ulnow;
    return atomic_load(&((pl_client *)ud)->receives_interrupted) ? 1 : 0;
}

void pl_client_interrupt_receives(pl_client *c)
{
    if (c) atomic_store(&c->receives_interrupted, 1);
}

static int is_receive(const pl_request *req)
{
    return req->op == PL_OP_PEEKLOCK || req->op == PL_OP_RECVDEL;
}

/* A handle of the pool, or a new one with the client's static options and
 * the slot callbacks (userdata: the slot, set once). */
static pl_easy *easy_new(pl_client *c)
{
    pl_easy *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    if (!(s->e = curl_easy_init())) {
        free(s);
        return NULL;
    }
    easy_static_opts(c, s->e);
    curl_easy_setopt(s->e, CURLOPT_HEADERFUNCTION, slot_on_header);
    curl_easy_setopt(s->e, CURLOPT_WRITEFUNCTION, slot_on_body);
    curl_easy_setopt(s->e, CURLOPT_PREREQFUNCTION, slot_on_prereq);
    curl_easy_setopt(s->e, CURLOPT_HEADERDATA, s);
    curl_easy_setopt(s->e, CURLOPT_WRITEDATA, s);
    curl_easy_setopt(s->e, CURLOPT_PREREQDATA, s);
    curl_easy_setopt(s->e, CURLOPT_XFERINFOFUNCTION, on_xferinfo);
    curl_easy_setopt(s->e, CURLOPT_XFERINFODATA, c);
    curl_easy_setopt(s->e, CURLOPT_ERRORBUFFER, s->errbuf);
    return s;
}

static pl_easy *pool_get(pl_client *c)
{
    pl_easy *s = NULL;
    pthread_mutex_lock(&c->lock);
    if (c->npool > 0) s = c->pool[--c->npool];
    pthread_mutex_unlock(&c->lock);
    return s ? s : easy_new(c);
}

static void pool_put(pl_client *c, pl_easy *s)
{
    s->resp = NULL;
    pthread_mutex_lock(&c->lock);
    if (c->npool < c->pool_size) {
        c->pool[c->npool++] = s;
        s = NULL;
    }
    pthread_mutex_unlock(&c->lock);
    easy_free(s);
}

pl_easy *pl_client_easy_new(pl_client *c)
{
    return easy_new(c);
}

int pl_client_easy_prepare(pl_client *c, pl_easy *s, const pl_request *req, long extra_timeout_ms,
                           pl_response **resp_out)
{
    int rc = setup_pooled(c, s, req, extra_timeout_ms);
    *resp_out = rc == PL_OK ? s->resp : NULL;
    return rc;
}

CURL *pl_easy_curl(const pl_easy *s)
{
    return s->e;
}

void pl_easy_done(pl_easy *s)
{
    s->resp = NULL;
}

void pl_client_easy_free(pl_easy *s)
{
    easy_free(s);
}

/* One HTTP exchange: *io says how far it got (PL_IO_*, outcome_int.h). On a
 * transport failure returns its negative code; *resp_out is set when answered. */
static int perform_once(pl_client *c, const pl_request *req, pl_response **resp_out, int64_t *sent_mono,
                        int *io)
{
    *resp_out = NULL;
    *io = PL_IO_NOT_SENT;
    pl_easy *s = pool_get(c);
    if (!s) return pl_error_nomem();
    int rc = setup_pooled(c, s, req, (long)req->timeout_s * 1000);
    if (rc) {
        pool_put(c, s);
        return rc;
    }
    pl_response *resp = s->resp;
    CURL *e = s->e;
    int watch = is_receive(req) && req->timeout_s > 0;
    curl_easy_setopt(e, CURLOPT_NOPROGRESS, watch ? 0L : 1L);
    *sent_mono = pl_now_mono_ms();
    s->errbuf[0] = '\0';
    CURLcode cr = curl_easy_perform(e);
    pl_client_stat_add(c, PL_STAT_REQUESTS, 1);
    long connects = -1;
    curl_easy_getinfo(e, CURLINFO_NUM_CONNECTS, &connects);
    if (connects == 0) pl_client_stat_add(c, PL_STAT_REUSED, 1);
    *io = pl_client_transfer_io(cr, resp);
    if (cr == CURLE_ABORTED_BY_CALLBACK && watch && atomic_load(&c->receives_interrupted)) {
        /* ended by pl_client_interrupt_receives: no answer had come */
        pl_response_free(resp);
        easy_free(s);
        return pl_error_set(PL_ECLOSED, 0, 0, "the client was closed while the receive waited");
    }
    if (cr != CURLE_OK) {
        rc = pl_client_curl_error_easy(cr, resp, e, s->errbuf);
        pl_response_free(resp);
        /* A failed handle may hold a broken connection: drop it. */
        easy_free(s);
        return rc;
    }
    long status = 0;
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
    if (*io == PL_IO_MALFORMED) { /* e.g. the status line and nothing more */
        rc = pl_client_curl_error(cr, resp);
        pl_response_free(resp);
        easy_free(s);
        return rc;
    }
    resp->status = (int)status;
    pool_put(c, s);
    *resp_out = resp;
    return PL_OK;
}

/* Thread-local jitter source (xorshift64*), seeded per thread. */
static uint64_t jitter_next(void)
{
    static _Thread_local uint64_t s;
    if (!s) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        s = ((uint64_t)ts.tv_nsec << 20) ^ (uint64_t)(uintptr_t)&s ^ (uint64_t)ts.tv_sec;
        if (!s) s = 0x9E3779B97F4A7C15ULL;
    }
    s ^= s >> 12;
    s ^= s << 25;
    s ^= s >> 27;
    return s * 0x2545F4914F6CDD1DULL;
}

static double now_ms_precise(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

static _Thread_local unsigned last_orphaned;

unsigned pl_client_last_orphaned(void)
{
    return last_orphaned;
}

/* Runs req: an I/O loop that reports each attempt to outcome.c and does what it
 * says (pl_call_report); the answer is read by pl_wire_result. */
static int run(pl_client *c, pl_request *req, pl_message **out, pl_message *m)
{
    int op = req->op;
    pl_call call;
    pl_call_init(&call, op, req->entity, jitter_next());
    call.resend_ok = req->resend_ok;
    for (;;) {
        pl_response *resp = NULL;
        int64_t sent = 0;
        int io, status = 0;
        long retry_after = -1;
        double t0 = now_ms_precise();
        int rc = perform_once(c, req, &resp, &sent, &io);
        if (resp) {
            status = resp->status;
            rc = pl_wire_result(out, c->endpoint, req, m, resp, sent);
            if (out && *out) pl_client_adopt(c, *out);
            if (op == PL_OP_RENEW && rc == PL_OK) pl_client_record_renew_rtt(c, now_ms_precise() - t0);
            retry_after = pl_retry_after_ms(pl_response_header(resp, "Retry-After"));
            pl_response_free(resp);
        }
        if (rc == PL_ECLOSED && is_receive(req)) {
            if (op == PL_OP_PEEKLOCK) last_orphaned = (unsigned)call.orphaned;
            return rc;
        }
        int64_t left = m && op != PL_OP_PEEKLOCK && op != PL_OP_RECVDEL ? pl_message_lock_remaining_ms(m) : 0;
        int next = pl_call_report(&call, &c->policy, io, status, rc, retry_after, left);
        pl_client_call_reported(c, &call, next, status, 1);
        if (next == PL_NEXT_RETRY) {
            pl_client_stat_add(c, PL_STAT_RETRIES, 1);
            pl_sleep_ms(call.delay_ms);
            continue;
        }
        if (op == PL_OP_PEEKLOCK) last_orphaned = (unsigned)call.orphaned;
        if (call.orphaned) pl_client_stat_add(c, PL_STAT_ORPHANED, (uint64_t)call.orphaned);
        count_result(c, req, call.code == PL_EUNKNOWN && m ? PL_ELOCKLOST : call.code);
        return call.code;
    }
}

/* ---- blocking operations ---------------------------------------------------- */

int pl_send(pl_client *c, const char *entity, const pl_outgoing *m)
{
    pl_request *req = NULL;
    int rc = pl_request_send(&req, c, entity, m);
    if (rc) return rc;
    rc = run(c, req, NULL, NULL);
    pl_request_free(req);
    return rc;
}

int pl_send_batch(pl_client *c, const char *entity, const pl_batch *b)
{
    pl_request *req = NULL;
    int rc = pl_request_send_batch(&req, c, entity, b);
    if (rc) return rc;
    rc = run(c, req, NULL, NULL);
    pl_request_free(req);
    return rc;
}

static int receive(pl_message **out, pl_client *c, const char *entity, int timeout_s, int peek)
{
    if (!out) return pl_error_inval("out", "must not be NULL");
    *out = NULL;
    if (peek) last_orphaned = 0;
    if (c && atomic_load(&c->receives_interrupted))
        return pl_error_set(PL_ECLOSED, 0, 0, "the client is closed");
    pl_request *req = NULL;
    int rc = pl_request_receive(&req, c, entity, timeout_s, peek);
    if (rc) return rc;
    rc = run(c, req, out, NULL);
    pl_request_free(req);
    return rc;
}

int pl_peek_lock(pl_message **out, pl_client *c, const char *entity, int timeout_s)
{
    return receive(out, c, entity, timeout_s, 1);
}

int pl_receive_and_delete(pl_message **out, pl_client *c, const char *entity, int timeout_s)
{
    return receive(out, c, entity, timeout_s, 0);
}

static int held_check(pl_client *c, pl_message *m)
{
    if (check_client(c)) return PL_EINVAL;
    if (!m) return pl_error_inval("m", "must not be NULL");
    if (!m->location)
        return pl_error_set(PL_ESTATE, 0, 0,
                            "message was received with receive-and-delete: there is no lock");
    return PL_OK;
}

int pl_renew_lock(pl_client *c, pl_message *m)
{
    int rc = held_check(c, m);
    if (rc) return rc;
    if ((rc = pl_fence_enter(m, PL_OP_RENEW)) != PL_OK) return rc;
    pl_request *req = NULL;
    if ((rc = pl_client_settle_request(&req, c, m, PL_SETTLE_RENEW)) != PL_OK) return rc;
    rc = run(c, req, NULL, m);
    pl_request_free(req);
    return rc;
}

/* The settle fence (outcome.c): held -> settling before the request goes out,
 * then settled, lost, unknown (remembered), or held again. */
static int settle(pl_client *c, pl_message *m, int op)
{
    int rc = held_check(c, m);
    if (rc) return rc;
    int wop = op == PL_SETTLE_COMPLETE ? PL_OP_COMPLETE : PL_OP_UNLOCK;
    if ((rc = pl_fence_enter(m, wop)) != PL_OK) return rc;
    pl_request *req = NULL;
    if ((rc = pl_client_settle_request(&req, c, m, op)) == PL_OK) {
        rc = run(c, req, NULL, m);
        pl_request_free(req);
    }
    pl_fence_leave(m, rc);
    return rc;
}

int pl_unlock(pl_client *c, pl_message *m)
{
    return settle(c, m, PL_SETTLE_UNLOCK);
}
int pl_complete(pl_client *c, pl_message *m)
{
    return settle(c, m, PL_SETTLE_COMPLETE);
}
