/*
 * The renewer against the emulator (run under tests/c/with_emulator.py, which
 * starts `python -m peeklock.emulator` on a free port and passes its connection
 * string). Queues get a 5-second lock duration, so a few renewal cycles take a
 * few seconds of real time: the emulator's clock controls move server time only,
 * while the renewer runs on the local monotonic clock. Loss is produced with
 * fault injection, never by waiting for expiry on the server.
 *
 * Phases:
 *  1. in one renewer at once: a lock kept alive across ~2 lock durations
 *     (delivery count stays 1, never redelivered, then completed exactly once);
 *     renew answered 404 -> LOST within one lock duration, not completed;
 *     renew answered 503 (+Retry-After) every time -> LOST before the lock runs
 *     out, not completed; a 3 s cap -> CAP_REACHED and renewal stops.
 *  2. a renew in flight while the handler completes: no false "lost".
 *  2b. a renew still unanswered when the lock's estimate runs out: LOST at the
 *     estimate, not when the slow reply arrives (found by tests/chaos).
 *  3. close with unlock while renewals are in flight: every message unlocked and
 *     redelivered at once; no leak (ASan), no race (TSan).
 *  4. the automatic connection pool grows when renewals queue up.
 *  5. argument and state errors.
 *  6. one renewer for the messages of another client: each message is renewed
 *     through (and counted in) the client it came through, not the renewer's.
 */
#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "peeklock.h"
#include "message_int.h"
#include "renewer_int.h"

#include "support.h"

static pl_client *client;
static char base[256];

/* ---- admin requests (plain libcurl; /$admin/ needs no SAS) ----------------- */

typedef struct {
    char *p;
    size_t n;
} rbuf;

static size_t on_body(char *p, size_t size, size_t n, void *ud)
{
    rbuf *b = ud;
    char *np = realloc(b->p, b->n + size * n + 1);
    if (!np) return 0;
    memcpy(np + b->n, p, size * n);
    b->n += size * n;
    np[b->n] = 0;
    b->p = np;
    return size * n;
}

/* Returns the HTTP status; *out (if given) gets the body (free()). */
static long admin(const char *method, const char *path, const char *json, char **out)
{
    CURL *h = curl_easy_init();
    char url[512];
    snprintf(url, sizeof(url), "%s%s", base, path);
    rbuf b = {NULL, 0};
    struct curl_slist *hd = curl_slist_append(NULL, "Content-Type: application/json");
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hd);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT, 30L);
    if (json) curl_easy_setopt(h, CURLOPT_POSTFIELDS, json);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &b);
    long status = 0;
    if (curl_easy_perform(h) == CURLE_OK) curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(hd);
    curl_easy_cleanup(h);
    if (out)
        *out = b.p;
    else
        free(b.p);
    return status;
}

static void make_queue(const char *name, int lock_s)
{
    char path[128], body[128];
    snprintf(path, sizeof(path), "/$admin/entities/%s", name);
    snprintf(body, sizeof(body), "{\"kind\":\"queue\",\"lock_duration\":%d}", lock_s);
    long st = admin("PUT", path, body, NULL);
    REQUIRE(st == 201 || st == 200);
}

static void add_fault(const char *json)
{
    REQUIRE(admin("POST", "/$admin/faults", json, NULL) == 201);
}

static cJSON *state(void)
{
    char *body = NULL;
    REQUIRE(admin("GET", "/$admin/state", NULL, &body) == 200);
    cJSON *j = cJSON_ParseWithOpts(body, NULL, 0);
    free(body);
    REQUIRE(j);
    return j;
}

/* The emulator's view of message seq in queue q: locked (0/1), delivery count. */
static void msg_state(const char *q, int64_t seq, int *locked, int *delivery, int *present)
{
    cJSON *j = state();
    cJSON *ent = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(j, "entities"), q);
    *locked = -1;
    *delivery = -1;
    *present = 0;
    cJSON *m;
    cJSON_ArrayForEach(m, cJSON_GetObjectItemCaseSensitive(ent, "messages"))
    {
        cJSON *s = cJSON_GetObjectItemCaseSensitive(m, "sequence_number");
        if (cJSON_IsNumber(s) && (int64_t)s->valuedouble == seq) {
            *present = 1;
            *locked = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(m, "locked"));
            *delivery = cJSON_GetObjectItemCaseSensitive(m, "delivery_count")->valueint;
        }
    }
    cJSON_Delete(j);
}

