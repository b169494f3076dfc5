/*
 * aio.c — the asynchronous engine: one I/O thread per pl_aio drives one curl
 * multi handle carrying every operation in flight; completions are queued and
 * signalled on a file descriptor an event loop watches (peeklock.h, "Asynchronous
 * engine").
 *
 * Each attempt is reported to outcome.c (pl_call_report) exactly as client.c
 * does: the retry rules, "outcome unknown", orphaned peek-locks and the settle
 * fence are the same for both drivers; nothing here decides them.
 *
 * Locking: one mutex (mu) guards the operation list, the completion queue, the
 * counters and every op's cancel/state fields. The thread holds mu except while
 * it waits for its sockets and drives libcurl; the transfers' own buffers
 * (op->resp) are touched by the thread only. API threads take mu, change the
 * lists, and wake the thread (aio_wake).
 *
 * Driving libcurl: on Linux, libcurl's socket interface over one epoll set
 * (curl_multi_socket_action), so a wake-up costs work for the sockets that are
 * ready only, not for every transfer in flight; elsewhere curl_multi_poll and
 * curl_multi_perform. A kept-alive connection's socket stays in the epoll set
 * between two transfers (libcurl drops it from its watch list at the end of
 * each and asks for it again at the start of the next: two epoll_ctl calls per
 * request otherwise); it leaves the set when libcurl closes it (the close
 * callback) or when it reports an event while nobody watches it.
 *
 * The fd is readable exactly while completions are queued: it is signalled when
 * the queue goes from empty to not empty and cleared when pl_aio_next takes the
 * last one (both under mu).
 *
 * Background work (pl_aio_stats.background: pending ops nobody waits for, the
 * detached and the cancelled ones) is a counter kept where an op becomes one
 * (ops_link of a detached op, mark_cancel) and where it leaves the list
 * (ops_unlink). pl_aio_idle waits for it to reach 0: its waiters sit on their
 * own list (a->idle), are queued as completions by complete_op when the count
 * reaches 0, and their time limit is kept by the I/O thread with its others.
 */
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/epoll.h>
#include <sys/eventfd.h>
#define AIO_EPOLL 1
#endif

#include "client_int.h"
#include "error_int.h"
#include "message_int.h"
#include "outcome_int.h"
#include "wire_int.h"

#define AIO_ST_NEW      0 /* submitted, not yet started */
#define AIO_ST_WAIT     1 /* waiting out a retry delay (due_ms) */
#define AIO_ST_INFLIGHT 2 /* on the wire */
#define AIO_ST_DONE     3 /* queued as a completion */

#define AIO_CANCEL 1 /* pl_aio_cancel */
#define AIO_CLOSE  2 /* pl_aio_close */

/* Free easy handles kept for reuse (the multi handle keeps the connections). */
#define AIO_EASY_KEEP 64
/* Connections kept open at least (libcurl's default keeps four per transfer in
 * flight at the moment one ends, and so closes connections that are idle only
 * between two requests of a consumer); raised to the most transfers ever in
 * flight at once. */
#define AIO_MIN_CONNS 8
/* Longest wait for the sockets with nothing due (woken earlier by events). */
#define AIO_IDLE_WAIT_MS 3600000

struct pl_aio_done {
    uint64_t id;
    int kind;        /* PL_AIO_* (= PL_OP_*) */
    int state;       /* AIO_ST_* */
    int cancel;      /* 0, AIO_CANCEL or AIO_CLOSE */
    int cancel_seen; /* the thread has acted on it */
    int detached;    /* no completion: an unlock for a cancelled receive */
    int background;  /* counted in st.background (detached or cancelled, still pending) */
    pl_request *req;
    pl_message *m; /* settles: the message (a reference) */
    pl_call call;
    int64_t due_ms; /* a retry's start; an idle waiter's time limit (-1: none) */
    /* the transfer under way (thread only) */
    pl_easy *slot;
    CURL *easy; /* slot's handle */
    pl_response *resp;
    int64_t sent_ms;
    /* the result */
    int code, http_status, retryable;
    unsigned orphaned;
    pl_message *msg; /* received message, until taken */
    char text[256];
    pl_aio_done *prev, *next; /* pending list, or the completion queue (next only) */
};

struct pl_aio {
    pl_client *client;
    pthread_t thread;
    pthread_mutex_t mu;
    CURLM *multi;
    int rfd, wfd; /* eventfd: rfd == wfd */
    int closing;
    int joined;
    int kick; /* the thread added an op while walking the list */
    uint64_t next_id;
    uint64_t rng;
    pl_aio_done *ops; /* pending operations (doubly linked) */
    pl_aio_done *done_head, *done_tail;
    pl_aio_done *idle; /* pl_aio_idle waiters (singly linked), while background > 0 */
    pl_easy *easy_free[AIO_EASY_KEEP];
    int neasy;
    long maxconns;    /* CURLMOPT_MAXCONNECTS as set: the most transfers in flight at once */
    int wake_pending; /* wakefd written since the thread last looked at the list */
    pl_aio_stats st;
#ifdef AIO_EPOLL
    int epfd;              /* libcurl's sockets and wakefd */
    int wakefd;            /* eventfd: API threads wake the I/O thread */
    int64_t curl_timer_at; /* libcurl's timer (pl_now_mono_ms), -1: none */
    unsigned char *fds;    /* per socket: AIO_FD_* (I/O thread only) */
    int nfds;
#endif
};

#ifdef AIO_EPOLL
/* What the epoll set holds for a socket (a->fds[s]): nothing (0), or AIO_FD_SET
 * with the events registered, and AIO_FD_IDLE once libcurl stopped watching it. */
