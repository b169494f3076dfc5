/*
 * renewer.c — one background thread keeps many message locks alive.
 *
 * One thread, one curl multi handle, a bounded pool of easy handles (one per
 * keep-alive connection, CURLMOPT_MAX_HOST_CONNECTIONS / MAX_TOTAL_CONNECTIONS),
 * and the deadline heap of schedule.c deciding what is due. No thread, timer or
 * easy handle per lock.
 *
 * Locking: one mutex (mu) guards everything except the multi handle's transfers
 * themselves. The thread holds mu while it takes due entries off the heap and
 * while it processes finished transfers, and releases it while it waits in
 * curl_multi_poll and runs curl_multi_perform. API threads take mu, change the
 * heap/table, and wake the thread with curl_multi_wakeup.
 *
 * Fence against settlement (message_int.h): a renew is only started while the
 * message state is PL_LOCK_HELD (checked on this thread just before the transfer
 * is added). A renew that was already in flight when a complete/unlock started
 * can come back 404; the state then is SETTLING/SETTLED, pl_message_mark_lost only
 * moves HELD -> LOST, and the entry is dropped silently: never a false "lost".
 */
#include "renewer_int.h"

#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "client_int.h"
#include "error_int.h"
#include "message_int.h"
#include "outcome_int.h"
#include "schedule_int.h"
#include "wire_int.h"

typedef struct rn_slot rn_slot;

/* Working ahead: with a connection idle, a renewal may go out up to a fraction of
 * its lock duration (at most RN_MAX_AHEAD_MS) before it is due, so that bursts of
 * locks taken together are worked off ahead of their due times instead of late.
 * Normally that fraction is small (RN_BASE_AHEAD: few extra renewals); for
 * RN_PRESSURE_MS after a renewal was due while every connection was busy (a
 * burst) it is RN_AHEAD. */
#define RN_BASE_AHEAD   0.02
#define RN_AHEAD        0.25
#define RN_MAX_AHEAD_MS 15000
#define RN_PRESSURE_MS  2000
/* max_connections 0: start with RN_CONNECTIONS_START connections and add one,
 * at most every RN_GROW_EVERY_MS, while renewals are due with every connection
 * busy, up to RN_CONNECTIONS_AUTO_MAX. */
#define RN_CONNECTIONS_START    4
#define RN_CONNECTIONS_AUTO_MAX 32
#define RN_GROW_EVERY_MS        50

/* Per held lock. Kept small: the target is <= 512 bytes of state per lock. */
typedef struct rn_entry {
    pl_sched_entry se; /* must stay first: the heap hands back &se */
    pl_message *m;     /* holds a reference */
    rn_slot *inflight; /* the transfer renewing it now, or NULL */
    int last_code;     /* last failed attempt (for the lost reason) */
    int16_t last_http;
    uint8_t removed; /* removed while in flight: free when the transfer ends */
} rn_entry;

/* One easy handle of the pool and the transfer it carries. */
struct rn_slot {
    CURL *easy;
    rn_entry *e;   /* renew: the entry */
    pl_message *m; /* the message (renew: borrowed from e; unlock: owned ref) */
    int op;        /* PL_SETTLE_RENEW or PL_SETTLE_UNLOCK */
    pl_request *req;
    pl_response *resp;
    struct curl_slist *hdrs;
    int64_t sent_ms; /* pl_now_mono_ms() when handed to curl */
    double sent_precise_ms;
    rn_slot *next_free;
};

struct pl_event {
    int type;
    int code;
    int http_status;
    int will_retry;   /* RENEW_FAILED */
    int64_t slack_ms; /* RENEWED */
    pl_message *m;    /* holds a reference */
    pl_event *next;
    char reason[128];
};

struct pl_renewer {
    pl_client *client;
    pthread_mutex_t mu;
    pthread_cond_t ev_cond;
    pthread_mutex_t close_mu; /* serialises pl_renewer_close */
    pthread_t thread;
    int closing; /* close requested (under mu) */
    int unlock_on_close;
    int closed; /* thread joined (under close_mu, read under mu) */

    CURLM *multi;
    rn_slot *slots;
    int nslots;          /* slots allocated (the most connections allowed) */
    int nactive;         /* slots in use so far (easy handle created) */
    int64_t grown_at_ms; /* when the pool last grew */
    rn_slot *free_slots;
    int busy;

    long request_timeout_ms;
    long default_max_renew_ms;
    int64_t pressure_until_ms; /* work ahead until then (a burst is being worked off) */

    pl_sched sched;
    rn_entry **table; /* open addressing keyed by message pointer */
    size_t tcap, tcount;

    pl_event *ev_head, *ev_tail;
    size_t ev_queued_renewed;
    uint64_t ev_dropped;

    uint64_t renewals, failures, lost, cap_reached;
    uint64_t slack[PL_SLACK_BUCKETS];
    pl_hist lateness;
};

/* ------------------------------------------------------------------------ */
/* Time                                                                       */
/* ------------------------------------------------------------------------ */

/* Same clock as pl_now_mono_ms() (CLOCK_MONOTONIC), with sub-ms resolution. */
static double now_precise_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