static int completed_count(const char *q)
{
    cJSON *j = state();
    cJSON *ent = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(j, "entities"), q);
    int n = 0;
    cJSON *c;
    cJSON_ArrayForEach(c, cJSON_GetObjectItemCaseSensitive(ent, "completed")) n += c->valueint;
    cJSON_Delete(j);
    return n;
}

static int counter(const char *name)
{
    cJSON *j = state();
    cJSON *c = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(j, "counters"), name);
    int n = cJSON_IsNumber(c) ? c->valueint : 0;
    cJSON_Delete(j);
    return n;
}

static pl_message *send_and_lock(const char *q, const char *body)
{
    pl_outgoing *o = NULL;
    REQUIRE(pl_outgoing_new(&o, body, strlen(body)) == PL_OK);
    REQUIRE(pl_send(client, q, o) == PL_OK);
    pl_outgoing_free(o);
    pl_message *m = NULL;
    REQUIRE(pl_peek_lock(&m, client, q, 5) == PL_OK && m);
    REQUIRE(pl_message_lock_state(m) == PL_LOCK_HELD);
    CHECK_EQ(pl_message_lock_duration_ms(m), 5000);
    return m;
}

/* ---- phase 1 ---------------------------------------------------------------- */

static void phase_many(void)
{
    make_queue("keep", 5);
    make_queue("gone", 5);
    make_queue("busy", 5);
    make_queue("capped", 5);
    make_queue("flaky", 5);
    /* flaky: the first two renewals have their connection dropped, the third gets
     * a 500; all are retried while lock time remains, and the lock survives */
    add_fault("{\"operation\":\"renew\",\"entity\":\"flaky\",\"drop\":true,\"count\":2}");
    add_fault("{\"operation\":\"renew\",\"entity\":\"flaky\",\"status\":500,\"count\":1}");
    add_fault("{\"operation\":\"renew\",\"entity\":\"gone\",\"status\":404}");
    add_fault("{\"operation\":\"renew\",\"entity\":\"busy\",\"status\":503,\"retry_after\":1}");

    pl_renewer *r = NULL;
    pl_renewer_options o = PL_RENEWER_OPTIONS_INIT;
    o.max_connections = 2;
    REQUIRE(pl_renewer_new(&r, client, &o) == PL_OK);

    pl_message *keep = send_and_lock("keep", "keep me");
    pl_message *gone = send_and_lock("gone", "lost by 404");
    pl_message *busy = send_and_lock("busy", "lost by 503s");
    pl_message *capped = send_and_lock("capped", "capped");
    pl_message *flaky = send_and_lock("flaky", "flaky");
    int64_t t0 = pl_now_mono_ms();
    REQUIRE(pl_renewer_add(r, keep, 60000) == PL_OK);
    REQUIRE(pl_renewer_add(r, gone, 60000) == PL_OK);
    REQUIRE(pl_renewer_add(r, busy, 60000) == PL_OK);
    REQUIRE(pl_renewer_add(r, capped, 3000) == PL_OK);
    REQUIRE(pl_renewer_add(r, flaky, 60000) == PL_OK);
    CHECK_EQ(pl_renewer_add(r, keep, 60000), PL_OK); /* again: idempotent */

    pl_renewer_stats st;
    REQUIRE(pl_renewer_stats_get(r, &st) == PL_OK);
    CHECK_EQ(st.held, 5);
    CHECK_EQ(st.threads, 1);
    CHECK(st.state_bytes > 0);

    /* Keep the "keep" lock for 2.2 lock durations, watching events as they come. */
    int64_t gone_at = -1, busy_at = -1, cap_at = -1;
    int keep_renewed = 0, flaky_renewed = 0, gone_code = 0, busy_code = 0, other = 0, failed_events = 0;
    int64_t end = t0 + 11000;
    while (pl_now_mono_ms() < end) {
        pl_event *ev = NULL;
        int rc = pl_renewer_wait_event(&ev, r, (long)(end - pl_now_mono_ms()));
        if (rc == PL_EMPTY) continue;
        REQUIRE(rc == PL_OK);
        pl_message *m = pl_event_message(ev);
        int type = pl_event_type(ev);
        CHECK(pl_event_reason(ev) != NULL);
        CHECK(strstr(pl_event_reason(ev), pl_message_lock_token(m)) == NULL); /* no secret */
        if (type == PL_EVENT_RENEW_FAILED) { /* one per failed attempt, with its code */
            failed_events++;
            CHECK(pl_event_code(ev) < 0);
            CHECK(m == gone || m == busy || m == flaky);
            /* only the 404 and the 503s once the lock had no time left are not retried */
            if (!pl_event_will_retry(ev)) CHECK(m == gone || m == busy);
        } else if (m == keep && type == PL_EVENT_RENEWED)
            keep_renewed++;
        else if (m == gone && type == PL_EVENT_LOST && gone_at < 0) {
            gone_at = pl_now_mono_ms() - t0;
            gone_code = pl_event_code(ev);
            CHECK_EQ(pl_event_http_status(ev), 404);
        } else if (m == busy && type == PL_EVENT_LOST && busy_at < 0) {
            busy_at = pl_now_mono_ms() - t0;
            busy_code = pl_event_code(ev);
        } else if (m == capped && type == PL_EVENT_CAP_REACHED)
            cap_at = pl_now_mono_ms() - t0;
        else if (m == flaky && type == PL_EVENT_RENEWED)
            flaky_renewed++;
        else if (m == capped && type == PL_EVENT_RENEWED)
            ; /* renewed before the cap: fine */
        else
            other++;
        pl_event_free(ev);
    }
    fprintf(stderr,
            "phase 1: keep renewed %d times; 404 lost at %lld ms; 503 lost at %lld ms; "
            "cap at %lld ms\n",
            keep_renewed, (long long)gone_at, (long long)busy_at, (long long)cap_at);

    /* kept alive: renewed at about half-life, still locked, delivered once */
    CHECK(keep_renewed >= 3);
    CHECK_EQ(pl_message_lock_state(keep), PL_LOCK_HELD);
    CHECK(pl_message_lock_remaining_ms(keep) > 1000);
    int locked, delivery, present;
    msg_state("keep", pl_message_sequence_number(keep), &locked, &delivery, &present);
    CHECK_EQ(present, 1);
    CHECK_EQ(locked, 1);
    CHECK_EQ(delivery, 1);
    pl_message *again = NULL;
    CHECK_EQ(pl_peek_lock(&again, client, "keep", 0), PL_EMPTY); /* never redelivered */
    pl_message_free(again);

    /* 404: lost within one lock duration, visible on the message, not completable */
    CHECK(gone_at >= 0 && gone_at <= 5000);
    CHECK_EQ(gone_code, PL_ELOCKLOST);
    CHECK_EQ(pl_message_lock_state(gone), PL_LOCK_LOST);
    CHECK_EQ(pl_message_lost_reason(gone), PL_ELOCKLOST);
    CHECK(pl_complete(client, gone) != PL_OK);
    CHECK_EQ(completed_count("gone"), 0);

    /* 503 every time: retried until the lock ran out, then lost (before expiry) */
    CHECK(busy_at >= 2000 && busy_at <= 5000 + 1500); /* (slack for a loaded sanitizer run) */
    CHECK_EQ(busy_code, PL_ETHROTTLED);
    CHECK_EQ(pl_message_lock_state(busy), PL_LOCK_LOST);
    CHECK(pl_complete(client, busy) != PL_OK);
    CHECK_EQ(completed_count("busy"), 0);

    /* cap: stopped at 3 s, message still held by the handler (not lost) */
    CHECK(cap_at >= 2900 && cap_at <= 6000);
    CHECK_EQ(pl_message_lock_state(capped), PL_LOCK_HELD);
    CHECK_EQ(other, 0);

    /* dropped connections and a 500: retried, lock kept */
    CHECK(flaky_renewed >= 2);
    CHECK_EQ(pl_message_lock_state(flaky), PL_LOCK_HELD);
    msg_state("flaky", pl_message_sequence_number(flaky), &locked, &delivery, &present);
    CHECK_EQ(locked, 1);
    CHECK_EQ(delivery, 1);

    REQUIRE(pl_renewer_stats_get(r, &st) == PL_OK);
    CHECK_EQ(st.held, 2); /* only "keep" and "flaky" remain */
    CHECK_EQ(st.lost, 2);
    CHECK_EQ(st.cap_reached, 1);
    CHECK(st.renewals >= (uint64_t)(keep_renewed + flaky_renewed));
    /* one 404, the 503s (Retry-After 1 s, then half the remaining time each:
     * about 8 attempts), two drops and a 500; backoff is respected */
    CHECK(st.failures >= 4 && st.failures <= 30);
    CHECK_EQ(failed_events, st.failures); /* each failed attempt was told */
    CHECK(st.rtt_p99_ms > 0);
    uint64_t slack_total = 0;
    for (int i = 0; i < PL_SLACK_BUCKETS; i++) slack_total += st.slack_buckets[i];
    CHECK_EQ(slack_total, st.renewals);
    /* renewed early: no renewal completed with less than 5% of the lock left */
    CHECK_EQ(st.slack_buckets[0] + st.slack_buckets[1], 0);
    fprintf(stderr, "phase 1: renewals %llu, failures %llu, lateness p99 %.2f ms, rtt p99 %.2f ms\n",
            (unsigned long long)st.renewals, (unsigned long long)st.failures, st.lateness_p99_ms,
            st.rtt_p99_ms);

    /* the handler finishes: remove, then complete exactly once */
    CHECK_EQ(pl_renewer_remove(r, keep), PL_OK);
    CHECK_EQ(pl_renewer_remove(r, keep), PL_OK); /* idempotent */
    CHECK_EQ(pl_complete(client, keep), PL_OK);
    CHECK_EQ(completed_count("keep"), 1);
    CHECK_EQ(pl_renewer_remove(r, flaky), PL_OK);
    CHECK_EQ(pl_complete(client, flaky), PL_OK);
    /* renewal really stopped at the cap: the server let the capped lock expire
     * (last renewed before 3 s, 5 s lock, now 11 s), and the message was not
     * redelivered to anyone else meanwhile */
    msg_state("capped", pl_message_sequence_number(capped), &locked, &delivery, &present);
    CHECK_EQ(present, 1);
    CHECK_EQ(locked, 0);
    CHECK_EQ(delivery, 1);
    CHECK(pl_message_lock_remaining_ms(capped) <= 0);

    REQUIRE(admin("DELETE", "/$admin/faults", NULL, NULL) == 200);
    pl_renewer_free(r);
    pl_message_free(keep);
    pl_message_free(gone);
    pl_message_free(busy);
    pl_message_free(capped);
    pl_message_free(flaky);
}