#define AIO_FD_IN   1u
#define AIO_FD_OUT  2u
#define AIO_FD_IDLE 4u
#define AIO_FD_SET  8u

static unsigned char *fd_slot(pl_aio *a, curl_socket_t s)
{
    if (s < 0) return NULL;
    if (s >= a->nfds) {
        int n = a->nfds ? a->nfds : 64;
        while (n <= s) n *= 2;
        unsigned char *t = realloc(a->fds, (size_t)n);
        if (!t) return NULL;
        memset(t + a->nfds, 0, (size_t)(n - a->nfds));
        a->fds = t;
        a->nfds = n;
    }
    return &a->fds[s];
}

static void fd_forget(pl_aio *a, curl_socket_t s)
{
    if (s >= 0 && s < a->nfds && (a->fds[s] & AIO_FD_SET)) {
        epoll_ctl(a->epfd, EPOLL_CTL_DEL, s, NULL);
        a->fds[s] = 0;
    }
}

/* libcurl's socket interface: which sockets to watch for what (I/O thread). */
static int on_socket(CURL *e, curl_socket_t s, int what, void *userp, void *socketp)
{
    (void)e;
    (void)socketp;
    pl_aio *a = userp;
    unsigned char *slot = fd_slot(a, s);
    if (what == CURL_POLL_REMOVE) {
        /* left in the set for the connection's next transfer (see the top) */
        if (slot && (*slot & AIO_FD_SET))
            *slot |= AIO_FD_IDLE;
        else if (!slot)
            epoll_ctl(a->epfd, EPOLL_CTL_DEL, s, NULL);
        return 0;
    }
    unsigned want = ((what & CURL_POLL_IN) ? AIO_FD_IN : 0u) | ((what & CURL_POLL_OUT) ? AIO_FD_OUT : 0u);
    if (slot && *slot == (AIO_FD_SET | want)) return 0;
    if (slot && *slot == (AIO_FD_SET | AIO_FD_IDLE | want)) {
        *slot &= (unsigned char)~AIO_FD_IDLE; /* watched again, as it is registered */
        return 0;
    }
    struct epoll_event ev;
    memset(&ev, 0, sizeof ev);
    ev.data.fd = s;
    ev.events = ((want & AIO_FD_IN) ? EPOLLIN : 0u) | ((want & AIO_FD_OUT) ? EPOLLOUT : 0u);
    int op = slot && (*slot & AIO_FD_SET) ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
    int rc = epoll_ctl(a->epfd, op, s, &ev);
    if (rc != 0 && op == EPOLL_CTL_MOD && errno == ENOENT) rc = epoll_ctl(a->epfd, EPOLL_CTL_ADD, s, &ev);
    if (rc != 0 && op == EPOLL_CTL_ADD && errno == EEXIST) rc = epoll_ctl(a->epfd, EPOLL_CTL_MOD, s, &ev);
    if (slot) *slot = rc == 0 ? (unsigned char)(AIO_FD_SET | want) : 0;
    return 0;
}

/* libcurl closes a connection's socket: out of the epoll set first (a socket kept
 * there while idle would otherwise stay registered if a forked child holds it). */
static int on_close_socket(void *userp, curl_socket_t s)
{
    fd_forget(userp, s);
    return close(s);
}

static int on_timer(CURLM *m, long timeout_ms, void *userp)
{
    (void)m;
    pl_aio *a = userp;
    a->curl_timer_at = timeout_ms < 0 ? -1 : pl_now_mono_ms() + timeout_ms;
    return 0;
}
#endif

/* Wakes the I/O thread (any thread). */
static void aio_wake(pl_aio *a)
{
#ifdef AIO_EPOLL
    uint64_t one = 1;
    ssize_t n = write(a->wakefd, &one, sizeof one);
    (void)n; /* a full counter is readable already */
#else
    curl_multi_wakeup(a->multi);
#endif
}

/* Waits up to wait_ms for the sockets (or a wake-up) and lets libcurl move the
 * transfers that are ready. I/O thread, without mu. */