/* ------------------------------------------------------------------------ */
/* Message -> entry table (linear probing, backward-shift deletion)           */
/* ------------------------------------------------------------------------ */

static size_t tab_hash(const pl_message *m, size_t cap)
{
    uint64_t x = (uint64_t)(uintptr_t)m;
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    return (size_t)x & (cap - 1);
}

static rn_entry *tab_find(const pl_renewer *r, const pl_message *m)
{
    if (!r->tcap) return NULL;
    for (size_t i = tab_hash(m, r->tcap);; i = (i + 1) & (r->tcap - 1)) {
        rn_entry *e = r->table[i];
        if (!e) return NULL;
        if (e->m == m) return e;
    }
}

static void tab_put_nogrow(rn_entry **table, size_t cap, rn_entry *e)
{
    size_t i = tab_hash(e->m, cap);
    while (table[i]) i = (i + 1) & (cap - 1);
    table[i] = e;
}

static int tab_insert(pl_renewer *r, rn_entry *e)
{
    if ((r->tcount + 1) * 2 > r->tcap) {
        size_t ncap = r->tcap ? r->tcap * 2 : 64;
        rn_entry **n = calloc(ncap, sizeof(*n));
        if (!n) return pl_error_nomem();
        for (size_t i = 0; i < r->tcap; i++)
            if (r->table[i]) tab_put_nogrow(n, ncap, r->table[i]);
        free(r->table);
        r->table = n;
        r->tcap = ncap;
    }
    tab_put_nogrow(r->table, r->tcap, e);
    r->tcount++;
    return PL_OK;
}

static void tab_delete(pl_renewer *r, rn_entry *e)
{
    if (!r->tcap) return;
    size_t mask = r->tcap - 1, i = tab_hash(e->m, r->tcap);
    while (r->table[i] && r->table[i] != e) i = (i + 1) & mask;
    if (!r->table[i]) return;
    r->table[i] = NULL;
    r->tcount--;
    /* shift back the entries of the cluster that follows */
    for (size_t j = (i + 1) & mask; r->table[j]; j = (j + 1) & mask) {
        size_t home = tab_hash(r->table[j]->m, r->tcap);
        /* can table[j] move to the hole at i? yes unless home lies in (i, j] */
        int in_range = (i <= j) ? (home > i && home <= j) : (home > i || home <= j);
        if (!in_range) {
            r->table[i] = r->table[j];
            r->table[j] = NULL;
            i = j;
        }
    }
}

/* ------------------------------------------------------------------------ */
/* Events                                                                     */
/* ------------------------------------------------------------------------ */

/* RENEWED and RENEW_FAILED: dropped beyond PL_RENEWER_MAX_QUEUED_RENEWED queued. */
static int routine_event(int type)
{
    return type == PL_EVENT_RENEWED || type == PL_EVENT_RENEW_FAILED;
}

/* Under mu. Never fails loudly: on OOM the event is counted as dropped (the
 * message state itself always tells the truth). Returns the event queued (its
 * other fields may be set under mu), or NULL. */
static pl_event *push_event(pl_renewer *r, int type, pl_message *m, int code, int http, const char *reason)
{
    if (routine_event(type) && r->ev_queued_renewed >= PL_RENEWER_MAX_QUEUED_RENEWED) {
        r->ev_dropped++;
        return NULL;
    }
    pl_event *ev = calloc(1, sizeof(*ev));
    if (!ev) {
        r->ev_dropped++;
        return NULL;
    }
    ev->type = type;
    ev->code = code;
    ev->http_status = http;
    ev->m = m;
    pl_message_ref(m);
    snprintf(ev->reason, sizeof(ev->reason), "%s", reason);
    int was_empty = r->ev_head == NULL;
    if (r->ev_tail)
        r->ev_tail->next = ev;
    else
        r->ev_head = ev;
    r->ev_tail = ev;
    if (routine_event(type)) r->ev_queued_renewed++;
    /* Waiters only wait on an empty queue: wake them on the first event only
     * (a waiter that wakes drains the rest without waiting). */
    if (was_empty) pthread_cond_broadcast(&r->ev_cond);
    return ev;
}

/* The client a message's renewals go through and are counted in: the one it was
 * received through (whose endpoint, credentials and TLS settings it needs), so one
 * renewer can serve the messages of any number of clients. */
static pl_client *msg_client(const pl_renewer *r, const pl_message *m)
{
    pl_client *owner = m ? pl_message_client(m) : NULL;
    return owner ? owner : r->client;
}

/* A failed renew attempt: counted (the renewer's and the client's stats) and told
 * as a RENEW_FAILED event, saying whether another attempt follows. */
static void failure_event(pl_renewer *r, pl_message *m, int code, int http, int will_retry)
{
    char reason[128];
    if (http)
        snprintf(reason, sizeof(reason), "renewal failed: HTTP %d (%s)%s", http, pl_strerror(code),
                 will_retry ? "; retrying" : "");
    else
        snprintf(reason, sizeof(reason), "renewal failed: %s%s", pl_strerror(code),
                 will_retry ? "; retrying" : "");
    r->failures++;
    pl_client_stat_add(msg_client(r, m), PL_STAT_RENEW_FAILURES, 1);
    pl_event *ev = push_event(r, PL_EVENT_RENEW_FAILED, m, code, http, reason);
    if (ev) ev->will_retry = will_retry;
}