/* ---- phase 2: a renew racing a complete ---------------------------------- */

static void phase_race(void)
{
    make_queue("race", 5);
    /* renewals of this queue reach the server, then wait 1.5 s before they are
     * processed: the complete below overtakes the renew in flight, which then
     * finds no lock (404). */
    add_fault("{\"operation\":\"renew\",\"entity\":\"race\",\"delay_ms\":1500}");
    pl_renewer *r = NULL;
    REQUIRE(pl_renewer_new(&r, client, NULL) == PL_OK);
    pl_message *m = send_and_lock("race", "raced");
    int renews_before = counter("requests.renew");
    REQUIRE(pl_renewer_add(r, m, 0) == PL_OK);
    /* wait until the renew has reached the server (it is then held by the delay) */
    int64_t deadline = pl_now_mono_ms() + 5000;
    while (counter("requests.renew") == renews_before && pl_now_mono_ms() < deadline) {
        pl_event *ev = NULL;
        if (pl_renewer_wait_event(&ev, r, 20) == PL_OK) {
            fprintf(stderr, "unexpected event %d: %s\n", pl_event_type(ev), pl_event_reason(ev));
            pl_test_failures++;
            pl_event_free(ev);
        }
    }
    CHECK(counter("requests.renew") > renews_before);
    CHECK_EQ(pl_complete(client, m), PL_OK); /* the handler settles meanwhile */
    CHECK_EQ(pl_message_lock_state(m), PL_LOCK_SETTLED);
    /* the delayed renew now comes back (404: the message is gone) */
    pl_event *ev = NULL;
    int64_t until = pl_now_mono_ms() + 2500;
    int events = 0;
    while (pl_now_mono_ms() < until) {
        if (pl_renewer_wait_event(&ev, r, (long)(until - pl_now_mono_ms())) == PL_OK) {
            fprintf(stderr, "unexpected event %d: %s\n", pl_event_type(ev), pl_event_reason(ev));
            events++;
            pl_event_free(ev);
        }
    }
    CHECK_EQ(events, 0);
    CHECK_EQ(pl_message_lock_state(m), PL_LOCK_SETTLED); /* not a false "lost" */
    pl_renewer_stats st;
    REQUIRE(pl_renewer_stats_get(r, &st) == PL_OK);
    CHECK_EQ(st.lost, 0);
    CHECK_EQ(st.held, 0);
    CHECK_EQ(completed_count("race"), 1);
    REQUIRE(admin("DELETE", "/$admin/faults", NULL, NULL) == 200);
    pl_renewer_free(r);
    pl_message_free(m);
}

