/* Integration: what a C program sees of failures as they happen (run under with_emulator.py).
 * The client's log hook (pl_client_options.log_fn) gets each retry and each failed call of
 * the blocking operations, on the calling thread, with operation, entity, status or code,
 * attempt and delay, and never a secret; the client counts them (failed, renew_failures).
 * The renewer tells each failed renewal (PL_EVENT_RENEW_FAILED, with its code and whether it
 * will retry) and each renewal's slack (pl_event_slack_ms). Faults are the emulator's
 * injected 503s; a lost lock is made by moving the emulator's clock. Also run under TSan. */
#include <pthread.h>

#include "support.h"

#define MAX_RECORDS 256

typedef struct rec {
    int kind, code, http_status, attempt;
    long delay_ms;
    char operation[32], entity[64], message[512];
    pthread_t thread;
} rec;

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static rec records[MAX_RECORDS];
static int nrecords;

static void hook(void *userdata, const pl_log_record *r)
{
    int *calls = userdata;
    pthread_mutex_lock(&mu);
    (*calls)++;
    if (nrecords < MAX_RECORDS) {
        rec *x = &records[nrecords++];
        x->kind = r->kind;
        x->code = r->code;
        x->http_status = r->http_status;
        x->attempt = r->attempt;
        x->delay_ms = r->delay_ms;
        snprintf(x->operation, sizeof x->operation, "%s", r->operation);
        snprintf(x->entity, sizeof x->entity, "%s", r->entity);
        snprintf(x->message, sizeof x->message, "%s", r->message);
        x->thread = pthread_self();
    }
    pthread_mutex_unlock(&mu);
    /* The call's pl_error_last() is put back after the hook. */
    pl_error_clear();
}

static void reset_records(void)
{
    pthread_mutex_lock(&mu);
    nrecords = 0;
    pthread_mutex_unlock(&mu);
}

static int hook_calls;

static pl_client *new_client(unsigned version, int max_retries)
{
    pl_client_options o = PL_CLIENT_OPTIONS_INIT;
    o.version = version;
    o.connection_string = pl_test_connection_string();
    o.request_timeout_ms = 2000;
    o.max_retries = max_retries;
    o.retry_base_ms = 5;
    o.retry_max_ms = 20;
    o.log_fn = hook;
    o.log_userdata = &hook_calls;
    pl_client *c = NULL;
    REQUIRE(pl_client_new(&c, &o) == PL_OK);
    return c;
}

static void fault(const char *op, const char *entity, int status, int count)
{
    char j[256];
    snprintf(j, sizeof j, "{\"operation\": \"%s\", \"entity\": \"%s\", \"status\": %d, \"count\": %d}", op,
             entity, status, count);
    REQUIRE(pl_test_fault(j) == 201);
}

/* No record of the last nrecords holds the SAS key, a signature or token. */
static void check_no_secret(const char *token)
{
    for (int i = 0; i < nrecords; i++) {
        const char *t = records[i].message;
        CHECK(strstr(t, "SAS_KEY_VALUE") == NULL);
        CHECK(strstr(t, "sig=") == NULL);
        CHECK(strstr(t, "SharedAccessSignature") == NULL);
        if (token) CHECK(strstr(t, token) == NULL);
        if (token) CHECK(strstr(records[i].entity, token) == NULL);
    }
}

/* Two 503s, then success: two RETRY records on this thread, no FAILED; retries counted. */
static void phase_retries(void)
{
    REQUIRE(pl_test_entity("log-q", "queue", 30, 10) / 100 == 2);
    pl_client *c = new_client(PL_CLIENT_OPTIONS_VERSION, 3);
    reset_records();
    fault("send", "log-q", 503, 2);
    pl_test_send_id(c, "log-q", "a1");
    CHECK_EQ(nrecords, 2);
    for (int i = 0; i < nrecords && i < 2; i++) {
        CHECK_EQ(records[i].kind, PL_LOG_RETRY);
        CHECK_STR(records[i].operation, "send");
        CHECK_STR(records[i].entity, "log-q");
        CHECK_EQ(records[i].code, PL_ETHROTTLED);
        CHECK_EQ(records[i].http_status, 503);
        CHECK_EQ(records[i].attempt, i + 1);
        CHECK(records[i].delay_ms >= 1 && records[i].delay_ms <= 20);
        CHECK(strstr(records[i].message, "503") != NULL);
        CHECK(pthread_equal(records[i].thread, pthread_self()));
    }
    pl_client_stats st;
    REQUIRE(pl_client_stats_get(c, &st) == PL_OK);
    CHECK_EQ(st.retries, 2);
    CHECK_EQ(st.failed, 0);
    pl_client_free(c);
}

/* 503 on every attempt: two RETRY records, then one FAILED with the call's code;
 * pl_error_last() is the call's, whatever the hook did; failed counted once. */