/* counted: 0 when whoever made the message lost already counted it in the
 * client's stats. */
static void lost_event(pl_renewer *r, pl_message *m, int code, int http, const char *why, int counted)
{
    char reason[128];
    if (http)
        snprintf(reason, sizeof(reason), "lock lost: %s (HTTP %d)", why, http);
    else
        snprintf(reason, sizeof(reason), "lock lost: %s (%s)", why, pl_strerror(code));
    r->lost++;
    if (!counted) pl_client_stat_add(msg_client(r, m), PL_STAT_LOST, 1);
    push_event(r, PL_EVENT_LOST, m, code, http, reason);
}

/* ------------------------------------------------------------------------ */
/* Entries and transfers                                                      */
/* ------------------------------------------------------------------------ */

/* Forgets an entry that is neither queued nor in flight (under mu). */
static void drop_entry(pl_renewer *r, rn_entry *e)
{
    pl_sched_remove(&r->sched, &e->se);
    tab_delete(r, e);
    pl_message_free(e->m);
    free(e);
}

static void slot_release(pl_renewer *r, rn_slot *s)
{
    if (s->hdrs) curl_slist_free_all(s->hdrs);
    pl_request_free(s->req);
    pl_response_free(s->resp);
    if (s->op == PL_SETTLE_UNLOCK && s->m) pl_message_free(s->m);
    s->hdrs = NULL;
    s->req = NULL;
    s->resp = NULL;
    s->e = NULL;
    s->m = NULL;
    s->op = 0;
    s->next_free = r->free_slots;
    r->free_slots = s;
    r->busy--;
}

/* Starts a renew or unlock of m on a free slot. Returns PL_OK or a PL_E* code
 * (the slot is back on the free list then). */
static int start_transfer(pl_renewer *r, rn_entry *e, pl_message *m, int op)
{
    rn_slot *s = r->free_slots;
    if (!s) return pl_error_set(PL_EINTERNAL, 0, 1, "renewer: no free connection slot");
    r->free_slots = s->next_free;
    r->busy++;
    s->e = e;
    s->m = m;
    s->op = op;
    if (op == PL_SETTLE_UNLOCK) pl_message_ref(m);
    int rc = pl_client_settle_request(&s->req, msg_client(r, m), m, op);
    if (rc == PL_OK) {
        curl_easy_reset(s->easy);
        rc = pl_client_setup_easy(msg_client(r, m), s->easy, s->req, 0, &s->hdrs, &s->resp);
    }
    if (rc == PL_OK) {
        long timeout_ms = r->request_timeout_ms;
        if (op == PL_SETTLE_RENEW) {
            /* A renew answered after the lock's estimated expiry cannot keep it:
             * stop waiting then, so the lock is reported lost on time rather than
             * when a slow reply arrives, while another receiver may hold it. */
            int64_t left = pl_message_lock_expiry_mono_ms(m) - pl_now_mono_ms();
            if (left < timeout_ms) timeout_ms = left > 1 ? (long)left : 1;
        }
        curl_easy_setopt(s->easy, CURLOPT_TIMEOUT_MS, timeout_ms);
        curl_easy_setopt(s->easy, CURLOPT_PRIVATE, (void *)s);
        s->sent_precise_ms = now_precise_ms();
        s->sent_ms = pl_now_mono_ms();
        if (curl_multi_add_handle(r->multi, s->easy) != CURLM_OK)
            rc = pl_error_set(PL_EINTERNAL, 0, 1, "renewer: curl_multi_add_handle failed");
    }
    if (rc != PL_OK) {
        slot_release(r, s);
        return rc;
    }
    if (e) e->inflight = s;
    return PL_OK;
}

static void record_slack(pl_renewer *r, const rn_entry *e, int64_t now)
{
    double dur = (double)(e->se.lock_duration_ms > 0 ? e->se.lock_duration_ms : 1);
    double f = (double)(e->se.expiry_ms - now) / dur;
    int b = f < 0.01 ? 0 : f < 0.05 ? 1 : f < 0.10 ? 2 : f < 0.25 ? 3 : f < 0.50 ? 4 : 5;
    r->slack[b]++;
}

/* A renew attempt failed with a transient error (or could not start). */
static void renew_failed(pl_renewer *r, rn_entry *e, int code, int http, long retry_after_ms, int64_t now)
{
    e->last_code = code;
    e->last_http = (int16_t)http;
    int retry = pl_sched_failed(&r->sched, &e->se, now, retry_after_ms) == PL_SCHED_RETRY;
    failure_event(r, e->m, code, http, retry);
    if (retry) return;
    /* No lock time left to try again in. */
    if (pl_message_mark_lost(e->m, code, 0)) lost_event(r, e->m, code, http, PL_REASON_GAVE_UP, 0);
    drop_entry(r, e);
}