/* ---- phase 2b: a renew still unanswered when the lock runs out ----------- */

static void phase_slow(void)
{
    make_queue("slow", 5);
    /* renewals of this queue wait 9 s on the server before they are processed,
     * far past the lock's expiry. The lock must be reported lost when the
     * client's own estimate runs out, not when the slow reply arrives: from
     * the expiry on, another receiver can lock the message and work on it. */
    add_fault("{\"operation\":\"renew\",\"entity\":\"slow\",\"delay_ms\":9000}");
    pl_renewer *r = NULL;
    REQUIRE(pl_renewer_new(&r, client, NULL) == PL_OK);
    pl_message *m = send_and_lock("slow", "slow");
    int64_t expiry = pl_message_lock_expiry_mono_ms(m);
    REQUIRE(pl_renewer_add(r, m, 0) == PL_OK);
    pl_event *ev = NULL;
    int rc = pl_renewer_wait_event(&ev, r, 9000);
    int64_t at = pl_now_mono_ms();
    CHECK_EQ(rc, PL_OK);
    if (rc == PL_OK) { /* the renew timed out at the estimate: not retried */
        CHECK_EQ(pl_event_type(ev), PL_EVENT_RENEW_FAILED);
        CHECK_EQ(pl_event_code(ev), PL_ETIMEOUT);
        CHECK_EQ(pl_event_will_retry(ev), 0);
        pl_event_free(ev);
        rc = pl_renewer_wait_event(&ev, r, 1000);
        CHECK_EQ(rc, PL_OK);
    }
    if (rc == PL_OK) {
        CHECK_EQ(pl_event_type(ev), PL_EVENT_LOST);
        pl_event_free(ev);
    }
    fprintf(stderr, "phase 2b: lost reported %lld ms after the estimated expiry\n", (long long)(at - expiry));
    CHECK(at <= expiry + 1000); /* at the estimate, not ~6 s later with the reply */
    CHECK_EQ(pl_message_lock_state(m), PL_LOCK_LOST);
    REQUIRE(admin("DELETE", "/$admin/faults", NULL, NULL) == 200);
    pl_renewer_free(r);
    pl_message_free(m);
}