static void phase_failed(void)
{
    pl_client *c = new_client(PL_CLIENT_OPTIONS_VERSION, 2);
    reset_records();
    fault("peek_lock", "log-q", 503, 3);
    pl_message *m = NULL;
    CHECK_EQ(pl_peek_lock(&m, c, "log-q", 1), PL_ETHROTTLED);
    CHECK_EQ(pl_error_last()->code, PL_ETHROTTLED);
    CHECK_EQ(pl_error_last()->http_status, 503);
    REQUIRE(nrecords == 3);
    CHECK_EQ(records[0].kind, PL_LOG_RETRY);
    CHECK_EQ(records[1].kind, PL_LOG_RETRY);
    CHECK_EQ(records[2].kind, PL_LOG_FAILED);
    CHECK_STR(records[2].operation, "peek_lock");
    CHECK_EQ(records[2].code, PL_ETHROTTLED);
    CHECK_EQ(records[2].http_status, 503);
    CHECK_EQ(records[2].attempt, 3);
    CHECK_EQ(records[2].delay_ms, 0);
    CHECK_STR(records[2].message, pl_error_last()->message);
    pl_client_stats st;
    REQUIRE(pl_client_stats_get(c, &st) == PL_OK);
    CHECK_EQ(st.failed, 1);
    CHECK_EQ(st.retries, 2);

    /* Nothing in the queue within the timeout is no failure. */
    reset_records();
    pl_test_clear_faults();
    REQUIRE(pl_test_entity("log-empty", "queue", 30, 10) / 100 == 2);
    CHECK_EQ(pl_peek_lock(&m, c, "log-empty", 0), PL_EMPTY);
    CHECK_EQ(nrecords, 0);

    /* A settle that fails: the record names the entity, never the lock token. */
    REQUIRE(pl_peek_lock(&m, c, "log-q", 5) == PL_OK);
    char *token = pl_message_lock_token(m) ? strdup(pl_message_lock_token(m)) : NULL;
    REQUIRE(token);
    reset_records();
    pl_test_advance(60); /* the lock has run out on the server */
    CHECK_EQ(pl_complete(c, m), PL_ELOCKLOST);
    REQUIRE(nrecords == 1);
    CHECK_EQ(records[0].kind, PL_LOG_FAILED);
    CHECK_STR(records[0].operation, "complete");
    CHECK_EQ(records[0].code, PL_ELOCKLOST);
    CHECK_EQ(records[0].http_status, 404);
    check_no_secret(token);
    free(token);
    pl_message_free(m);
    REQUIRE(pl_client_stats_get(c, &st) == PL_OK);
    CHECK_EQ(st.failed, 2);
    pl_client_free(c);
}

/* Version 1 options (before the hook) still work; their log fields are not read. */
static void phase_version1(void)
{
    int before = hook_calls;
    pl_client *c = new_client(1, 1);
    fault("send", "log-q", 503, 1);
    pl_test_send_id(c, "log-q", "v1");
    CHECK_EQ(hook_calls, before);
    pl_client_stats st;
    REQUIRE(pl_client_stats_get(c, &st) == PL_OK);
    CHECK_EQ(st.retries, 1);
    pl_client_free(c);
}

/* Several threads retry at once: each record comes on the thread whose call it is. */
typedef struct worker {
    pl_client *c;
    char id[16];
    pthread_t self;
    int rc;
} worker;

static void *worker_main(void *arg)
{
    worker *w = arg; /* (w->self: set by pthread_create) */
    pl_outgoing *o = NULL;
    w->rc = pl_outgoing_new(&o, "t", 1);
    if (w->rc == PL_OK) w->rc = pl_outgoing_set_broker(o, "MessageId", w->id);
    if (w->rc == PL_OK) w->rc = pl_send(w->c, "log-q", o);
    pl_outgoing_free(o);
    return NULL;
}

static void phase_threads(void)
{
    enum { N = 4 };
    pl_client *c = new_client(PL_CLIENT_OPTIONS_VERSION, 5);
    reset_records();
    fault("send", "log-q", 503, N);
    worker w[N];
    for (int i = 0; i < N; i++) {
        w[i].c = c;
        snprintf(w[i].id, sizeof w[i].id, "t%d", i);
        REQUIRE(pthread_create(&w[i].self, NULL, worker_main, &w[i]) == 0);
    }
    for (int i = 0; i < N; i++) pthread_join(w[i].self, NULL);
    for (int i = 0; i < N; i++) CHECK_EQ(w[i].rc, PL_OK);
    pthread_mutex_lock(&mu);
    CHECK_EQ(nrecords, N);
    for (int i = 0; i < nrecords; i++) {
        int mine = 0;
        for (int k = 0; k < N; k++) mine |= pthread_equal(records[i].thread, w[k].self);
        CHECK(mine);
        CHECK_EQ(records[i].kind, PL_LOG_RETRY);
    }
    pthread_mutex_unlock(&mu);
    pl_client_free(c);
}

/* The renewer: two injected 503s on renew are two RENEW_FAILED events (will retry), then
 * renewals with their slack; a lock the server dropped (clock moved) is a final
 * RENEW_FAILED (PL_ELOCKLOST, no retry) and then LOST. */