/* Processes a finished renew (under mu). */
static void finish_renew(pl_renewer *r, rn_slot *s, CURLcode res)
{
    rn_entry *e = s->e;
    pl_message *m = s->m;
    int64_t now = pl_now_mono_ms();
    double rtt = now_precise_ms() - s->sent_precise_ms;
    int rc, http = 0;
    long retry_after = 0;
    int answered = pl_client_transfer_io(res, s->resp) == PL_IO_ANSWERED;
    pl_sched_note_answer(&r->sched, rtt, answered, res == CURLE_OPERATION_TIMEDOUT);
    if (answered) {
        http = s->resp->status;
        /* Interpreted here rather than by pl_response_result so that a 404 never
         * touches a message whose settle has started (HELD -> LOST only, below). */
        if (http >= 200 && http <= 299) {
            rc = PL_OK;
            if (pl_message_state(m) == PL_LOCK_HELD) pl_message_extend(m, s->sent_ms);
        } else {
            rc = pl_wire_status_error(s->req, s->resp);
        }
        retry_after = pl_retry_after_ms(pl_response_header(s->resp, "Retry-After"));
        if (retry_after < 0) retry_after = 0; /* none: the schedule's backoff */
        if (rc == PL_OK) pl_client_record_renew_rtt(msg_client(r, m), rtt);
    } else {
        rc = pl_client_curl_error_easy(res, s->resp, s->easy, NULL);
        if (rc == PL_OK) /* cannot happen; never take a failed transfer for success */
            rc = PL_ECONNECT;
    }
    e->inflight = NULL;
    if (e->removed) { /* pl_renewer_remove ran meanwhile; already out of the table */
        pl_message_free(e->m);
        free(e);
        return;
    }
    int st = pl_message_state(m);
    if (st == PL_LOCK_SETTLING || st == PL_LOCK_SETTLED || st == PL_LOCK_NONE) {
        drop_entry(r, e); /* settled meanwhile: whatever the renew said, nothing is lost */
        return;
    }
    if (st == PL_LOCK_LOST) { /* another thread (a foreground call) made it lost */
        int why = pl_message_lost_reason(m);
        lost_event(r, m, why ? why : rc, 0, "found lost by another operation", 1);
        drop_entry(r, e);
        return;
    }
    if (rc == PL_OK) {
        r->renewals++;
        pl_client_stat_add(msg_client(r, m), PL_STAT_RENEWED, 1);
        record_slack(r, e, now);
        pl_event *ev = push_event(r, PL_EVENT_RENEWED, m, 0, http, "renewed");
        if (ev) ev->slack_ms = e->se.expiry_ms - now; /* the estimate before this renewal */
        if (pl_sched_renewed(&r->sched, &e->se, now, pl_message_lock_expiry_mono_ms(m)) != 0)
            renew_failed(r, e, PL_ENOMEM, 0, 0, now);
        return;
    }
    if (rc == PL_ELOCKLOST || rc == PL_ENOTFOUND) {
        failure_event(r, m, rc, http, 0);
        if (pl_message_mark_lost(m, rc, 0))
            lost_event(r, m, rc, http,
                       rc == PL_ENOTFOUND ? "the entity no longer exists"
                                          : "the service no longer has this lock",
                       0);
        drop_entry(r, e);
        return;
    }
    if (rc == PL_ESTATE) { /* not held any more */
        drop_entry(r, e);
        return;
    }
    renew_failed(r, e, rc, http, retry_after, now);
}

/* Processes a finished unlock during close (under mu): one attempt, reported to
 * outcome.c, whose verdict the fence records (settled, lost, unknown, or held
 * again when the request never went out). */
static void finish_unlock(pl_renewer *r, rn_slot *s, CURLcode res)
{
    pl_message *m = s->m;
    int io = pl_client_transfer_io(res, s->resp);
    int rc = io == PL_IO_ANSWERED ? pl_response_result(NULL, msg_client(r, m), s->req, m, s->resp, s->sent_ms)
                                  : pl_client_curl_error(res, s->resp);
    if (io != PL_IO_ANSWERED && rc == PL_OK) rc = PL_ECONNECT;
    static const pl_policy once = {0, 0, 0};
    pl_call call;
    pl_call_init(&call, PL_OP_UNLOCK, s->req->entity, 1);
    pl_call_report(&call, &once, io, io == PL_IO_ANSWERED ? s->resp->status : 0, rc, -1, 0);
    pl_fence_leave(m, call.code);
}

/* Takes finished transfers off the multi handle (under mu). */
static void drain_done(pl_renewer *r)
{
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(r->multi, &left))) {
        if (msg->msg != CURLMSG_DONE) continue;
        CURL *easy = msg->easy_handle;
        CURLcode res = msg->data.result;
        char *priv = NULL;
        curl_easy_getinfo(easy, CURLINFO_PRIVATE, &priv);
        rn_slot *s = (rn_slot *)(void *)priv;
        curl_multi_remove_handle(r->multi, easy);
        if (!s) continue;
        pl_client_stat_add(msg_client(r, s->m), PL_STAT_REQUESTS, 1);
        if (res == CURLE_OK) {
            long status = 0, connects = -1;
            curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);
            curl_easy_getinfo(easy, CURLINFO_NUM_CONNECTS, &connects);
            if (s->resp) s->resp->status = (int)status;
            if (connects == 0) pl_client_stat_add(msg_client(r, s->m), PL_STAT_REUSED, 1);
        }
        if (s->op == PL_SETTLE_RENEW)
            finish_renew(r, s, res);
        else
            finish_unlock(r, s, res);
        slot_release(r, s);
    }
}