/* ---- phase 3: close with unlock while renewals are in flight -------------- */

static void phase_close(void)
{
    enum { N = 6 };
    make_queue("closing", 5);
    add_fault("{\"operation\":\"renew\",\"entity\":\"closing\",\"delay_ms\":3000}");
    pl_renewer *r = NULL;
    pl_renewer_options o = PL_RENEWER_OPTIONS_INIT;
    o.max_connections = 3;
    REQUIRE(pl_renewer_new(&r, client, &o) == PL_OK);
    pl_message *m[N];
    for (int i = 0; i < N; i++) {
        char body[32];
        snprintf(body, sizeof(body), "closing %d", i);
        m[i] = send_and_lock("closing", body);
        REQUIRE(pl_renewer_add(r, m[i], 0) == PL_OK);
    }
    int before = counter("requests.renew");
    int64_t deadline = pl_now_mono_ms() + 5000;
    while (counter("requests.renew") < before + 3 && pl_now_mono_ms() < deadline) {
        pl_event *ev = NULL;
        if (pl_renewer_wait_event(&ev, r, 20) == PL_OK) pl_event_free(ev);
    }
    CHECK(counter("requests.renew") >= before + 3); /* all three connections busy */
    /* the fault now only delays renewals; unlocks go through at once */
    int64_t t = pl_now_mono_ms();
    CHECK_EQ(pl_renewer_close(r, 1), PL_OK);
    int64_t took = pl_now_mono_ms() - t;
    fprintf(stderr, "phase 3: close with unlock took %lld ms\n", (long long)took);
    CHECK(took < 3000);                      /* did not wait for the delayed renewals */
    CHECK_EQ(pl_renewer_close(r, 1), PL_OK); /* idempotent */
    CHECK_EQ(pl_renewer_add(r, m[0], 0), PL_ECLOSED);
    pl_event *ev = NULL;
    CHECK_EQ(pl_renewer_wait_event(&ev, r, 10000), PL_EMPTY); /* closed: returns at once */
    for (int i = 0; i < N; i++) {
        CHECK_EQ(pl_message_lock_state(m[i]), PL_LOCK_SETTLED);
        int locked, delivery, present;
        msg_state("closing", pl_message_sequence_number(m[i]), &locked, &delivery, &present);
        CHECK_EQ(present, 1);
        CHECK_EQ(locked, 0); /* unlocked: redelivered at once, not after expiry */
    }
    /* redelivered now (delivery count 2) */
    for (int i = 0; i < N; i++) {
        pl_message *again = NULL;
        CHECK_EQ(pl_peek_lock(&again, client, "closing", 0), PL_OK);
        if (again) {
            CHECK_EQ(pl_message_delivery_count(again), 2);
            CHECK_EQ(pl_complete(client, again), PL_OK);
        }
        pl_message_free(again);
    }
    REQUIRE(admin("DELETE", "/$admin/faults", NULL, NULL) == 200);
    pl_renewer_free(r);
    for (int i = 0; i < N; i++) pl_message_free(m[i]);

    /* close without unlock while a renew is in flight, then free at once */
    make_queue("closing2", 5);
    add_fault("{\"operation\":\"renew\",\"entity\":\"closing2\",\"delay_ms\":3000}");
    REQUIRE(pl_renewer_new(&r, client, NULL) == PL_OK);
    pl_message *x = send_and_lock("closing2", "x");
    before = counter("requests.renew");
    REQUIRE(pl_renewer_add(r, x, 0) == PL_OK);
    deadline = pl_now_mono_ms() + 5000;
    while (counter("requests.renew") == before && pl_now_mono_ms() < deadline) {
        if (pl_renewer_wait_event(&ev, r, 20) == PL_OK) pl_event_free(ev);
    }
    pl_renewer_free(r);
    CHECK_EQ(pl_message_lock_state(x), PL_LOCK_HELD); /* still the handler's to settle */
    CHECK_EQ(pl_unlock(client, x), PL_OK);
    pl_message_free(x);
    REQUIRE(admin("DELETE", "/$admin/faults", NULL, NULL) == 200);
}