static void drive(pl_aio *a, long wait_ms)
{
    int running = 0;
#ifdef AIO_EPOLL
    if (a->curl_timer_at >= 0) {
        int64_t t = a->curl_timer_at - pl_now_mono_ms();
        if (t < wait_ms) wait_ms = t < 0 ? 0 : (long)t;
    }
    struct epoll_event evs[64];
    int n = epoll_wait(a->epfd, evs, 64, (int)wait_ms);
    for (int i = 0; i < n; i++) {
        int fd = evs[i].data.fd;
        if (fd == a->wakefd) {
            uint64_t v;
            ssize_t r = read(a->wakefd, &v, sizeof v);
            (void)r;
            continue;
        }
        if (fd < a->nfds && (a->fds[fd] & AIO_FD_IDLE)) { /* e.g. the server closed a kept connection */
            fd_forget(a, fd);
            continue;
        }
        int mask = ((evs[i].events & (EPOLLIN | EPOLLHUP)) ? CURL_CSELECT_IN : 0) |
                   ((evs[i].events & EPOLLOUT) ? CURL_CSELECT_OUT : 0) |
                   ((evs[i].events & EPOLLERR) ? CURL_CSELECT_ERR : 0);
        curl_multi_socket_action(a->multi, fd, mask, &running);
    }
    if (a->curl_timer_at >= 0 && pl_now_mono_ms() >= a->curl_timer_at) {
        a->curl_timer_at = -1;
        curl_multi_socket_action(a->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    }
#else
    curl_multi_poll(a->multi, NULL, 0, (int)wait_ms, NULL);
    curl_multi_perform(a->multi, &running);
#endif
}

/* Lets libcurl read what has come for one transfer (I/O thread). */
static void drive_one(pl_aio *a, CURL *e)
{
    int running = 0;
#ifdef AIO_EPOLL
    curl_socket_t s = CURL_SOCKET_BAD;
    if (curl_easy_getinfo(e, CURLINFO_ACTIVESOCKET, &s) == CURLE_OK && s != CURL_SOCKET_BAD)
        curl_multi_socket_action(a->multi, s, CURL_CSELECT_IN, &running);
#else
    (void)e;
    curl_multi_perform(a->multi, &running);
#endif
}

/* ---- the fd ---------------------------------------------------------------- */

static int fd_open(pl_aio *a)
{
#ifdef __linux__
    int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (fd < 0) return pl_error_set(PL_EINTERNAL, 0, 0, "eventfd failed: %s", strerror(errno));
    a->rfd = a->wfd = fd;
#else
    int p[2];
    if (pipe(p) != 0) return pl_error_set(PL_EINTERNAL, 0, 0, "pipe failed: %s", strerror(errno));
    for (int i = 0; i < 2; i++) {
        fcntl(p[i], F_SETFL, fcntl(p[i], F_GETFL) | O_NONBLOCK);
        fcntl(p[i], F_SETFD, FD_CLOEXEC);
    }
    a->rfd = p[0];
    a->wfd = p[1];
#endif
    return PL_OK;
}

static void fd_signal(pl_aio *a)
{
#ifdef __linux__
    uint64_t one = 1;
    ssize_t n = write(a->wfd, &one, sizeof one);
#else
    char one = 1;
    ssize_t n = write(a->wfd, &one, 1);
#endif
    (void)n; /* a full counter/pipe is readable already */
}

static void fd_clear(pl_aio *a)
{
#ifdef __linux__
    uint64_t v; /* one read takes an eventfd's whole count: no second read to find it empty */
    ssize_t n = read(a->rfd, &v, sizeof v);
    (void)n;
#else
    char buf[64];
    while (read(a->rfd, buf, sizeof buf) > 0) {}
#endif
}

/* ---- pending list and completions (under mu) ------------------------------ */

static void ops_link(pl_aio *a, pl_aio_done *op)
{
    op->prev = NULL;
    op->next = a->ops;
    if (a->ops) a->ops->prev = op;
    a->ops = op;
    a->st.pending++;
    if (a->st.pending > a->st.max_pending) a->st.max_pending = a->st.pending;
    if (op->detached) {
        op->background = 1;
        a->st.background++;
    }
}

/* Marks a pending op cancelled (how: AIO_CANCEL or AIO_CLOSE), once: nobody
 * waits for it any more, so it counts as background work until it ends. */
static void mark_cancel(pl_aio *a, pl_aio_done *op, int how)
{
    if (op->cancel) return;
    op->cancel = how;
    if (!op->background) {
        op->background = 1;
        a->st.background++;
    }
}

static void ops_unlink(pl_aio *a, pl_aio_done *op)
{
    if (op->prev)
        op->prev->next = op->next;
    else
        a->ops = op->next;
    if (op->next) op->next->prev = op->prev;
    op->prev = op->next = NULL;
    a->st.pending--;
    if (op->background) {
        op->background = 0;
        a->st.background--;
    }
}

static void op_free(pl_aio_done *op)
{
    if (!op) return;
    pl_request_free(op->req);
    pl_message_free(op->m);
    pl_message_free(op->msg);
    free(op);
}

static void set_text(pl_aio_done *op, int code)
{
    const pl_error *e = pl_error_last();
    if (code < 0 && e->code == code) {
        op->http_status = e->http_status;
        op->retryable = e->retryable;
        snprintf(op->text, sizeof op->text, "%s", e->message);
    } else {
        op->text[0] = '\0';
        if (code < 0) snprintf(op->text, sizeof op->text, "%s", pl_strerror(code));
    }
}

/* Queues op as a completion; the fd becomes readable if it was not. */
static void done_push(pl_aio *a, pl_aio_done *op)
{
    op->state = AIO_ST_DONE;
    op->next = NULL;
    if (a->done_tail)
        a->done_tail->next = op;
    else {
        a->done_head = op;
        fd_signal(a);
    }
    a->done_tail = op;
}

/* An idle waiter's completion: PL_OK (no background work left), PL_ETIMEOUT or
 * PL_ECANCELED. Not an operation: not counted in submitted/completed. */
static void idle_done(pl_aio *a, pl_aio_done *w, int code)
{
    w->code = code;
    w->http_status = w->retryable = 0;
    if (code == PL_ETIMEOUT)
        snprintf(w->text, sizeof w->text, "background work still under way at the time limit");
    else if (code == PL_ECANCELED)
        snprintf(w->text, sizeof w->text, "cancelled");
    else
        w->text[0] = '\0';
    done_push(a, w);
}

/* The background count is 0: every idle waiter's completion is queued. */
static void idle_fire(pl_aio *a)
{
    while (a->idle) {
        pl_aio_done *w = a->idle;
        a->idle = w->next;
        idle_done(a, w, PL_OK);
    }
}

/* The op is finished with code (and msg, a received message, or NULL). */
static void complete_op(pl_aio *a, pl_aio_done *op, int code, pl_message *msg)
{
    ops_unlink(a, op);
    pl_request_free(op->req);
    op->req = NULL;
    if (op->detached) {
        pl_message_free(msg);
        op_free(op);
    } else {
        pl_message_free(op->m);
        op->m = NULL;
        op->code = code;
        op->msg = msg;
        if (code == PL_ECANCELED) a->st.cancelled++;
        a->st.completed++;
        done_push(a, op);
    }
    /* after the op's own completion: an idle waiter's follows it */
    if (!a->st.background && a->idle) idle_fire(a);
}

/* Finishes an op that never (or no longer) runs, with the cancel's code. */
static void complete_cancelled(pl_aio *a, pl_aio_done *op)
{
    int code = op->cancel == AIO_CLOSE ? PL_ECLOSED : PL_ECANCELED;
    /* a send or settle an earlier attempt of which may have been carried out */
    if (op->call.uncertain && op->kind != PL_OP_PEEKLOCK) code = PL_EUNKNOWN;
    if (code == PL_EUNKNOWN)
        pl_error_set(code, 0, 0, "cancelled after an attempt whose outcome is unknown");
    else
        pl_error_set(code, 0, 0, "%s", code == PL_ECLOSED ? "the engine was closed" : "cancelled");
    op->http_status = op->retryable = 0;
    set_text(op, code);
    if (op->m && (op->kind == PL_OP_UNLOCK || op->kind == PL_OP_COMPLETE)) pl_fence_leave(op->m, code);
    if (op->call.orphaned) pl_client_stat_add(a->client, PL_STAT_ORPHANED, (uint64_t)op->call.orphaned);
    op->orphaned = (unsigned)op->call.orphaned;
    complete_op(a, op, code, NULL);
}

/* A new op for a request (the engine owns req from here). */
static pl_aio_done *op_new(pl_aio *a, int kind, pl_request *req, pl_message *m)
{
    pl_aio_done *op = calloc(1, sizeof *op);
    if (!op) return NULL;
    op->kind = kind;
    op->req = req;
    op->m = m;
    if (m) pl_message_ref(m);
    a->rng = a->rng * 6364136223846793005ULL + 1442695040888963407ULL;
    pl_call_init(&op->call, kind, req->entity, a->rng ^ (uint64_t)(uintptr_t)op);
    op->call.resend_ok = req->resend_ok;
    return op;
}

/* Hands a built request to the thread. Takes req (freed on failure). */
static int submit(pl_aio *a, uint64_t *id, int kind, pl_request *req, pl_message *m, int detached)
{
    pthread_mutex_lock(&a->mu);
    if (a->closing) {
        pthread_mutex_unlock(&a->mu);
        pl_request_free(req);
        return pl_error_set(PL_ECLOSED, 0, 0, "the async engine is closed");
    }
    pl_aio_done *op = op_new(a, kind, req, m);
    if (!op) {
        pthread_mutex_unlock(&a->mu);
        pl_request_free(req);
        return pl_error_nomem();
    }
    op->detached = detached;
    op->id = ++a->next_id;
    if (id) *id = op->id;
    ops_link(a, op);
    a->st.submitted++;
    /* one wake-up for all that is submitted before the thread looks at the list again */
    int wake = !a->wake_pending;
    a->wake_pending = 1;
    pthread_mutex_unlock(&a->mu);
    if (wake) aio_wake(a);
    pl_error_ok();
    return PL_OK;
}

/* ---- transfers (thread only, under mu) ------------------------------------ */

/* A handle set up by the client once (static options, callbacks), then reused:
 * each request sets only what differs from the handle's last one. */
static pl_easy *easy_get(pl_aio *a)
{
    if (a->neasy > 0) return a->easy_free[--a->neasy];
    pl_easy *s = pl_client_easy_new(a->client);
#ifdef AIO_EPOLL
    if (s) { /* kept by the connections this handle opens */
        curl_easy_setopt(pl_easy_curl(s), CURLOPT_CLOSESOCKETFUNCTION, on_close_socket);
        curl_easy_setopt(pl_easy_curl(s), CURLOPT_CLOSESOCKETDATA, a);
    }
#endif
    return s;
}

static void easy_put(pl_aio *a, pl_easy *s, int keep)
{
    pl_easy_done(s);
    if (keep && a->neasy < AIO_EASY_KEEP)
        a->easy_free[a->neasy++] = s;
    else
        pl_client_easy_free(s);
}

static void transfer_release(pl_aio *a, pl_aio_done *op, int keep)
{
    if (op->slot) {
        if (op->easy) curl_multi_remove_handle(a->multi, op->easy);
        easy_put(a, op->slot, keep);
        op->slot = NULL;
        op->easy = NULL;
    }
    pl_response_free(op->resp);
    op->resp = NULL;
    if (op->state == AIO_ST_INFLIGHT) a->st.inflight--;
}

/* What an attempt's end says to outcome.c; the op completes or waits to retry. */
static void report(pl_aio *a, pl_aio_done *op, int io, int status, int rc, long retry_after, pl_message *got)
{
    int kind = op->kind;
    int settle = kind == PL_OP_RENEW || kind == PL_OP_UNLOCK || kind == PL_OP_COMPLETE;
    int64_t left = settle && op->m ? pl_message_lock_remaining_ms(op->m) : 0;
    int next = pl_call_report(&op->call, pl_client_policy(a->client), io, status, rc, retry_after, left);
    pl_client_call_reported(a->client, &op->call, next, status, 0); /* counted; no hook under mu */
    if (next == PL_NEXT_RETRY && !op->cancel) {
        pl_message_free(got);
        pl_client_stat_add(a->client, PL_STAT_RETRIES, 1);
        op->state = AIO_ST_WAIT;
        op->due_ms = pl_now_mono_ms() + op->call.delay_ms;
        return;
    }
    if (next == PL_NEXT_RETRY) { /* cancelled while a retry was being decided */
        pl_message_free(got);
        complete_cancelled(a, op);
        return;
    }
    int code = op->call.code;
    op->http_status = op->retryable = 0;
    set_text(op, code);
    pl_client_count_result(a->client, op->req, code == PL_EUNKNOWN && op->m ? PL_ELOCKLOST : code);
    if (kind == PL_OP_UNLOCK || kind == PL_OP_COMPLETE) pl_fence_leave(op->m, code);
    if (op->cancel && kind == PL_OP_PEEKLOCK) {
        /* the lock came back to a receive nobody waits for: release it now */
        if (got) {
            pl_request *req = NULL;
            a->st.cancel_abandoned++;
            if (pl_fence_enter(got, PL_OP_UNLOCK) == PL_OK) {
                if (pl_client_settle_request(&req, a->client, got, PL_SETTLE_UNLOCK) == PL_OK) {
                    pl_aio_done *u = op_new(a, PL_OP_UNLOCK, req, got);
                    if (u) {
                        u->detached = 1;
                        u->id = ++a->next_id;
                        ops_link(a, u);
                        a->kick = 1;
                    } else {
                        pl_request_free(req);
                        pl_fence_leave(got, PL_ECANCELED);
                    }
                } else {
                    pl_fence_leave(got, PL_ECANCELED);
                }
            }
            pl_message_free(got);
            got = NULL;
        }
        complete_cancelled(a, op);
        return;
    }
    op->orphaned = (unsigned)op->call.orphaned;
    if (op->call.orphaned) pl_client_stat_add(a->client, PL_STAT_ORPHANED, (uint64_t)op->call.orphaned);
    complete_op(a, op, code, got);
}

static void start_attempt(pl_aio *a, pl_aio_done *op)
{
    pl_easy *s = easy_get(a);
    CURL *e = s ? pl_easy_curl(s) : NULL;
    int rc = s ? PL_OK : pl_error_nomem();
    if (rc == PL_OK)
        rc = pl_client_easy_prepare(a->client, s, op->req, (long)op->req->timeout_s * 1000, &op->resp);
    if (rc == PL_OK) {
        curl_easy_setopt(e, CURLOPT_PRIVATE, (void *)op);
        op->sent_ms = pl_now_mono_ms();
        if (curl_multi_add_handle(a->multi, e) != CURLM_OK)
            rc = pl_error_set(PL_EINTERNAL, 0, 0, "curl_multi_add_handle failed");
    }
    if (rc != PL_OK) {
        op->slot = s; /* not added: transfer_release only puts it back */
        op->easy = NULL;
        transfer_release(a, op, 1);
        /* nothing left: reported as an attempt that was never sent */
        report(a, op, PL_IO_NOT_SENT, 0, rc, -1, NULL);
        return;
    }
    op->slot = s;
    op->easy = e;
    op->state = AIO_ST_INFLIGHT;
    a->st.inflight++;
    if (a->st.inflight > (uint64_t)a->maxconns) {
        a->maxconns = (long)a->st.inflight;
        curl_multi_setopt(a->multi, CURLMOPT_MAXCONNECTS, a->maxconns);
    }
}

static void finish_attempt(pl_aio *a, pl_aio_done *op, CURLcode res)
{
    pl_client *c = a->client;
    pl_client_stat_add(c, PL_STAT_REQUESTS, 1);
    long connects = -1;
    curl_easy_getinfo(op->easy, CURLINFO_NUM_CONNECTS, &connects);
    if (connects == 0) pl_client_stat_add(c, PL_STAT_REUSED, 1);
    int io = pl_client_transfer_io(res, op->resp);
    int rc, status = 0;
    long retry_after = -1;
    pl_message *got = NULL;
    if (res != CURLE_OK || io == PL_IO_MALFORMED) {
        rc = pl_client_curl_error_easy(res, op->resp, op->easy, NULL);
        transfer_release(a, op, 0); /* may hold a broken connection: drop it */
    } else {
        long st = 0;
        curl_easy_getinfo(op->easy, CURLINFO_RESPONSE_CODE, &st);
        status = (int)st;
        op->resp->status = status;
        rc = pl_wire_result(&got, pl_client_endpoint(c), op->req, op->m, op->resp, op->sent_ms);
        if (got) pl_client_adopt(c, got);
        retry_after = pl_retry_after_ms(pl_response_header(op->resp, "Retry-After"));
        transfer_release(a, op, 1);
    }
    op->state = AIO_ST_NEW;
    report(a, op, io, status, rc, retry_after, got);
}

/* A receive whose answer has not begun to arrive can be stopped: the server
 * takes no message for a connection that has gone. */
static int answer_started(pl_aio_done *op)
{
    long hsize = 0;
    curl_easy_getinfo(op->easy, CURLINFO_HEADER_SIZE, &hsize);
    return hsize > 0 || (op->resp && pl_collector_of(op->resp)->nseen > 0);
}

static void handle_cancel(pl_aio *a, pl_aio_done *op)
{
    if (op->state != AIO_ST_INFLIGHT) {
        complete_cancelled(a, op);
        return;
    }
    /* a send or settle on the wire runs to its end (report() sees op->cancel) */
    if (op->kind != PL_OP_PEEKLOCK && op->kind != PL_OP_RECVDEL) return; /* runs to its end */
    /* take in whatever is already here before deciding */
    drive_one(a, op->easy);
    if (answer_started(op)) return; /* report() unlocks a peek-lock's message */
    transfer_release(a, op, 0);
    op->state = AIO_ST_NEW;
    complete_cancelled(a, op);
}

static void *aio_main(void *arg)
{
    pl_aio *a = arg;
    pthread_mutex_lock(&a->mu);
    for (;;) {
        int64_t now = pl_now_mono_ms();
        long wait = AIO_IDLE_WAIT_MS;
        pl_aio_done *next;
        a->kick = 0;
        a->wake_pending = 0; /* a submit from here on wakes the thread again */
        for (pl_aio_done *op = a->ops; op; op = next) {
            next = op->next; /* handle_cancel and start_attempt unlink op only */
            if (op->cancel && !op->cancel_seen) {
                op->cancel_seen = 1;
                handle_cancel(a, op);
            } else if (op->state == AIO_ST_NEW || (op->state == AIO_ST_WAIT && op->due_ms <= now)) {
                start_attempt(a, op);
            } else if (op->state == AIO_ST_WAIT && op->due_ms - now < wait) {
                wait = (long)(op->due_ms - now);
            }
        }
        for (pl_aio_done **p = &a->idle; *p;) { /* idle waiters' time limits */
            pl_aio_done *w = *p;
            if (w->due_ms >= 0 && w->due_ms <= now) {
                *p = w->next;
                idle_done(a, w, PL_ETIMEOUT);
                continue;
            }
            if (w->due_ms >= 0 && w->due_ms - now < wait) wait = (long)(w->due_ms - now);
            p = &w->next;
        }
        if (a->kick) wait = 0; /* an op was added at the head meanwhile */
        if (a->closing && !a->ops) break;
        pthread_mutex_unlock(&a->mu);
        drive(a, wait);
        pthread_mutex_lock(&a->mu);
        CURLMsg *msg;
        int left = 0;
        while ((msg = curl_multi_info_read(a->multi, &left))) {
            if (msg->msg != CURLMSG_DONE) continue;
            pl_aio_done *op = NULL;
            curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&op);
            if (op && op->easy == msg->easy_handle) finish_attempt(a, op, msg->data.result);
        }
    }
    pthread_mutex_unlock(&a->mu);
    return NULL;
}