/* Starts every due renewal there is a free connection for (under mu). */
static void start_due(pl_renewer *r)
{
    int64_t now = pl_now_mono_ms();
    for (;;) {
        if (!r->free_slots) {
            if (pl_sched_next_due(&r->sched) > now) break;
            /* due, but no connection free */
            r->pressure_until_ms = now + RN_PRESSURE_MS;
            if (r->nactive < r->nslots && now - r->grown_at_ms >= RN_GROW_EVERY_MS) {
                rn_slot *ns = &r->slots[r->nactive];
                ns->easy = curl_easy_init();
                if (!ns->easy) break;
                r->nactive++;
                r->grown_at_ms = now;
                ns->next_free = r->free_slots;
                r->free_slots = ns;
                continue;
            }
            break;
        }
        pl_sched_entry *se;
        double ahead = now < r->pressure_until_ms ? RN_AHEAD : RN_BASE_AHEAD;
        int act = pl_sched_pop_ahead(&r->sched, now, ahead, RN_MAX_AHEAD_MS, &se);
        if (act == PL_SCHED_NONE) break;
        rn_entry *e = (rn_entry *)(void *)se;
        int st = pl_message_state(e->m);
        if (st != PL_LOCK_HELD) { /* settling, settled or lost: renewal is over */
            if (st == PL_LOCK_LOST) {
                int why = pl_message_lost_reason(e->m);
                lost_event(r, e->m, why ? why : PL_ELOCKLOST, 0, "found lost by another operation", 1);
            }
            drop_entry(r, e);
            continue;
        }
        if (act == PL_SCHED_CAP) {
            r->cap_reached++;
            push_event(r, PL_EVENT_CAP_REACHED, e->m, 0, 0,
                       "maximum renewal duration reached; renewal stopped");
            drop_entry(r, e);
            continue;
        }
        /* A foreground renew may have moved the expiry on: reschedule instead. */
        int64_t mexp = pl_message_lock_expiry_mono_ms(e->m);
        if (mexp > e->se.expiry_ms && e->se.failures == 0) {
            if (pl_sched_renewed(&r->sched, &e->se, now, mexp) != 0) renew_failed(r, e, PL_ENOMEM, 0, 0, now);
            continue;
        }
        double lateness = now_precise_ms() - (double)e->se.due_ms;
        int rc = start_transfer(r, e, e->m, PL_SETTLE_RENEW);
        if (rc != PL_OK) {
            renew_failed(r, e, rc, 0, 0, now);
            continue;
        }
        pl_hist_record(&r->lateness, lateness > 0 ? lateness : 0);
    }
}

/* Stops every renewal in flight (under mu; used at close). */
static void abort_inflight(pl_renewer *r)
{
    for (int i = 0; i < r->nslots; i++) {
        rn_slot *s = &r->slots[i];
        if (!s->op) continue;
        curl_multi_remove_handle(r->multi, s->easy);
        if (s->op == PL_SETTLE_UNLOCK) {
            /* Cut off: unknown once the request went out, else still ours. */
            if (s->resp && pl_collector_of(s->resp)->sends > 0)
                pl_fence_unknown(s->m);
            else
                pl_message_cas_state(s->m, PL_LOCK_SETTLING, PL_LOCK_HELD);
        }
        rn_entry *e = s->e;
        if (e) {
            e->inflight = NULL;
            if (e->removed) {
                pl_message_free(e->m);
                free(e);
            }
        }
        slot_release(r, s);
    }
}

static void run_transfers_once(pl_renewer *r, long timeout_ms)
{
    int running = 0;
    pthread_mutex_unlock(&r->mu);
    curl_multi_poll(r->multi, NULL, 0, (int)timeout_ms, NULL);
    curl_multi_perform(r->multi, &running);
    pthread_mutex_lock(&r->mu);
    drain_done(r);
}

/* Close with unlock: every lock still held is unlocked (abandoned) so the
 * message is redelivered at once (under mu). */
static void unlock_all(pl_renewer *r)
{
    size_t n = 0, next = 0;
    pl_message **todo = malloc((r->tcount ? r->tcount : 1) * sizeof(*todo));
    if (!todo) return;
    for (size_t i = 0; i < r->tcap; i++)
        if (r->table[i]) {
            todo[n] = r->table[i]->m;
            pl_message_ref(todo[n++]); /* a concurrent remove must not free it */
        }
    double deadline = now_precise_ms() + (double)r->request_timeout_ms * 3;
    while ((next < n || r->busy) && now_precise_ms() < deadline) {
        while (next < n && r->free_slots) {
            pl_message *m = todo[next++];
            if (!pl_message_cas_state(m, PL_LOCK_HELD, PL_LOCK_SETTLING))
                continue; /* being settled by its handler, or lost */
            /* Settled behind its handler's back: the reason says so to a later
             * settle, and to the bindings' with-blocks. */
            atomic_store(&m->lost_reason, PL_ECLOSED);
            if (start_transfer(r, NULL, m, PL_SETTLE_UNLOCK) != PL_OK)
                pl_message_cas_state(m, PL_LOCK_SETTLING, PL_LOCK_HELD);
        }
        run_transfers_once(r, 100);
    }
    abort_inflight(r);
    for (size_t i = 0; i < n; i++) pl_message_free(todo[i]);
    free(todo);
}