/* ---- phase 3b: the connection pool grows under load ----------------------- */

static void phase_grow(void)
{
    enum { N = 12 };
    make_queue("grow", 5);
    /* every renewal takes a second: with 4 connections, 12 locks due together
     * cannot all be renewed on time, so the automatic pool grows */
    add_fault("{\"operation\":\"renew\",\"entity\":\"grow\",\"delay_ms\":1000}");
    pl_renewer *r = NULL;
    REQUIRE(pl_renewer_new(&r, client, NULL) == PL_OK); /* max_connections 0: automatic */
    CHECK_EQ(pl_renewer_connections(r), 4);
    pl_message *m[N];
    for (int i = 0; i < N; i++) {
        m[i] = send_and_lock("grow", "g");
        REQUIRE(pl_renewer_add(r, m[i], 0) == PL_OK);
    }
    int renewed = 0, lost = 0;
    int64_t end = pl_now_mono_ms() + 5500;
    while (pl_now_mono_ms() < end) {
        pl_event *ev = NULL;
        if (pl_renewer_wait_event(&ev, r, (long)(end - pl_now_mono_ms())) == PL_OK) {
            renewed += pl_event_type(ev) == PL_EVENT_RENEWED;
            lost += pl_event_type(ev) == PL_EVENT_LOST;
            pl_event_free(ev);
        }
    }
    int conns = pl_renewer_connections(r);
    fprintf(stderr, "phase grow: %d connections, %d renewals, %d lost\n", conns, renewed, lost);
    CHECK(conns > 4 && conns <= 32);
    CHECK(renewed >= N);
    CHECK_EQ(lost, 0);
    for (int i = 0; i < N; i++) CHECK_EQ(pl_message_lock_state(m[i]), PL_LOCK_HELD);
    REQUIRE(admin("DELETE", "/$admin/faults", NULL, NULL) == 200);
    CHECK_EQ(pl_renewer_close(r, 1), PL_OK);
    for (int i = 0; i < N; i++) {
        CHECK_EQ(pl_message_lock_state(m[i]), PL_LOCK_SETTLED);
        pl_message_free(m[i]);
    }
    pl_renewer_free(r);
}