static void phase_renewer(void)
{
    REQUIRE(pl_test_entity("log-r", "queue", 3, 10) / 100 == 2);
    pl_client *c = new_client(PL_CLIENT_OPTIONS_VERSION, 3);
    pl_test_send_id(c, "log-r", "r1");
    pl_message *m = NULL;
    REQUIRE(pl_peek_lock(&m, c, "log-r", 5) == PL_OK);
    const char *token = pl_message_lock_token(m);
    pl_renewer_options ro = PL_RENEWER_OPTIONS_INIT;
    ro.request_timeout_ms = 1000;
    pl_renewer *r = NULL;
    REQUIRE(pl_renewer_new(&r, c, &ro) == PL_OK);
    reset_records();
    fault("renew", "log-r", 503, 2);
    REQUIRE(pl_renewer_add(r, m, 60000) == PL_OK);
    int failed = 0, renewed = 0, lost = 0;
    for (int i = 0; i < 60 && renewed < 1 && !lost; i++) {
        pl_event *ev = NULL;
        if (pl_renewer_wait_event(&ev, r, 500) != PL_OK) continue;
        CHECK(pl_event_message(ev) == m);
        CHECK(strstr(pl_event_reason(ev), token) == NULL);
        switch (pl_event_type(ev)) {
        case PL_EVENT_RENEW_FAILED:
            failed++;
            CHECK_EQ(pl_event_code(ev), PL_ETHROTTLED);
            CHECK_EQ(pl_event_http_status(ev), 503);
            CHECK_EQ(pl_event_will_retry(ev), 1);
            CHECK_EQ(pl_event_slack_ms(ev), 0);
            CHECK(strstr(pl_event_reason(ev), "HTTP 503") != NULL);
            CHECK(strstr(pl_event_reason(ev), "retrying") != NULL);
            break;
        case PL_EVENT_RENEWED:
            renewed++;
            CHECK_EQ(pl_event_will_retry(ev), 0);
            CHECK_EQ(pl_event_code(ev), 0);
            /* the renewal landed before the lock's 3 s ran out, after two failed tries */
            CHECK(pl_event_slack_ms(ev) > 0 && pl_event_slack_ms(ev) < 3000);
            break;
        case PL_EVENT_LOST: lost = 1; break;
        }
        pl_event_free(ev);
    }
    CHECK_EQ(failed, 2);
    CHECK_EQ(renewed, 1);
    CHECK_EQ(lost, 0);
    CHECK_EQ(nrecords, 0); /* the renewer never calls the hook */

    pl_test_advance(60); /* the server's lock runs out: the next renewal gets 404 */
    int final_failed = 0;
    lost = 0;
    for (int i = 0; i < 60 && !lost; i++) {
        pl_event *ev = NULL;
        if (pl_renewer_wait_event(&ev, r, 500) != PL_OK) continue;
        int t = pl_event_type(ev);
        if (t == PL_EVENT_RENEW_FAILED) {
            CHECK_EQ(lost, 0); /* the failure comes first */
            CHECK_EQ(pl_event_code(ev), PL_ELOCKLOST);
            CHECK_EQ(pl_event_will_retry(ev), 0);
            CHECK_EQ(pl_event_http_status(ev), 404);
            final_failed++;
        } else if (t == PL_EVENT_LOST) {
            lost = 1;
        }
        pl_event_free(ev);
    }
    CHECK_EQ(final_failed, 1);
    CHECK_EQ(lost, 1);
    pl_renewer_stats rs;
    pl_client_stats cs;
    REQUIRE(pl_renewer_stats_get(r, &rs) == PL_OK);
    REQUIRE(pl_client_stats_get(c, &cs) == PL_OK);
    CHECK_EQ(rs.failures, 3);
    CHECK_EQ(cs.renew_failures, 3);
    CHECK_EQ(cs.failed, 0); /* the renewer's work is no failed call */
    pl_renewer_free(r);
    pl_message_free(m);
    pl_client_free(c);
}

/* A foreground renew that keeps failing: each failed attempt is a renew failure. */
static void phase_foreground_renew(void)
{
    pl_client *c = new_client(PL_CLIENT_OPTIONS_VERSION, 1);
    pl_test_send_id(c, "log-q", "f1");
    pl_message *m = NULL;
    REQUIRE(pl_peek_lock(&m, c, "log-q", 5) == PL_OK);
    reset_records();
    fault("renew", "log-q", 503, 2);
    CHECK_EQ(pl_renew_lock(c, m), PL_ETHROTTLED);
    REQUIRE(nrecords == 2);
    CHECK_EQ(records[0].kind, PL_LOG_RETRY);
    CHECK_STR(records[0].operation, "renew_lock");
    CHECK_EQ(records[1].kind, PL_LOG_FAILED);
    check_no_secret(pl_message_lock_token(m));
    pl_client_stats st;
    REQUIRE(pl_client_stats_get(c, &st) == PL_OK);
    CHECK_EQ(st.renew_failures, 2);
    CHECK_EQ(st.failed, 1);
    CHECK_EQ(pl_complete(c, m), PL_OK);
    pl_message_free(m);
    pl_client_free(c);
}

int main(void)
{
    phase_retries();
    phase_failed();
    phase_version1();
    phase_threads();
    phase_foreground_renew();
    phase_renewer();
    pl_test_clear_faults();
    return pl_test_done("test_int_log");
}