static void *renewer_main(void *arg)
{
    pl_renewer *r = arg;
    pthread_mutex_lock(&r->mu);
    while (!r->closing) {
        start_due(r);
        long timeout = 1000;
        if (r->free_slots) {
            int64_t now = pl_now_mono_ms();
            double ahead = now < r->pressure_until_ms ? RN_AHEAD : RN_BASE_AHEAD;
            int64_t due = pl_sched_next_wake(&r->sched, ahead, RN_MAX_AHEAD_MS);
            if (due != INT64_MAX) {
                int64_t wait = due - now;
                timeout = wait < 0 ? 0 : (wait < timeout ? (long)wait : timeout);
            }
        }
        run_transfers_once(r, timeout);
    }
    abort_inflight(r);
    if (r->unlock_on_close) unlock_all(r);
    /* forget every entry */
    for (size_t i = 0; i < r->tcap; i++) {
        rn_entry *e = r->table[i];
        if (e) {
            pl_message_free(e->m);
            free(e);
            r->table[i] = NULL;
        }
    }
    r->tcount = 0;
    pl_sched_config cfg = r->sched.cfg;
    pl_sched_destroy(&r->sched);
    pl_sched_init(&r->sched, &cfg);
    pthread_cond_broadcast(&r->ev_cond);
    pthread_mutex_unlock(&r->mu);
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* Public API                                                                 */
/* ------------------------------------------------------------------------ */

static void renewer_destroy(pl_renewer *r)
{
    if (r->slots) {
        for (int i = 0; i < r->nslots; i++)
            if (r->slots[i].easy) curl_easy_cleanup(r->slots[i].easy);
        free(r->slots);
    }
    if (r->multi) curl_multi_cleanup(r->multi);
    pl_event *ev = r->ev_head;
    while (ev) {
        pl_event *next = ev->next;
        pl_event_free(ev);
        ev = next;
    }
    free(r->table);
    pl_sched_destroy(&r->sched);
    pthread_mutex_destroy(&r->mu);
    pthread_mutex_destroy(&r->close_mu);
    pthread_cond_destroy(&r->ev_cond);
    if (r->client) pl_client_unref(r->client);
    free(r);
}

int pl_renewer_options_init(pl_renewer_options *opts, unsigned int version)
{
    if (!opts) return pl_error_inval("opts", "must not be NULL");
    if (version != PL_RENEWER_OPTIONS_VERSION)
        return pl_error_inval("version", "must be PL_RENEWER_OPTIONS_VERSION");
    const pl_renewer_options init = PL_RENEWER_OPTIONS_INIT;
    *opts = init;
    return PL_OK;
}

int pl_renewer_new(pl_renewer **out, pl_client *client, const pl_renewer_options *opts)
{
    if (!out) return pl_error_inval("out", "is NULL");
    *out = NULL;
    if (!client) return pl_error_inval("client", "is NULL");
    pl_renewer_options o = PL_RENEWER_OPTIONS_INIT;
    if (opts) {
        if (opts->version != PL_RENEWER_OPTIONS_VERSION)
            return pl_error_inval("opts.version", "unknown version (use PL_RENEWER_OPTIONS_INIT)");
        o = *opts;
    }
    if (o.max_connections < 0 || o.max_connections > 256)
        return pl_error_inval("max_connections", "must be between 0 (automatic) and 256");
    if (o.margin_floor_ms < 0) return pl_error_inval("margin_floor_ms", "must not be negative");
    if (o.jitter > 1.0) return pl_error_inval("jitter", "must be at most 1.0 (a fraction)");
    if (o.default_max_renew_ms < 0 || (int64_t)o.default_max_renew_ms > PL_MAX_RENEW_MS)
        return pl_error_inval("default_max_renew_ms", "must be 0 (default) to PL_MAX_RENEW_MS");
    if (o.request_timeout_ms < 0) return pl_error_inval("request_timeout_ms", "must not be negative");

    pl_renewer *r = calloc(1, sizeof(*r));
    if (!r) return pl_error_nomem();
    pthread_mutex_init(&r->mu, NULL);
    pthread_mutex_init(&r->close_mu, NULL);
    /* Timed waits on the monotonic clock: a wall-clock step (NTP, an operator
     * setting the date) neither cuts a pl_renewer_wait_event short nor stretches it. */
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&r->ev_cond, &ca);
    pthread_condattr_destroy(&ca);
    pl_client_ref(client);
    r->client = client;
    r->nslots = o.max_connections ? o.max_connections : RN_CONNECTIONS_AUTO_MAX;
    r->nactive = o.max_connections ? o.max_connections : RN_CONNECTIONS_START;
    r->request_timeout_ms = o.request_timeout_ms ? o.request_timeout_ms : 10000;
    r->default_max_renew_ms = o.default_max_renew_ms ? o.default_max_renew_ms : PL_DEFAULT_MAX_RENEW_MS;

    pl_sched_config sc;
    memset(&sc, 0, sizeof(sc));
    sc.margin_floor_ms = o.margin_floor_ms;
    sc.jitter = o.jitter;
    sc.first_jitter = -1.0; /* from jitter */
    sc.seed = (uint64_t)(uintptr_t)r ^ (uint64_t)(now_precise_ms() * 1000.0);
    pl_sched_init(&r->sched, &sc);
    pl_hist_reset(&r->lateness);

    r->multi = curl_multi_init();
    r->slots = calloc((size_t)r->nslots, sizeof(*r->slots));
    if (!r->multi || !r->slots) {
        renewer_destroy(r);
        return pl_error_nomem();
    }
    curl_multi_setopt(r->multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)r->nslots);
    curl_multi_setopt(r->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, (long)r->nslots);
    curl_multi_setopt(r->multi, CURLMOPT_MAXCONNECTS, (long)r->nslots);
    for (int i = r->nactive - 1; i >= 0; i--) {
        r->slots[i].easy = curl_easy_init();
        if (!r->slots[i].easy) {
            renewer_destroy(r);
            return pl_error_nomem();
        }
        r->slots[i].next_free = r->free_slots;
        r->free_slots = &r->slots[i];
    }
    r->busy = 0;
    int prc = pthread_create(&r->thread, NULL, renewer_main, r);
    if (prc != 0) {
        renewer_destroy(r);
        return pl_error_set(PL_ENOMEM, 0, 1, "renewer: cannot start its thread (%s)", strerror(prc));
    }
    pl_error_ok();
    *out = r;
    return PL_OK;
}