/* ---- phase 4: errors ------------------------------------------------------- */

static void phase_errors(void)
{
    pl_renewer *r = NULL;
    pl_renewer_options o = PL_RENEWER_OPTIONS_INIT;
    o.max_connections = -1;
    CHECK_EQ(pl_renewer_new(&r, client, &o), PL_EINVAL);
    CHECK(strstr(pl_error_last()->message, "max_connections") != NULL);
    CHECK(r == NULL);
    o = (pl_renewer_options)PL_RENEWER_OPTIONS_INIT;
    o.version = 99;
    CHECK_EQ(pl_renewer_new(&r, client, &o), PL_EINVAL);
    CHECK_EQ(pl_renewer_new(&r, NULL, NULL), PL_EINVAL);
    CHECK(strstr(pl_error_last()->message, "client") != NULL);
    o = (pl_renewer_options)PL_RENEWER_OPTIONS_INIT;
    o.default_max_renew_ms = (long)(PL_MAX_RENEW_MS + 1);
    CHECK_EQ(pl_renewer_new(&r, client, &o), PL_EINVAL);
    CHECK(strstr(pl_error_last()->message, "default_max_renew_ms") != NULL);

    /* no renewer yet: the same fields, nothing counted (what the bindings show) */
    pl_renewer_stats none;
    memset(&none, 0xff, sizeof none);
    CHECK_EQ(pl_renewer_stats_get(NULL, &none), PL_OK);
    CHECK_EQ(none.held, 0);
    CHECK_EQ(none.threads, 0);
    CHECK_EQ(none.slack_buckets[5], 0);
    CHECK(none.rtt_p99_ms == 0.0);
    CHECK_EQ(pl_renewer_stats_get(NULL, NULL), PL_EINVAL);

    REQUIRE(pl_renewer_new(&r, client, NULL) == PL_OK);
    CHECK_EQ(pl_renewer_add(r, NULL, 0), PL_EINVAL);
    make_queue("errs", 5);
    pl_message *m = send_and_lock("errs", "e");
    CHECK_EQ(pl_renewer_add(r, m, -5), PL_EINVAL);
    CHECK(strstr(pl_error_last()->message, "max_renew_ms") != NULL);
    CHECK_EQ(pl_renewer_add(r, m, (long)(PL_MAX_RENEW_MS + 1)), PL_EINVAL); /* now + cap stays in range */
    CHECK(strstr(pl_error_last()->message, "max_renew_ms") != NULL);
    CHECK_EQ(pl_complete(client, m), PL_OK);
    CHECK_EQ(pl_renewer_add(r, m, 0), PL_ESTATE); /* settled: nothing to renew */
    CHECK_STR(pl_error_last()->message, "message: its lock is not held (state 3)");
    /* a held message whose lock duration was never learned: refused, named as the
     * bindings' users call it */
    pl_message *nodur = pl_message_alloc();
    REQUIRE(nodur);
    pl_message_set_state(nodur, PL_LOCK_HELD);
    CHECK_EQ(pl_renewer_add(r, nodur, 0), PL_EINVAL);
    CHECK_STR(pl_error_last()->message, "message: its lock duration is unknown");
    pl_message_free(nodur);
    CHECK_EQ(pl_renewer_remove(r, m), PL_OK); /* never added: fine */
    pl_event *ev = (pl_event *)1;
    CHECK_EQ(pl_renewer_next_event(&ev, r), PL_EMPTY);
    CHECK(ev == NULL);
    CHECK_EQ(pl_renewer_wait_event(&ev, r, -1), PL_EINVAL);
    /* nothing to report: a timed wait gives PL_EMPTY, and not before its
     * timeout has passed on the monotonic clock (the clock it waits on) */
    int64_t t0 = pl_now_mono_ms();
    CHECK_EQ(pl_renewer_wait_event(&ev, r, 120), PL_EMPTY);
    CHECK(ev == NULL);
    CHECK(pl_now_mono_ms() - t0 >= 120);
    CHECK(pl_renewer_bytes_per_lock() <= 512);
    pl_renewer_free(r);
    pl_renewer_free(NULL);
    pl_event_free(NULL);
    pl_message_free(m);
}