/* ---- public API --------------------------------------------------------------- */

static void aio_destroy(pl_aio *a)
{
    while (a->idle) { /* none once the thread ended (no background work is left) */
        pl_aio_done *w = a->idle;
        a->idle = w->next;
        op_free(w);
    }
    while (a->done_head) {
        pl_aio_done *d = a->done_head;
        a->done_head = d->next;
        op_free(d);
    }
    for (int i = 0; i < a->neasy; i++) pl_client_easy_free(a->easy_free[i]);
    if (a->multi) curl_multi_cleanup(a->multi);
#ifdef AIO_EPOLL
    if (a->epfd >= 0) close(a->epfd);
    if (a->wakefd >= 0) close(a->wakefd);
    free(a->fds);
#endif
    if (a->rfd >= 0) close(a->rfd);
    if (a->wfd >= 0 && a->wfd != a->rfd) close(a->wfd);
    pthread_mutex_destroy(&a->mu);
    if (a->client) pl_client_unref(a->client);
    free(a);
}

int pl_aio_new(pl_aio **out, pl_client *client)
{
    if (!out) return pl_error_inval("out", "must not be NULL");
    *out = NULL;
    if (!client) return pl_error_inval("client", "must not be NULL");
    if (pl_client_closed(client)) return pl_error_set(PL_ECLOSED, 0, 0, "the client is closed");
    pl_aio *a = calloc(1, sizeof *a);
    if (!a) return pl_error_nomem();
    a->rfd = a->wfd = -1;
#ifdef AIO_EPOLL
    a->epfd = a->wakefd = -1;
    a->curl_timer_at = -1;
#endif
    pthread_mutex_init(&a->mu, NULL);
    pl_client_ref(client);
    a->client = client;
    a->rng = (uint64_t)(uintptr_t)a ^ (uint64_t)pl_now_mono_ms();
    a->st.op_bytes = sizeof(pl_aio_done);
    int rc = fd_open(a);
    if (rc == PL_OK && !(a->multi = curl_multi_init())) rc = pl_error_nomem();
    if (rc == PL_OK) {
        a->maxconns = AIO_MIN_CONNS;
        curl_multi_setopt(a->multi, CURLMOPT_MAXCONNECTS, a->maxconns);
    }
#ifdef AIO_EPOLL
    if (rc == PL_OK) {
        a->epfd = epoll_create1(EPOLL_CLOEXEC);
        a->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        struct epoll_event ev;
        memset(&ev, 0, sizeof ev);
        ev.events = EPOLLIN;
        ev.data.fd = a->wakefd;
        if (a->epfd < 0 || a->wakefd < 0 || epoll_ctl(a->epfd, EPOLL_CTL_ADD, a->wakefd, &ev) != 0)
            rc = pl_error_set(PL_EINTERNAL, 0, 0, "epoll/eventfd failed: %s", strerror(errno));
    }
    if (rc == PL_OK) {
        curl_multi_setopt(a->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
        curl_multi_setopt(a->multi, CURLMOPT_SOCKETDATA, a);
        curl_multi_setopt(a->multi, CURLMOPT_TIMERFUNCTION, on_timer);
        curl_multi_setopt(a->multi, CURLMOPT_TIMERDATA, a);
    }
#endif
    if (rc == PL_OK && pthread_create(&a->thread, NULL, aio_main, a) != 0)
        rc = pl_error_set(PL_EINTERNAL, 0, 0, "could not start the async engine's thread");
    if (rc != PL_OK) {
        a->joined = 1;
        aio_destroy(a);
        return rc;
    }
    *out = a;
    pl_error_ok();
    return PL_OK;
}

int pl_aio_fd(const pl_aio *a)
{
    return a ? a->rfd : -1;
}

static int check_aio(pl_aio *a, uint64_t *id)
{
    if (id) *id = 0;
    if (!a) return pl_error_inval("a", "must not be NULL");
    if (!id) return pl_error_inval("id", "must not be NULL");
    return PL_OK;
}

int pl_aio_send(pl_aio *a, uint64_t *id, const char *entity, const pl_outgoing *m)
{
    int rc = check_aio(a, id);
    pl_request *req = NULL;
    if (rc == PL_OK && (rc = pl_request_send(&req, a->client, entity, m)) == PL_OK)
        rc = submit(a, id, PL_OP_SEND, req, NULL, 0);
    return rc;
}

int pl_aio_send_batch(pl_aio *a, uint64_t *id, const char *entity, const pl_batch *b)
{
    int rc = check_aio(a, id);
    pl_request *req = NULL;
    if (rc == PL_OK && (rc = pl_request_send_batch(&req, a->client, entity, b)) == PL_OK)
        rc = submit(a, id, PL_OP_BATCH, req, NULL, 0);
    return rc;
}

static int aio_receive(pl_aio *a, uint64_t *id, const char *entity, int timeout_s, int peek)
{
    int rc = check_aio(a, id);
    pl_request *req = NULL;
    if (rc == PL_OK && (rc = pl_request_receive(&req, a->client, entity, timeout_s, peek)) == PL_OK)
        rc = submit(a, id, peek ? PL_OP_PEEKLOCK : PL_OP_RECVDEL, req, NULL, 0);
    return rc;
}

int pl_aio_peek_lock(pl_aio *a, uint64_t *id, const char *entity, int timeout_s)
{
    return aio_receive(a, id, entity, timeout_s, 1);
}

int pl_aio_receive_and_delete(pl_aio *a, uint64_t *id, const char *entity, int timeout_s)
{
    return aio_receive(a, id, entity, timeout_s, 0);
}

static int aio_settle(pl_aio *a, uint64_t *id, pl_message *m, int settle, int detached)
{
    int op = settle == PL_SETTLE_RENEW    ? PL_OP_RENEW
             : settle == PL_SETTLE_UNLOCK ? PL_OP_UNLOCK
                                          : PL_OP_COMPLETE;
    int rc = detached ? (a ? PL_OK : pl_error_inval("a", "must not be NULL")) : check_aio(a, id);
    if (rc) return rc;
    if (!m) return pl_error_inval("m", "must not be NULL");
    if (pl_message_client(m) != a->client)
        return pl_error_inval("message", "was received through another client");
    if (!m->location)
        return pl_error_set(PL_ESTATE, 0, 0,
                            "message was received with receive-and-delete: there is no lock");
    if ((rc = pl_fence_enter(m, op)) != PL_OK) return rc;
    pl_request *req = NULL;
    if ((rc = pl_client_settle_request(&req, a->client, m, settle)) == PL_OK)
        rc = submit(a, id, op, req, m, detached);
    if (rc != PL_OK && op != PL_OP_RENEW) pl_fence_leave(m, PL_ECANCELED);
    if (rc == PL_OK && detached) {
        pthread_mutex_lock(&a->mu);
        a->st.cancel_abandoned++;
        pthread_mutex_unlock(&a->mu);
    }
    return rc;
}

int pl_aio_renew_lock(pl_aio *a, uint64_t *id, pl_message *m)
{
    return aio_settle(a, id, m, PL_SETTLE_RENEW, 0);
}
int pl_aio_unlock(pl_aio *a, uint64_t *id, pl_message *m)
{
    return aio_settle(a, id, m, PL_SETTLE_UNLOCK, 0);
}
int pl_aio_complete(pl_aio *a, uint64_t *id, pl_message *m)
{
    return aio_settle(a, id, m, PL_SETTLE_COMPLETE, 0);
}
int pl_aio_unlock_detached(pl_aio *a, pl_message *m)
{
    return aio_settle(a, NULL, m, PL_SETTLE_UNLOCK, 1);
}

int pl_aio_finish(pl_aio *a, uint64_t *id, pl_message *m, pl_renewer *r, int handler_ok)
{
    int rc = check_aio(a, id);
    if (rc) return rc;
    if (!m) return pl_error_inval("m", "must not be NULL");
    if (pl_message_state(m) == PL_LOCK_NONE)
        return pl_error_set(PL_ESTATE, 0, 0,
                            "message was received with receive_and_delete: nothing to settle");
    if (r) pl_renewer_remove(r, m);
    int action = pl_finish_action(m, handler_ok);
    if (!action) {
        pl_error_ok();
        return PL_OK;
    }
    rc = aio_settle(a, id, m, action, 0);
    if (rc == PL_ESTATE) { /* the handler's settle (another thread) won the fence meanwhile */
        *id = 0;
        pl_error_ok();
        rc = PL_OK;
    }
    return rc;
}

int pl_aio_idle(pl_aio *a, uint64_t *id, int timeout_ms)
{
    int rc = check_aio(a, id);
    if (rc) return rc;
    if (timeout_ms < -1) return pl_error_inval("timeout_ms", "must be -1 (no limit) or >= 0");
    pl_aio_done *w = calloc(1, sizeof *w);
    if (!w) return pl_error_nomem();
    w->kind = PL_AIO_IDLE;
    pthread_mutex_lock(&a->mu);
    if (a->closing) {
        pthread_mutex_unlock(&a->mu);
        free(w);
        return pl_error_set(PL_ECLOSED, 0, 0, "the async engine is closed");
    }
    w->id = *id = ++a->next_id;
    int wake = 0;
    if (!a->st.background) {
        idle_done(a, w, PL_OK);
    } else {
        w->due_ms = timeout_ms < 0 ? -1 : pl_now_mono_ms() + timeout_ms;
        w->next = a->idle;
        a->idle = w;
        wake = timeout_ms >= 0; /* the thread's wait takes in the new limit */
    }
    pthread_mutex_unlock(&a->mu);
    if (wake) aio_wake(a);
    pl_error_ok();
    return PL_OK;
}

int pl_aio_cancel(pl_aio *a, uint64_t id)
{
    if (!a) return pl_error_inval("a", "must not be NULL");
    pthread_mutex_lock(&a->mu);
    for (pl_aio_done **p = &a->idle; *p; p = &(*p)->next) {
        if ((*p)->id != id) continue;
        pl_aio_done *w = *p;
        *p = w->next;
        idle_done(a, w, PL_ECANCELED);
        pthread_mutex_unlock(&a->mu);
        pl_error_ok();
        return PL_OK;
    }
    for (pl_aio_done *op = a->ops; op; op = op->next) {
        if (op->id != id || op->detached) continue;
        if (op->state == AIO_ST_INFLIGHT && op->kind != PL_OP_PEEKLOCK && op->kind != PL_OP_RECVDEL) {
            pthread_mutex_unlock(&a->mu);
            return pl_error_set(PL_ESTATE, 0, 0,
                                "the operation is on the wire: its completion will say what happened");
        }
        mark_cancel(a, op, AIO_CANCEL);
        pthread_mutex_unlock(&a->mu);
        aio_wake(a);
        pl_error_ok();
        return PL_OK;
    }
    /* A completion not yet taken: a peek-lock's message is withdrawn (the lock
     * released at once) and the completion, still the one that follows, says
     * PL_ECANCELED instead. */
    for (pl_aio_done *d = a->done_head; d; d = d->next) {
        if (d->id != id) continue;
        if (d->kind != PL_OP_PEEKLOCK || !d->msg) { /* no lock to release: its outcome stands */
            pthread_mutex_unlock(&a->mu);
            return pl_error_set(PL_ESTATE, 0, 0, "the operation has ended: its completion is queued");
        }
        pl_message *got = d->msg;
        d->msg = NULL;
        d->code = PL_ECANCELED;
        d->http_status = d->retryable = 0;
        snprintf(d->text, sizeof d->text, "cancelled");
        a->st.cancelled++;
        pthread_mutex_unlock(&a->mu);
        if (got) {
            if (pl_aio_unlock_detached(a, got) != PL_OK) { /* closed: the lock expires on its own */
            }
            pl_message_free(got);
        }
        pl_error_ok();
        return PL_OK;
    }
    pthread_mutex_unlock(&a->mu);
    return pl_error_set(PL_EINVAL, 0, 0, "no pending operation has that id");
}

int pl_aio_next(pl_aio_done **out, pl_aio *a)
{
    if (!out) return pl_error_inval("out", "must not be NULL");
    *out = NULL;
    if (!a) return pl_error_inval("a", "must not be NULL");
    pthread_mutex_lock(&a->mu);
    pl_aio_done *d = a->done_head;
    if (d) {
        a->done_head = d->next;
        if (!a->done_head) {
            a->done_tail = NULL;
            fd_clear(a);
        }
        d->next = NULL;
    }
    pthread_mutex_unlock(&a->mu);
    *out = d;
    return d ? PL_OK : PL_EMPTY;
}

uint64_t pl_aio_done_id(const pl_aio_done *d)
{
    return d ? d->id : 0;
}
int pl_aio_done_kind(const pl_aio_done *d)
{
    return d ? d->kind : 0;
}
int pl_aio_done_code(const pl_aio_done *d)
{
    return d ? d->code : PL_EINVAL;
}
int pl_aio_done_http_status(const pl_aio_done *d)
{
    return d ? d->http_status : 0;
}
int pl_aio_done_retryable(const pl_aio_done *d)
{
    return d ? d->retryable : 0;
}
const char *pl_aio_done_message(const pl_aio_done *d)
{
    return d ? d->text : "";
}
unsigned pl_aio_done_orphaned(const pl_aio_done *d)
{
    return d ? d->orphaned : 0;
}
int pl_aio_done_attempts(const pl_aio_done *d)
{
    return d ? d->call.attempts : 0;
}

pl_message *pl_aio_done_take_message(pl_aio_done *d)
{
    if (!d) return NULL;
    pl_message *m = d->msg;
    d->msg = NULL;
    return m;
}

void pl_aio_done_free(pl_aio_done *d)
{
    op_free(d);
}

int pl_aio_close(pl_aio *a)
{
    if (!a) return pl_error_inval("a", "must not be NULL");
    pthread_mutex_lock(&a->mu);
    a->closing = 1;
    for (pl_aio_done *op = a->ops; op; op = op->next)
        if (!op->detached) mark_cancel(a, op, AIO_CLOSE);
    pthread_mutex_unlock(&a->mu);
    aio_wake(a);
    pl_error_ok();
    return PL_OK;
}

void pl_aio_free(pl_aio *a)
{
    if (!a) return;
    pl_aio_close(a);
    if (!a->joined) {
        pthread_join(a->thread, NULL);
        a->joined = 1;
    }
    aio_destroy(a);
}

int pl_aio_stats_get(pl_aio *a, pl_aio_stats *out)
{
    if (!a) return pl_error_inval("a", "must not be NULL");
    if (!out) return pl_error_inval("out", "must not be NULL");
    pthread_mutex_lock(&a->mu);
    *out = a->st;
    pthread_mutex_unlock(&a->mu);
    pl_error_ok();
    return PL_OK;
}