int pl_renewer_add(pl_renewer *r, pl_message *m, long max_renew_ms)
{
    if (!r) return pl_error_inval("r", "is NULL");
    if (!m) return pl_error_inval("m", "is NULL");
    if (max_renew_ms < 0 || (int64_t)max_renew_ms > PL_MAX_RENEW_MS)
        return pl_error_inval("max_renew_ms", "must be 0 (the renewer's default) to PL_MAX_RENEW_MS");
    int64_t now = pl_now_mono_ms();
    int64_t cap_ms = now + (max_renew_ms ? max_renew_ms : r->default_max_renew_ms);
    pthread_mutex_lock(&r->mu);
    int rc = PL_OK;
    if (r->closing) {
        rc = pl_error_set(PL_ECLOSED, 0, 0, "renewer is closed");
    } else if (pl_message_state(m) != PL_LOCK_HELD) {
        rc = pl_error_set(PL_ESTATE, 0, 0, "message: its lock is not held (state %d)", pl_message_state(m));
    } else if (pl_message_lock_duration_ms(m) <= 0) {
        rc = pl_error_set(PL_EINVAL, 0, 0, "message: its lock duration is unknown");
    } else {
        rn_entry *e = tab_find(r, m);
        if (e) { /* already renewed: the new handler start sets the cap */
            e->se.cap_ms = cap_ms;
            if (!e->inflight && e->se.heap_index != PL_SCHED_NOT_QUEUED &&
                pl_sched_renewed(&r->sched, &e->se, now, e->se.expiry_ms) != 0)
                rc = pl_error_nomem(); /* cannot happen: the heap does not grow here */
        } else {
            e = calloc(1, sizeof(*e));
            if (!e) {
                rc = pl_error_nomem();
            } else {
                e->m = m;
                rc = tab_insert(r, e);
                if (rc == PL_OK && pl_sched_add(&r->sched, &e->se, now, pl_message_lock_expiry_mono_ms(m),
                                                pl_message_lock_duration_ms(m), cap_ms) != 0) {
                    tab_delete(r, e);
                    rc = pl_error_nomem();
                }
                if (rc == PL_OK)
                    pl_message_ref(m);
                else
                    free(e);
            }
        }
    }
    pthread_mutex_unlock(&r->mu);
    if (rc == PL_OK) {
        curl_multi_wakeup(r->multi);
        pl_error_ok();
    }
    return rc;
}

int pl_renewer_remove(pl_renewer *r, pl_message *m)
{
    if (!r) return pl_error_inval("r", "is NULL");
    if (!m) return pl_error_inval("m", "is NULL");
    pthread_mutex_lock(&r->mu);
    rn_entry *e = tab_find(r, m);
    if (e) {
        tab_delete(r, e);
        if (e->inflight) {
            e->removed = 1; /* freed when its transfer ends */
        } else {
            pl_sched_remove(&r->sched, &e->se);
            pl_message_free(e->m);
            free(e);
        }
    }
    pthread_mutex_unlock(&r->mu);
    pl_error_ok();
    return PL_OK;
}

int pl_renewer_close(pl_renewer *r, int unlock_held)
{
    if (!r) return pl_error_inval("r", "is NULL");
    pthread_mutex_lock(&r->close_mu);
    if (!r->closed) {
        pthread_mutex_lock(&r->mu);
        r->closing = 1;
        r->unlock_on_close = unlock_held ? 1 : 0;
        pthread_mutex_unlock(&r->mu);
        curl_multi_wakeup(r->multi);
        pthread_join(r->thread, NULL);
        pthread_mutex_lock(&r->mu);
        r->closed = 1;
        pthread_cond_broadcast(&r->ev_cond);
        pthread_mutex_unlock(&r->mu);
    }
    pthread_mutex_unlock(&r->close_mu);
    pl_error_ok();
    return PL_OK;
}