/* ---- phase 6 ---------------------------------------------------------------- */

static void phase_shared(void)
{
    /* The renewer's own client points where nothing listens: renewals that went
     * through it would fail and the lock would be lost. */
    pl_client *dead = NULL;
    REQUIRE(pl_client_new_from_connection_string(
                &dead, "Endpoint=sb://127.0.0.1:9;SharedAccessKeyName=k;SharedAccessKey=v;"
                       "UseDevelopmentEmulator=true") == PL_OK);
    pl_renewer *r = NULL;
    REQUIRE(pl_renewer_new(&r, dead, NULL) == PL_OK);
    make_queue("shared", 5);
    pl_client_stats before;
    REQUIRE(pl_client_stats_get(client, &before) == PL_OK);
    pl_message *m = send_and_lock("shared", "s");
    REQUIRE(pl_renewer_add(r, m, 60000) == PL_OK);
    pl_renewer_stats st;
    int64_t deadline = pl_now_mono_ms() + 15000;
    do {
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL); /* polling for the renewer's progress, not standing in for it */
        REQUIRE(pl_renewer_stats_get(r, &st) == PL_OK);
    } while (st.renewals < 2 && st.lost == 0 && pl_now_mono_ms() < deadline);
    CHECK(st.renewals >= 2);
    CHECK_EQ((long)st.lost, 0L);
    CHECK_EQ(pl_message_lock_state(m), PL_LOCK_HELD);
    pl_client_stats after, dead_st;
    REQUIRE(pl_client_stats_get(client, &after) == PL_OK);
    REQUIRE(pl_client_stats_get(dead, &dead_st) == PL_OK);
    CHECK(after.renewed - before.renewed >= 2);
    CHECK_EQ((long)dead_st.renewed, 0L);
    CHECK_EQ((long)dead_st.requests, 0L);
    CHECK_EQ(pl_renewer_remove(r, m), PL_OK);
    CHECK_EQ(pl_complete(client, m), PL_OK);
    CHECK_EQ(completed_count("shared"), 1);
    pl_renewer_free(r);
    pl_client_free(dead);
    pl_message_free(m);
}

int main(int argc, char **argv)
{
    const char *cs = getenv("PEEKLOCK_TEST_CONNECTION_STRING");
    if (!cs) cs = getenv("PEEKLOCK_CONNECTION_STRING");
    if (!cs && argc > 1) cs = argv[1];
    if (!cs) {
        fprintf(stderr, "test_renewer: no emulator connection string (run under with_emulator.py)\n");
        return 1;
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    REQUIRE(pl_client_new_from_connection_string(&client, cs) == PL_OK);
    snprintf(base, sizeof(base), "%s", pl_client_endpoint(client));

    const char *only = getenv("TEST_RENEWER_ONLY");
    if (!only || strstr(only, "errors")) phase_errors();
    if (!only || strstr(only, "many")) phase_many();
    if (!only || strstr(only, "race")) phase_race();
    if (!only || strstr(only, "slow")) phase_slow();
    if (!only || strstr(only, "close")) phase_close();
    if (!only || strstr(only, "grow")) phase_grow();
    if (!only || strstr(only, "shared")) phase_shared();

    pl_client_free(client);
    curl_global_cleanup();
    return pl_test_done("test_renewer");
}