void pl_renewer_free(pl_renewer *r)
{
    if (!r) return;
    pl_renewer_close(r, 0);
    renewer_destroy(r);
}

/* Under mu. */
static pl_event *pop_event(pl_renewer *r)
{
    pl_event *ev = r->ev_head;
    if (!ev) return NULL;
    r->ev_head = ev->next;
    if (!r->ev_head) r->ev_tail = NULL;
    ev->next = NULL;
    if (ev->type == PL_EVENT_RENEWED) r->ev_queued_renewed--;
    return ev;
}

int pl_renewer_next_event(pl_event **out, pl_renewer *r)
{
    if (!out) return pl_error_inval("out", "is NULL");
    *out = NULL;
    if (!r) return pl_error_inval("r", "is NULL");
    pthread_mutex_lock(&r->mu);
    *out = pop_event(r);
    pthread_mutex_unlock(&r->mu);
    pl_error_ok();
    return *out ? PL_OK : PL_EMPTY;
}

int pl_renewer_wait_event(pl_event **out, pl_renewer *r, long timeout_ms)
{
    if (!out) return pl_error_inval("out", "is NULL");
    *out = NULL;
    if (!r) return pl_error_inval("r", "is NULL");
    if (timeout_ms < 0) return pl_error_inval("timeout_ms", "must not be negative");
    struct timespec deadline;
    clock_gettime(CLOCK_MONOTONIC, &deadline); /* the clock ev_cond waits on */
    deadline.tv_sec += timeout_ms / 1000;
    deadline.tv_nsec += (timeout_ms % 1000) * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&r->mu);
    while (!(*out = pop_event(r)) && !r->closed) {
        if (pthread_cond_timedwait(&r->ev_cond, &r->mu, &deadline) == ETIMEDOUT) {
            *out = pop_event(r);
            break;
        }
    }
    pthread_mutex_unlock(&r->mu);
    pl_error_ok();
    return *out ? PL_OK : PL_EMPTY;
}

void pl_event_free(pl_event *e)
{
    if (!e) return;
    pl_message_free(e->m);
    free(e);
}

int pl_event_type(const pl_event *e)
{
    return e ? e->type : 0;
}
pl_message *pl_event_message(const pl_event *e)
{
    return e ? e->m : NULL;
}
int pl_event_code(const pl_event *e)
{
    return e && (e->type == PL_EVENT_LOST || e->type == PL_EVENT_RENEW_FAILED) ? e->code : 0;
}
int pl_event_will_retry(const pl_event *e)
{
    return e ? e->will_retry : 0;
}
int64_t pl_event_slack_ms(const pl_event *e)
{
    return e ? e->slack_ms : 0;
}
int pl_event_http_status(const pl_event *e)
{
    return e ? e->http_status : 0;
}
const char *pl_event_reason(const pl_event *e)
{
    return e ? e->reason : "";
}

size_t pl_renewer_bytes_per_lock(void)
{
    /* record + heap slot (capacity up to 2x) + table slot (capacity up to 4x) */
    return sizeof(rn_entry) + 2 * sizeof(pl_sched_entry *) + 4 * sizeof(rn_entry *);
}

int pl_renewer_connections(pl_renewer *r)
{
    pthread_mutex_lock(&r->mu);
    int n = r->nactive;
    pthread_mutex_unlock(&r->mu);
    return n;
}

uint64_t pl_renewer_dropped_events(pl_renewer *r)
{
    pthread_mutex_lock(&r->mu);
    uint64_t n = r->ev_dropped;
    pthread_mutex_unlock(&r->mu);
    return n;
}

int pl_renewer_stats_get(pl_renewer *r, pl_renewer_stats *out)
{
    if (!out) return pl_error_inval("out", "is NULL");
    memset(out, 0, sizeof(*out));
    if (!r) { /* no renewer yet: nothing counted */
        pl_error_ok();
        return PL_OK;
    }
    pthread_mutex_lock(&r->mu);
    out->held = r->tcount;
    out->renewals = r->renewals;
    out->failures = r->failures;
    out->lost = r->lost;
    out->cap_reached = r->cap_reached;
    out->threads = r->closed ? 0 : 1;
    out->lateness_p99_ms = pl_hist_quantile(&r->lateness, 0.99);
    out->rtt_p99_ms = pl_sched_rtt_p99_ms(&r->sched);
    memcpy(out->slack_buckets, r->slack, sizeof(r->slack));
    out->state_bytes =
        sizeof(*r) + (uint64_t)r->nslots * sizeof(rn_slot) + (uint64_t)r->tcap * sizeof(rn_entry *) +
        (uint64_t)r->sched.cap * sizeof(pl_sched_entry *) + (uint64_t)r->tcount * sizeof(rn_entry);
    pthread_mutex_unlock(&r->mu);
    pl_error_ok();
    return PL_OK;
}
